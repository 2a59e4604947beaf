"""TensorFlow checkpoint reading (lazy: tensorflow is an optional extra, ``pip install 'jaxformers[tf]'``).

The names are mapped to PyTorch keys by the rule tables in :mod:`jaxformers.conversion.tables`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .conversion.rules import is_optimizer_slot


def find_tf_checkpoint(directory: str | os.PathLike) -> str:
    """The checkpoint prefix (``.../bert_model.ckpt``) of the single ``*.ckpt*.index`` file in `directory`."""
    directory = Path(directory)
    if directory.is_file() or Path(str(directory) + ".index").is_file():
        return str(directory)
    indexes = sorted(directory.glob("*.index"))
    if not indexes:
        raise FileNotFoundError(f"no TensorFlow checkpoint (*.ckpt.index) in {str(directory)!r}")
    if len(indexes) > 1:
        raise ValueError(f"several TensorFlow checkpoints in {str(directory)!r}: {[p.name for p in indexes]}")
    return str(indexes[0])[: -len(".index")]


def read_tf_checkpoint(checkpoint_prefix: str | os.PathLike) -> dict[str, np.ndarray]:
    """All model variables of a TF checkpoint as numpy arrays; optimizer slots (conversion.rules.OPTIMIZER_SLOTS)
    are left out unread, as they can hold twice the weights' size."""
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError(
            "reading TensorFlow checkpoints needs tensorflow: pip install 'jaxformers[tf]'"
        ) from error
    prefix = str(checkpoint_prefix)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as error:
        raise OSError(f"cannot read TensorFlow checkpoint {prefix!r}: {error}") from error
    return {
        name: np.asarray(reader.get_tensor(name))
        for name in sorted(reader.get_variable_to_shape_map())
        if not is_optimizer_slot(name)
    }
