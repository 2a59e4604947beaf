"""Writes TensorFlow checkpoints for the converter tests (needs tensorflow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_tf_checkpoint(arrays: dict[str, np.ndarray], prefix: Path) -> None:
    """``prefix.index`` / ``.data-*`` holding one variable per entry of ``arrays``, named by its key."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in arrays.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.variables_initializer(variables))
            saver.save(session, str(prefix))
