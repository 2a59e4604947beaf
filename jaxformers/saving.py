"""What ``save_pretrained`` writes: the files of a model save, a config that transformers understands, and the
Hugging Face layout of ``model.safetensors`` (sharded with an index when asked).

The files are switched into the directory all at once by :mod:`jaxformers.atomic_save`.

* ``config.json``: the 0.6.x fields plus ``model_type``, ``architectures``, ``num_labels``/``id2label``/
  ``label2id`` and ``dtype``/``torch_dtype``, so ``transformers.AutoModel*`` builds the right class.
* ``flax_model.msgpack``: our own layout, always written, with every parameter (the unused pooler included).
* ``model.safetensors`` (``safetensors=True``) or ``model-0000k-of-0000n.safetensors`` +
  ``model.safetensors.index.json`` (``max_shard_size=``): the layout transformers saves, i.e. the PyTorch keys
  with tied weights stored once (the tied copy is dropped, as transformers does), buffers dropped, and the
  parameters a transformers class does not have (the pooler of BERT's MLM/token/QA heads) left out.
* ``pytorch_model.bin`` (``pytorch=True``): the 0.6.x state dict, tied copies included, for
  pytorch-pretrained-bert (transformers prefers the safetensors file when both are present).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from . import atomic_save
from .atomic_save import Writer
from .checkpoint_files import (  # noqa: F401  (SAFETENSORS_* re-exported: tests and users import them from here)
    CONFIG_NAME,
    FLAX_WEIGHTS_NAME,
    SAFETENSORS_INDEX_NAME,
    SAFETENSORS_NAME,
    TORCH_WEIGHTS_NAME,
    jaxformers_msgpack_tree,
)

if TYPE_CHECKING:
    from .modeling_utils import PreTrainedModel

logger = logging.getLogger("jaxformers")

# Weight files of any earlier save in the directory: a new save deletes those it does not rewrite, so no loader
# (ours or transformers) can pick up stale weights next to the new config.
_WEIGHT_FILE = re.compile(
    r"^(flax_model\.msgpack|model\.safetensors(\.index\.json)?|pytorch_model\.bin(\.index\.json)?"
    r"|model-\d{5}-of-\d{5}\.safetensors|pytorch_model-\d{5}-of-\d{5}\.bin)$"
)


@dataclasses.dataclass(frozen=True)
class HFArchitecture:
    """How a jaxformers class appears to transformers: its architecture name and key renames (regex,
    replacement) for the export. Parameters transformers' class lacks are the model's ``unused_torch_keys``."""

    name: str
    renames: tuple[tuple[str, str], ...] = ()


_SUMMARY = ((r"^multiple_choice_head\.linear\.", "multiple_choice_head.summary."),)
# The one table: jaxformers class name -> transformers architecture.
HF_ARCHITECTURES: dict[str, HFArchitecture] = {
    "BertModel": HFArchitecture("BertModel"),
    "BertForPreTraining": HFArchitecture("BertForPreTraining"),
    "BertForMaskedLM": HFArchitecture("BertForMaskedLM"),
    "BertForNextSentencePrediction": HFArchitecture("BertForNextSentencePrediction"),
    "BertForSequenceClassification": HFArchitecture("BertForSequenceClassification"),
    "BertForMultipleChoice": HFArchitecture("BertForMultipleChoice"),
    "BertForTokenClassification": HFArchitecture("BertForTokenClassification"),
    "BertForQuestionAnswering": HFArchitecture("BertForQuestionAnswering"),
    "GPT2Model": HFArchitecture("GPT2Model"),
    "GPT2LMHeadModel": HFArchitecture("GPT2LMHeadModel"),
    "GPT2DoubleHeadsModel": HFArchitecture("GPT2DoubleHeadsModel", renames=_SUMMARY),
    "OpenAIGPTModel": HFArchitecture("OpenAIGPTModel"),
    "OpenAIGPTLMHeadModel": HFArchitecture("OpenAIGPTLMHeadModel"),
    "OpenAIGPTDoubleHeadsModel": HFArchitecture("OpenAIGPTDoubleHeadsModel", renames=_SUMMARY),
    # transformers 5 no longer ships Transformer-XL; 4.x loads these names.
    "TransfoXLModel": HFArchitecture("TransfoXLModel"),
    "TransfoXLLMHeadModel": HFArchitecture("TransfoXLLMHeadModel"),
}


def hf_architecture(model: "PreTrainedModel") -> HFArchitecture:
    """The table entry of ``model``'s class (or of the nearest listed base class, for user subclasses)."""
    for klass in type(model).__mro__:
        if klass.__name__ in HF_ARCHITECTURES:
            return HF_ARCHITECTURES[klass.__name__]
    return HFArchitecture(type(model).__name__)


