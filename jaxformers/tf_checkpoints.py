"""TensorFlow checkpoint reading (lazy: tensorflow is an optional extra, ``pip install 'jaxformers[tf]'``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

# Optimizer slots and counters saved beside the weights in training checkpoints.
OPTIMIZER_VARIABLE = re.compile(r"(^|/)(adam_m|adam_v|global_step|beta1_power|beta2_power)($|/)")


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
    """All model variables of a TF checkpoint as numpy arrays, optimizer slots left out."""
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
        if not OPTIMIZER_VARIABLE.search(name)
    }


def tf_name_to_torch_key(name: str) -> tuple[str, bool]:
    """Google's BERT/GPT-style variable name -> (PyTorch key, whether the array must be transposed).

    ``bert/encoder/layer_0/attention/self/query/kernel`` -> ``bert.encoder.layer.0.attention.self.query.weight``
    (transposed: TF kernels are ``[in, out]``, nn.Linear is ``[out, in]``).
    """
    parts: list[str] = []
    transpose = False
    for part in name.split("/"):
        numbered = re.fullmatch(r"([A-Za-z]+)_(\d+)", part)
        if part == "kernel":
            parts.append("weight")
            transpose = True
        elif part in ("gamma", "output_weights"):
            parts.append("weight")
        elif part in ("beta", "output_bias"):
            parts.append("bias")
        elif numbered and numbered.group(1) == "layer":
            parts.extend([numbered.group(1), numbered.group(2)])
        elif part.endswith("_embeddings"):
            parts.extend([part, "weight"])
        else:
            parts.append(part)
    return ".".join(parts), transpose
