"""Readers of foreign checkpoint files into ``{checkpoint name: numpy array}``, ready for a rule table.

TensorFlow checkpoints are read by :mod:`jaxformers.tf_checkpoints`; OpenAI's original GPT release here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

# Per-layer arrays of OpenAI's checkpoint, in file order (each conv weight is [1, in, out]).
OPENAI_LAYER_PARAMS = (
    "attn/c_attn/w", "attn/c_attn/b", "attn/c_proj/w", "attn/c_proj/b", "ln_1/g", "ln_1/b",
    "mlp/c_fc/w", "mlp/c_fc/b", "mlp/c_proj/w", "mlp/c_proj/b", "ln_2/g", "ln_2/b",
)
OPENAI_NUM_SHARDS = 10


def read_openai_checkpoint(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """OpenAI's released GPT checkpoint -> ``{name: array}`` (names of ``tables.OPENAI_NUMPY``).

    The directory holds ``params_shapes.json`` (the shape of every array, in order) and the arrays concatenated
    flat and split across ``params_0.npy`` .. ``params_9.npy``. The order is: position embeddings, token
    embeddings (named ``model/we/positions``, ``model/we/tokens``: the release's one ``model/we:0``), then 12
    arrays per layer (``OPENAI_LAYER_PARAMS``, named ``model/h<layer>/<param>:0``); the optional
    ``parameters_names.json`` spells the per-layer names out and is checked when present.
    """
    directory = Path(directory)
    shapes_path = directory / "params_shapes.json"
    if not shapes_path.is_file():
        raise FileNotFoundError(f"no params_shapes.json in {str(directory)!r}: not an OpenAI GPT checkpoint")
    shapes = [tuple(shape) for shape in json.loads(shapes_path.read_text(encoding="utf-8"))]
    flat = np.concatenate([_read_shard(directory / f"params_{index}.npy") for index in range(OPENAI_NUM_SHARDS)])
    sizes = [int(np.prod(shape)) for shape in shapes]
    if sum(sizes) != flat.size:
        raise ValueError(
            f"{str(shapes_path)!r} describes {sum(sizes)} values but the params_*.npy shards hold {flat.size}"
        )
    if len(shapes) < 2 or (len(shapes) - 2) % len(OPENAI_LAYER_PARAMS):
        raise ValueError(
            f"{str(shapes_path)!r} lists {len(shapes)} arrays; expected 2 embeddings + "
            f"{len(OPENAI_LAYER_PARAMS)} per layer"
        )
    arrays = [array.reshape(shape) for array, shape in zip(np.split(flat, np.cumsum(sizes)[:-1]), shapes)]
    num_layers = (len(shapes) - 2) // len(OPENAI_LAYER_PARAMS)
    names = [f"model/h{layer}/{param}:0" for layer in range(num_layers) for param in OPENAI_LAYER_PARAMS]
    names_path = directory / "parameters_names.json"
    if names_path.is_file():
        listed = json.loads(names_path.read_text(encoding="utf-8"))[1:]  # first entry: the embeddings
        if listed != names:
            raise ValueError(f"{str(names_path)!r} does not list the expected per-layer arrays in order")
    return {"model/we/positions": arrays[0], "model/we/tokens": arrays[1], **dict(zip(names, arrays[2:]))}


def _read_shard(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"OpenAI GPT checkpoint shard {str(path)!r} is missing")
    return np.load(path, allow_pickle=False).reshape(-1)