# ---------------------------------------------------------------------------------------------------- config


def _dtype_name(model: "PreTrainedModel") -> str:
    from .checkpoint_io import per_layer_params

    dtypes = {np.dtype(value.dtype).name for value in per_layer_params(model).values()}
    # Mixed precision parameters are unusual; transformers takes one dtype, so name the widest.
    for name in ("float32", "bfloat16", "float16"):
        if name in dtypes:
            return name
    return sorted(dtypes)[0] if dtypes else "float32"


def hf_config_dict(model: "PreTrainedModel") -> dict[str, Any]:
    """``config.json`` for ``model``: the config's own (0.6.x) fields plus what transformers needs to pick and
    build the class. ``num_labels`` comes from the model (its classifier's size), labels from the config when it
    names them, else transformers' defaults ``LABEL_i``."""
    values = model.config.to_dict()
    values["model_type"] = type(model.config).model_type or values.get("model_type", "")
    values["architectures"] = [hf_architecture(model).name]
    num_labels = getattr(model, "num_labels", None) or values.get("num_labels")
    if num_labels is None and "id2label" in values:
        num_labels = len(values["id2label"])
    num_labels = int(num_labels or 2)
    id2label = {str(key): str(value) for key, value in (values.get("id2label") or {}).items()}
    if len(id2label) != num_labels:
        id2label = {str(index): f"LABEL_{index}" for index in range(num_labels)}
    values.update(num_labels=num_labels, id2label=id2label, label2id={label: int(index) for index, label in
                                                                       id2label.items()})
    dtype = _dtype_name(model)
    values.update(dtype=dtype, torch_dtype=dtype)  # transformers 5 reads dtype, 4.x torch_dtype
    if values["model_type"] == "openai-gpt" and values.get("n_special"):
        # transformers has no n_special: its vocab_size is the whole token table (pretrained + special rows).
        values["vocab_size"] = int(values["vocab_size"]) + int(values["n_special"])
        values["n_special"] = 0
    return values


# --------------------------------------------------------------------------------------------------- weights


def hf_state_dict(model: "PreTrainedModel") -> dict[str, np.ndarray]:
    """The PyTorch arrays transformers' class expects: tied copies, buffers and absent parameters dropped,
    keys renamed where transformers' names differ."""
    entry = hf_architecture(model)
    tied = set(model.tied_torch_keys)
    arrays = {}
    for key, array in model.torch_state_dict().items():
        if key in tied or model._is_buffer(key) or model._is_unused(key):
            continue
        for pattern, replacement in entry.renames:
            key = re.sub(pattern, replacement, key)
        arrays[key] = array
    return arrays


def parse_shard_size(size: int | str) -> int:
    """``max_shard_size`` in bytes: an int, or a string such as ``"200MB"``, ``"5GB"``, ``"1GiB"``, ``"10kB"``
    (decimal units are powers of 1000, ``*iB`` powers of 1024, as transformers reads them)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKMGT]i?B|B)?\s*", str(size))
        if match is None:
            raise ValueError(f"max_shard_size={size!r}: expected a number of bytes or a size like '200MB', '5GB'")
        units = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KiB": 2**10,
                 "kiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
        value = int(float(match.group(1)) * units[match.group(2) or "B"])
    if value <= 0:
        raise ValueError(f"max_shard_size={size!r} must be positive")
    return value


def shard_arrays(arrays: Mapping[str, np.ndarray], max_bytes: int) -> list[dict[str, np.ndarray]]:
    """Split ``arrays`` (in key order) into consecutive shards of at most ``max_bytes`` of tensor data; an array
    larger than the limit gets a shard of its own, as in transformers."""
    shards: list[dict[str, np.ndarray]] = [{}]
    filled = 0
    for key, array in arrays.items():
        if shards[-1] and filled + array.nbytes > max_bytes:
            shards.append({})
            filled = 0
        shards[-1][key] = array
        filled += array.nbytes
    return shards


def _safetensors_writer(arrays: Mapping[str, np.ndarray]) -> Writer:
    from safetensors.numpy import save

    # transformers refuses safetensors files without format metadata; np.array copies break tied aliasing.
    payload = save({key: np.array(value) for key, value in arrays.items()}, metadata={"format": "pt"})
    return lambda stream: stream.write(payload)


def _bytes_writer(payload: bytes) -> Writer:
    return lambda stream: stream.write(payload)


def safetensors_files(arrays: Mapping[str, np.ndarray], max_shard_size: int | str | None) -> dict[str, Writer]:
    """``{file name: writer}``: one ``model.safetensors``, or shards plus the index in transformers' layout."""
    shards = [dict(arrays)] if max_shard_size is None else shard_arrays(arrays, parse_shard_size(max_shard_size))
    if len(shards) == 1:
        return {SAFETENSORS_NAME: _safetensors_writer(shards[0])}
    files: dict[str, Writer] = {}
    weight_map: dict[str, str] = {}
    for number, shard in enumerate(shards, start=1):
        name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        files[name] = _safetensors_writer(shard)
        weight_map.update({key: name for key in shard})
    index = {"metadata": {"total_size": int(sum(array.nbytes for array in arrays.values()))},
             "weight_map": dict(sorted(weight_map.items()))}
    files[SAFETENSORS_INDEX_NAME] = _bytes_writer((json.dumps(index, indent=2) + "\n").encode("utf-8"))
    return files


def torch_bin_writer(model: "PreTrainedModel") -> Writer:
    """Writer of the 0.6.x ``pytorch_model.bin`` (``torch.save`` of the state dict, tied copies included)."""
    try:
        import torch
    except ImportError as error:
        raise ImportError("writing pytorch_model.bin needs PyTorch: pip install 'jaxformers[torch]'") from error
    import jax.numpy as jnp

    tensors: dict[str, Any] = {}
    for key, array in model.torch_state_dict().items():
        if array.dtype == jnp.bfloat16:
            tensors[key] = torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
        else:
            tensors[key] = torch.from_numpy(np.array(array))

    def write(stream: IO[bytes]) -> None:
        torch.save(tensors, stream)

    return write


def save_model(model: "PreTrainedModel", directory: str | os.PathLike, *, pytorch: bool = False, safetensors: bool = False,
               max_shard_size: int | str | None = None) -> None:
    """Serialise ``model`` (everything is built in memory first) and switch its files into ``directory`` in one
    step; weight files of an earlier save that this one does not rewrite are removed in the same switch."""
    from flax import serialization

    from .checkpoint_io import per_layer_params

    ours = {key: np.asarray(value) for key, value in per_layer_params(model).items()}
    files: dict[str, Writer] = {
        CONFIG_NAME: _bytes_writer((json.dumps(hf_config_dict(model), indent=2, sort_keys=True) + "\n").encode()),
        FLAX_WEIGHTS_NAME: _bytes_writer(serialization.msgpack_serialize(jaxformers_msgpack_tree(ours))),
    }
    if safetensors or max_shard_size is not None:
        if getattr(model.config, "pruned_heads", None):
            # transformers 5 dropped head pruning: it rebuilds full-size attention and refuses these shapes.
            logger.warning("%s has pruned attention heads: jaxformers and transformers 4.x load its "
                           "model.safetensors, transformers 5 cannot", type(model).__name__)
        files.update(safetensors_files(hf_state_dict(model), max_shard_size))
    if pytorch:
        files[TORCH_WEIGHTS_NAME] = torch_bin_writer(model)
    atomic_save.replace_files(directory, files, stale=lambda name: bool(_WEIGHT_FILE.match(name)))


def save_torch_file(model: "PreTrainedModel", path: str | os.PathLike) -> None:
    """One ``pytorch_model.bin`` at ``path`` (atomic for that file)."""
    from .file_utils import atomic_write

    write = torch_bin_writer(model)
    with atomic_write(path, "wb") as stream:
        write(stream)
