"""Loading and saving for every model family: PyTorch/safetensors/msgpack files, shortcut names, strict reports.

Our parameter paths *are* the PyTorch state-dict keys (``bert.encoder.layer.0.attention.self.query.weight``), so
conversion needs only: the per-parameter layout (``torch_layout`` metadata, see layers.py), a few legacy key
renames per family, the tied keys PyTorch stores twice, and buffers PyTorch keeps in its state dict.

With ``config.scan_layers`` the repeated layers are one module whose parameters carry a leading ``[num_layers]``
axis; every file format here stays per-layer (``layer.0``, ``layer.1``...), so scanned and unrolled models load
each other's files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .atomic_save import consistent_reads
from .configuration import PretrainedConfig, apply_model_kwargs
from .file_utils import SHORTCUT_REPOS, HubFileMissing, HubOptions, cached_path, hub_file, hub_repo_for, is_remote
from .layers import ModuleFactory, build_abstract

logger = logging.getLogger("jaxformers")

CONFIG_NAMES = ("config.json",)
FLAX_WEIGHTS_NAME = "flax_model.msgpack"
SAFETENSORS_NAME = "model.safetensors"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
TORCH_INDEX_NAME = "pytorch_model.bin.index.json"
# Top-level entry of the flax_model.msgpack jaxformers writes: tells it apart from Hugging Face's Flax files,
# which share the file name but hold kernel/scale/embedding leaves in Flax layouts.
MSGPACK_MARKER_KEY = "__jaxformers__"
MSGPACK_MARKER = "jaxformers-msgpack-v1"
CONFIG_NAME = "config.json"


@dataclasses.dataclass
class LoadReport:
    """What a load did: keys our model has that the checkpoint lacks (left initialised), keys it had that we
    did not use, and keys recognised as non-parameters (buffers, tied duplicates) and skipped."""

    missing_keys: list[str]
    unexpected_keys: list[str]
    skipped_keys: list[str]

    def as_dict(self) -> dict[str, list[str]]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------------------------
# Reading weight files into {key: numpy array}


def _torch_to_numpy(tensor: Any) -> np.ndarray:
    import torch

    if tensor.dtype == torch.bfloat16:
        return tensor.detach().float().numpy().astype(jnp.bfloat16)
    return tensor.detach().cpu().numpy()


def read_torch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A ``pytorch_model.bin`` (zip or legacy ``torch.save`` layout) as numpy arrays, read by
    :mod:`jaxformers.safe_pickle`: no pickled code runs, sizes are checked before anything is allocated (torch's
    own ``weights_only`` loader allocates what a corrupt header claims), and torch is not needed. Every entry
    must be a tensor (ValueError naming it); bfloat16 stays bfloat16 (ml_dtypes)."""
    from .safe_pickle import load_pickled_data

    path = str(path)
    try:
        state = load_pickled_data(path)
    except pickle.UnpicklingError as error:  # unsafe, corrupt or oversized; the message names the file
        raise OSError(f"cannot read PyTorch weights {path!r} safely: {error}") from error
    if not isinstance(state, Mapping):
        raise ValueError(f"{path!r} holds a {type(state).__name__}, expected a state dict of tensors")
    arrays: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{path!r}: entry {key!r} is a {type(value).__name__}, not a tensor")
        arrays[key] = value
    return arrays


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    arrays: dict[str, np.ndarray] = {}
    try:
        with safe_open(str(path), framework="numpy") as reader:
            for key in reader.keys():
                arrays[key] = reader.get_tensor(key)
    except MemoryError:
        raise
    except Exception as error:
        raise OSError(f"cannot read safetensors file {str(path)!r}: {error}") from error
    return arrays


def read_msgpack(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from flax import serialization

    with open(path, "rb") as reader:
        try:
            tree = serialization.msgpack_restore(reader.read())
        except MemoryError:
            raise
        except Exception as error:
            raise OSError(f"cannot read flax msgpack file {str(path)!r}: {error}") from error
    if not isinstance(tree, Mapping):
        raise ValueError(f"{str(path)!r} holds a {type(tree).__name__} at the top level, expected a dict of arrays")
    try:
        return flatten_tree(tree)
    except ValueError as error:
        raise ValueError(f"{str(path)!r}: {error}") from None


def flatten_tree(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_tree(value, name + "."))
        elif isinstance(value, (np.ndarray, np.generic, jax.Array, int, float, str)):  # str: the format marker
            flat[name] = np.asarray(value)
        else:
            raise ValueError(f"entry {name!r} is a {type(value).__name__}, not an array")
    return flat


def unflatten_keys(flat: Mapping[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


# ------------------------------------------------------------------------------------------------------------------
# Hugging Face's layouts: its Flax msgpack files, sharded checkpoints

_HF_FLAX_LEAVES = ("kernel", "scale", "embedding")
# Hugging Face spellings of our (0.6.x) keys, for every family: transformers' SequenceSummary is "summary".
_HF_KEY_RENAMES = ((r"(^|\.)multiple_choice_head\.summary\.", r"\1multiple_choice_head.linear."),)


def jaxformers_msgpack_tree(flat: Mapping[str, np.ndarray]) -> dict:
    """The tree to write as flax_model.msgpack: our per-layer arrays plus the marker entry saying the file is in
    jaxformers' layout (PyTorch key names, our shapes), never Hugging Face Flax's."""
    return {**unflatten_keys(flat), MSGPACK_MARKER_KEY: MSGPACK_MARKER}


def read_msgpack_with_layout(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """A flax_model.msgpack as ``(arrays, layout)``: ours (marked, or unmarked from before the marker existed)
    as ``"ours"``, Hugging Face's Flax files converted to PyTorch names and layouts as ``"torch"``."""
    flat = read_msgpack(path)
    marker = flat.pop(MSGPACK_MARKER_KEY, None)
    if marker is not None:
        if str(marker) != MSGPACK_MARKER:
            raise ValueError(f"{str(path)!r} is a jaxformers msgpack of format {str(marker)!r}; this version reads "
                             f"{MSGPACK_MARKER!r} (upgrade jaxformers)")
        return flat, "ours"
    if any(key.rpartition(".")[2] in _HF_FLAX_LEAVES for key in flat):
        return hf_flax_to_torch(flat), "torch"
    return flat, "ours"


def hf_flax_to_torch(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Hugging Face Flax names and layouts -> PyTorch's (the inverse of transformers' PyTorch->Flax rules).

    ``kernel`` is a Dense weight, stored transposed from PyTorch's (nn.Linear [out, in] -> kernel [in, out]; GPT-2's
    Conv1D [in, out] -> its Flax kernel [out, in]), and a 4-d kernel is a convolution ([H, W, in, out] vs PyTorch's
    [out, in, H, W]); ``scale`` is a LayerNorm weight and ``embedding`` an embedding table, both unchanged."""
    torch_arrays: dict[str, np.ndarray] = {}
    for key, value in flat.items():
        parent, _, leaf = key.rpartition(".")
        array = np.asarray(value)
        if leaf == "kernel" and array.ndim == 2:
            array = array.T
        elif leaf == "kernel" and array.ndim == 4:
            array = array.transpose(3, 2, 0, 1)
        if leaf in _HF_FLAX_LEAVES:
            key = f"{parent}.weight" if parent else "weight"
        torch_arrays[key] = array
    return torch_arrays


def read_sharded(index_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A sharded checkpoint (``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``): the index's
    ``weight_map`` names, per key, the shard file beside the index that holds it."""
    index_path = Path(index_path)
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OSError(f"cannot read the shard index {str(index_path)!r}: {error!r}") from error
    if not isinstance(weight_map, Mapping) or not all(isinstance(shard, str) for shard in weight_map.values()):
        raise ValueError(f"{str(index_path)!r}: weight_map must map each key to a shard file name")
    arrays: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        if os.path.basename(shard) != shard or shard in ("", ".", ".."):
            raise ValueError(f"{str(index_path)!r} names shard {shard!r}, which is not a file beside the index")
        if not (index_path.parent / shard).is_file():
            raise FileNotFoundError(f"shard {str(index_path.parent / shard)!r} named by {str(index_path)!r} is missing")
        reader = read_safetensors if shard.endswith(".safetensors") else read_torch_bin
        arrays.update(reader(index_path.parent / shard))
    absent = sorted(key for key in weight_map if key not in arrays)
    if absent:
        raise ValueError(f"{str(index_path)!r} lists keys its shards do not hold: {absent[:5]}")
    return arrays


def _shard_names(index_path: str | os.PathLike) -> list[str]:
    try:
        weight_map = json.loads(Path(index_path).read_text(encoding="utf-8"))["weight_map"]
        return sorted({shard for shard in weight_map.values() if isinstance(shard, str) and "/" not in shard})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []  # read_sharded reports what is wrong with the index, naming the file


def read_weights(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """Any weights file from_pretrained finds, as ``(arrays, layout)`` (see `PreTrainedModel.load_state_dict`)."""
    name = os.path.basename(path)
    if name == FLAX_WEIGHTS_NAME:
        return read_msgpack_with_layout(path)
    if name.endswith(".index.json"):
        return read_sharded(path), "torch"
    if name.endswith(".safetensors"):
        return read_safetensors(path), "torch"
    return read_torch_bin(path), "torch"


def describe_layout(keys: list[str]) -> str:
    """A guess, for error messages, at what a weights file holds, from its key names."""
    leaves = {key.rpartition(".")[2] for key in keys}
    sample = ", ".join(sorted(keys)[:3])
    if leaves & set(_HF_FLAX_LEAVES):
        return f"Hugging Face's Flax layout (kernel/scale/embedding names: {sample})"
    if any("/" in key for key in keys):
        return f"a TensorFlow checkpoint's names ({sample}; pass from_tf=True with a TF checkpoint directory)"
    families = (("BERT", ("bert.", "embeddings.word_embeddings", "encoder.layer.")),
                ("GPT-2", ("wte.", "transformer.wte.", "h.0.attn.c_attn")),
                ("OpenAI GPT", ("tokens_embed.", "transformer.tokens_embed.")),
                ("Transformer-XL", ("word_emb.", "transformer.word_emb.", "layers.0.dec_attn")))
    for family, markers in families:
        if any(marker in key for key in keys for marker in markers):
            return f"{family} PyTorch names ({sample})"
    return f"unrecognised names ({sample})"


# ------------------------------------------------------------------------------------------------------------------
# Parameter specs: the model's parameters viewed per layer, with their PyTorch layout


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    key: str  # per-layer dotted key, equal to the PyTorch state-dict key
    shape: tuple[int, ...]  # our shape
    dtype: Any
    torch_layout: str | None
    init: tuple | None = None  # ("normal", std) or ("constant", value): how to materialise it without a model
    abstract: bool = False  # built by nnx.eval_shape: no value yet


def _path_key(path: tuple) -> str:
    return ".".join(str(getattr(part, "key", part)) for part in path)


def _stacked_prefixes(model: nnx.Module) -> dict[str, int]:
    """``{dotted prefix of a scanned layer stack: num_layers}`` for models built with scan_layers."""
    return dict(getattr(model, "stacked_layers", lambda: {})())


def _split_stacked(key: str, stacked: Mapping[str, int]) -> tuple[str, str] | None:
    for prefix in stacked:
        if key.startswith(prefix + "."):
            return prefix, key[len(prefix) + 1:]
    return None


def param_specs(model: nnx.Module) -> dict[str, ParamSpec]:
    stacked = _stacked_prefixes(model)
    specs: dict[str, ParamSpec] = {}
    for path, param in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        key = _path_key(path)
        metadata = param.get_metadata()
        layout, init = metadata.get("torch_layout"), metadata.get("init")
        abstract = isinstance(param.get_value(), jax.ShapeDtypeStruct)
        split = _split_stacked(key, stacked)
        if split is None:
            specs[key] = ParamSpec(key, tuple(param.shape), param.dtype, layout, init, abstract)
        else:
            prefix, rest = split
            for index in range(stacked[prefix]):
                name = f"{prefix}.{index}.{rest}"
                specs[name] = ParamSpec(name, tuple(param.shape[1:]), param.dtype, layout, init, abstract)
    return specs


def per_layer_params(model: nnx.Module) -> dict[str, jax.Array]:
    """Every parameter under its per-layer key, in our layout (scanned stacks sliced apart)."""
    stacked = _stacked_prefixes(model)
    flat: dict[str, jax.Array] = {}
    for path, param in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        key = _path_key(path)
        split = _split_stacked(key, stacked)
        if split is None:
            flat[key] = param[...]
        else:
            prefix, rest = split
            value = param[...]
            for index in range(stacked[prefix]):
                flat[f"{prefix}.{index}.{rest}"] = value[index]
    return flat


def assign_per_layer_params(model: nnx.Module, values: Mapping[str, Any]) -> None:
    """Write per-layer arrays (our layout) into the model, restacking scanned layers."""
    stacked = _stacked_prefixes(model)
    state = nnx.state(model, nnx.Param)
    flat = dict(nnx.to_flat_state(state))
    for path, param in flat.items():
        key = _path_key(path)
        split = _split_stacked(key, stacked)
        if split is None:
            if key in values:
                param.set_value(jnp.asarray(values[key], dtype=param.dtype))
            continue
        prefix, rest = split
        names = [f"{prefix}.{index}.{rest}" for index in range(stacked[prefix])]
        if any(name in values for name in names):
            # Only a partial update reads the current rows (an abstract model has none to read).
            rows = [
                jnp.asarray(values[name], dtype=param.dtype) if name in values else param[...][index]
                for index, name in enumerate(names)
            ]
            param.set_value(jnp.stack(rows))
    nnx.update(model, state)


# ------------------------------------------------------------------------------------------------------------------
# The model base class


class PreTrainedModel(nnx.Module):
    """Loading/saving shared by all models. Subclasses set the class attributes below."""

    config_class: ClassVar[type[PretrainedConfig]] = PretrainedConfig
    # Attribute holding the base model in head models ("bert", "transformer"); base models have none.
    base_model_prefix: ClassVar[str] = ""
    # True on the base model class itself (BertModel, GPT2Model...); head models hold theirs at base_model_prefix.
    is_base_model: ClassVar[bool] = False
    # Shortcut name -> hub repository.
    pretrained_model_archive_map: ClassVar[dict[str, str]] = {}
    # Old checkpoint spellings -> ours, as (regex, replacement) on incoming PyTorch keys.
    legacy_key_renames: ClassVar[tuple[tuple[str, str], ...]] = ()
    # PyTorch keys that duplicate another parameter (tied weights): full key -> the full key it copies.
    tied_torch_keys: ClassVar[dict[str, str]] = {}
    # Non-parameter entries PyTorch keeps in state dicts (buffers), as regexes.
    buffer_key_patterns: ClassVar[tuple[str, ...]] = ()
    # Parameters (PyTorch keys, as regexes) the class holds for 0.6.x compatibility but never uses in its outputs,
    # and that transformers' class of the same name does not have (BERT's pooler under the MLM/token/QA heads):
    # not exported to model.safetensors, and not reported missing when a checkpoint lacks them.
    unused_torch_keys: ClassVar[tuple[str, ...]] = ()
    # Legacy config file names looked for after config.json.
    legacy_config_names: ClassVar[tuple[str, ...]] = ()
    # The rule table (a jaxformers.conversion.tables.TABLES name) that from_pretrained(from_tf=True) applies.
    tf_checkpoint_rules: ClassVar[str | None] = None

    config: PretrainedConfig
    # Seed for parameters a checkpoint lacks when from_pretrained built the model abstractly.
    _init_seed: int = 0

    # ------------------------------------------------------------------------------------- construction helpers
    def _check_config(self, config: PretrainedConfig) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        # nnx's model.train() / model.eval() flip this attribute on every module that has it.
        self.deterministic = True

    def _base_model(self) -> "PreTrainedModel":
        """The base model: this one, or the one a head model holds at ``base_model_prefix``."""
        return self if self.is_base_model else getattr(self, self.base_model_prefix)

    def _base_key_prefix(self) -> str:
        """What parameter keys of the base model start with in this model: ``""`` or ``"bert."``..."""
        return "" if self.is_base_model else self.base_model_prefix + "."

    @classmethod
    def _new_factory(cls, config: PretrainedConfig, rngs: nnx.Rngs, dtype: Any, param_dtype: Any) -> ModuleFactory:
        """The family's parameter factory (its initializer, norm size, activation...)."""
        raise NotImplementedError(f"{cls.__name__} declares no parameter factory")

    def _factory(self, config: PretrainedConfig, *, options: ModuleFactory | None = None,
                 rngs: nnx.Rngs | None = None, seed: int = 0, dtype: Any = None,
                 param_dtype: Any = jnp.float32) -> ModuleFactory:
        """The factory a constructor builds its parameters with: the one the enclosing constructor passed down as
        ``options=`` (a head model's, shared with its base model), else a new one drawing from ``rngs``
        (``nnx.Rngs(seed)`` when not given). Constructors keep it in a local variable and pass it down, never on
        the module, so no RNG state stays in the model graph."""
        if options is not None:
            return options
        return self._new_factory(config, rngs if rngs is not None else nnx.Rngs(seed), dtype, param_dtype)

    def _dropout_key(self, dropout_rng: jax.Array | None) -> jax.Array | None:
        """None in evaluation mode; in training mode the caller's key, which must be given."""
        if self.deterministic:
            return None
        if dropout_rng is None:
            raise ValueError(
                f"{type(self).__name__} is in training mode (model.train()): pass dropout_rng=jax.random.key(seed), "
                f"or call model.eval() to disable dropout"
            )
        return dropout_rng

    # -------------------------------------------------------------------------------------------- conversion
    def stacked_layers(self) -> dict[str, int]:
        """Prefixes of scanned layer stacks and their depth; overridden by models that support scan_layers."""
        return {}

    def torch_state_dict(self) -> dict[str, np.ndarray]:
        """The PyTorch state dict (numpy arrays, PyTorch layouts and key names, tied keys included)."""
        specs = param_specs(self)
        out: dict[str, np.ndarray] = {}
        for key, value in per_layer_params(self).items():
            array = np.asarray(value)
            if specs[key].torch_layout == "transpose":
                array = array.T
            out[key] = np.ascontiguousarray(array)
        for tied, source in self.tied_torch_keys.items():
            out[tied] = out[source]
        return out

    def load_state_dict(
        self, state_dict: Mapping[str, Any], *, layout: str = "torch", strict: bool = False, source: str = "state_dict"
    ) -> LoadReport:
        """Copy arrays into the model. ``layout="torch"`` for PyTorch/safetensors dicts, ``"ours"`` for msgpack.

        A shape mismatch is an error naming the key and both shapes. Missing and unexpected keys are logged (and
        raise with ``strict=True``). Keys with or without the base-model prefix (``bert.``) are both accepted.
        """
        specs = param_specs(self)
        incoming = {self._rename_legacy(key): value for key, value in state_dict.items()}
        incoming = self._adapt_prefix(incoming, specs)

        self._resolve_tied_copies(incoming, source)
        skipped = [key for key in incoming if self._is_buffer(key) or self._is_tied_copy(key)]
        for key in skipped:
            del incoming[key]

        values: dict[str, np.ndarray] = {}
        mismatches: list[str] = []
        for key, spec in specs.items():
            if key not in incoming:
                continue
            array = _as_numpy(incoming.pop(key))
            if layout == "torch" and spec.torch_layout == "transpose":
                array = array.T
            if tuple(array.shape) != spec.shape:
                found = array.shape[::-1] if layout == "torch" and spec.torch_layout == "transpose" else array.shape
                expected = spec.shape[::-1] if layout == "torch" and spec.torch_layout == "transpose" else spec.shape
                mismatches.append(f"{key}: expected shape {tuple(expected)}, found {tuple(found)}")
                continue
            values[key] = array
        if mismatches:
            raise ValueError(f"shape mismatch loading {source} into {type(self).__name__}:\n  " + "\n  ".join(mismatches))
        _check_weight_values(values, source, strict)

        absent = sorted(key for key in specs if key not in values)
        report = LoadReport(
            # Parameters the class keeps for 0.6.x but never uses (transformers' class lacks them) may be absent.
            missing_keys=[key for key in absent if not self._is_unused(key)],
            unexpected_keys=sorted(incoming),
            skipped_keys=sorted(skipped),
        )
        if strict and (report.missing_keys or report.unexpected_keys):
            raise ValueError(
                f"strict load of {source} into {type(self).__name__} failed: "
                f"missing keys {report.missing_keys}, unexpected keys {report.unexpected_keys}"
            )
        values.update(_materialize_abstract(specs, absent, self._init_seed))
        assign_per_layer_params(self, values)
        if report.missing_keys:
            logger.warning(
                "Weights of %s not initialized from %s (kept at their initial values): %s",
                type(self).__name__, source, report.missing_keys,
            )
        if report.unexpected_keys:
            logger.warning("Weights from %s not used in %s: %s", source, type(self).__name__, report.unexpected_keys)
        return report

    def _rename_legacy(self, key: str) -> str:
        for pattern, replacement in self.legacy_key_renames + _HF_KEY_RENAMES:
            key = re.sub(pattern, replacement, key)
        return key

    def _is_unused(self, key: str) -> bool:
        return any(re.search(pattern, key) for pattern in self.unused_torch_keys)

    def _is_buffer(self, key: str) -> bool:
        return any(re.search(pattern, key) for pattern in self.buffer_key_patterns)

    def _is_tied_copy(self, key: str) -> bool:
        return key in self.tied_torch_keys or key in self._hf_tied_spellings()

    def _hf_tied_spellings(self) -> dict[str, str]:
        """Tied copies as Hugging Face checkpoints spell them: GPT's ``lm_head.weight`` (0.6.x wrote
        ``lm_head.decoder.weight``) and BERT's ``cls.predictions.decoder.bias`` (the same tensor as
        ``cls.predictions.bias``)."""
        tied = self.tied_torch_keys
        spellings = {}
        if "lm_head.decoder.weight" in tied:
            spellings["lm_head.weight"] = tied["lm_head.decoder.weight"]
        if "cls.predictions.decoder.weight" in tied:
            spellings["cls.predictions.decoder.bias"] = "cls.predictions.bias"
        return spellings

    def _resolve_tied_copies(self, incoming: dict[str, Any], source: str) -> None:
        """A tied copy stands in for what it copies when only the copy was saved (transformers keeps either one of
        a tied pair), and must equal it when both were: an untied checkpoint must not load with a weight dropped."""
        for key, origin in {**self.tied_torch_keys, **self._hf_tied_spellings()}.items():
            if key not in incoming:
                continue
            if origin not in incoming:
                incoming[origin] = incoming[key]
                continue
            copy, original = _as_numpy(incoming[key]), _as_numpy(incoming[origin])
            if copy.shape != original.shape or not np.array_equal(copy, original):
                raise ValueError(
                    f"{source}: {key} differs from {origin}, which {type(self).__name__} ties it to (the checkpoint "
                    f"was trained with untied weights, which this model cannot hold)"
                )

    def _refuse_foreign_layout(self, arrays: Mapping[str, Any], source: str) -> None:
        """A file matching under half of our weights is another layout or model: an error, never random weights."""
        specs = param_specs(self)
        names = self._adapt_prefix({self._rename_legacy(key): None for key in arrays}, specs)
        matched = sum(key in names for key in specs)
        if 2 * matched < len(specs):
            raise ValueError(
                f"{source!r} matches only {matched} of the {len(specs)} weights of {type(self).__name__}: it seems to "
                f"hold {describe_layout(list(arrays))}, not this model's weights"
            )

    def _adapt_prefix(self, incoming: dict[str, Any], specs: Mapping[str, ParamSpec]) -> dict[str, Any]:
        """Base-model weights load into head models and head-model weights into base models."""
        prefix = self.base_model_prefix
        if not prefix:
            return incoming
        dotted = prefix + "."
        model_has_prefix = any(key.startswith(dotted) for key in specs)
        data_has_prefix = any(key.startswith(dotted) for key in incoming)
        if model_has_prefix and not data_has_prefix:
            base_keys = {key[len(dotted):] for key in specs if key.startswith(dotted)}
            return {(dotted + key if key in base_keys else key): value for key, value in incoming.items()}
        if not model_has_prefix and data_has_prefix:
            return {(key[len(dotted):] if key.startswith(dotted) else key): value for key, value in incoming.items()}
        return incoming

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        from_tf: bool = False,
        state_dict: Mapping[str, Any] | None = None,
        *inputs: Any,
        output_loading_info: bool = False,
        strict: bool = False,
        **kwargs: Any,
    ):
        """Build the model from a shortcut name, a hub repository id, a directory, an archive (.tar.gz) or a TF
        checkpoint. Hub files come from the Hugging Face cache (see :mod:`jaxformers.file_utils`); ``revision=``,
        ``token=``, ``local_files_only=`` and ``force_download=`` are passed to huggingface_hub.

        Weights are taken, in order of preference, from ``state_dict``, a TF checkpoint (``from_tf``),
        ``model.safetensors`` (or its sharded index), ``flax_model.msgpack`` (ours, or Hugging Face's Flax layout),
        ``pytorch_model.bin`` (or its sharded index). A file matching under half of the model's weights is an
        error naming the layout it seems to hold. Extra ``inputs``/``kwargs`` go to the
        constructor (``num_labels``, ``output_attentions``, ``dtype``, ``seed``...); config fields can be overridden
        with ``config_overrides={...}`` or as keywords (``scan_layers=True``); an unknown name is an error.
        ``num_labels`` defaults to the config's (Hugging Face classifiers record it).
        """
        config_overrides = kwargs.pop("config_overrides", None)
        hub = HubOptions.pop_from(kwargs, cache_dir)
        resolved = _resolved_directory(cls, pretrained_model_name_or_path, hub, from_tf, state_dict is not None)
        with resolved as (directory, weights_path):
            config, kwargs = apply_model_kwargs(cls, cls._load_config(directory), inputs, kwargs, config_overrides)
            if state_dict is not None:
                arrays, layout, source = state_dict, "torch", "the given state_dict"
            elif from_tf:
                from .tf_checkpoints import read_tf_checkpoint

                arrays = cls.torch_keys_from_tf(read_tf_checkpoint(weights_path), source=weights_path)
                layout, source = "torch", weights_path
            else:
                (arrays, layout), source = _read_weights_or_explain(weights_path, resolved), weights_path
            # Shapes only (no random init, no XLA compilation): the checkpoint supplies the values, and the few
            # parameters it lacks are drawn from their recorded initializers.
            model = build_abstract(lambda: cls(config, *inputs, **kwargs))
            model._init_seed = int(kwargs.get("seed", 0))
            if state_dict is None:
                model._refuse_foreign_layout(arrays, source)
            report = model.load_state_dict(arrays, layout=layout, strict=strict, source=source)
        return (model, report.as_dict()) if output_loading_info else model

    @classmethod
    def torch_keys_from_tf(cls, tf_arrays: Mapping[str, np.ndarray],
                           source: str = "the TensorFlow checkpoint") -> dict[str, np.ndarray]:
        """TF variables -> PyTorch keys by the class's rule table; a name no rule matches is an error."""
        if cls.tf_checkpoint_rules is None:
            raise NotImplementedError(f"{cls.__name__} has no TensorFlow checkpoint reader")
        from .conversion.rules import apply_rules
        from .conversion.tables import TABLES

        return apply_rules(TABLES[cls.tf_checkpoint_rules], tf_arrays, source)

    @classmethod
    def _load_config(cls, directory: Path) -> PretrainedConfig:
        for name in CONFIG_NAMES + cls.legacy_config_names:
            if (directory / name).is_file():
                return cls.config_class.from_json_file(directory / name)
        names = ", ".join(CONFIG_NAMES + cls.legacy_config_names)
        raise FileNotFoundError(f"no config file ({names}) in {str(directory)!r}")

    # ------------------------------------------------------------------------------------------------ saving
    def save_pretrained(self, save_directory: str | os.PathLike, *, pytorch: bool = False, safetensors: bool = False,
                        max_shard_size: int | str | None = None) -> None:
        """Write ``config.json`` (0.6.x fields plus what transformers needs) and ``flax_model.msgpack``; with
        ``safetensors=True`` also ``model.safetensors`` in transformers' layout (sharded with
        ``model.safetensors.index.json`` when ``max_shard_size`` is given, e.g. ``"200MB"``); with
        ``pytorch=True`` the 0.6.x ``pytorch_model.bin``.

        All-or-nothing for the whole directory: the files switch in one step, a kill at any moment leaves the
        old save or the new one, concurrent saves to one directory are serialised, and weight files of an
        earlier save that this one does not rewrite are removed. See :mod:`jaxformers.atomic_save`.
        """
        from .saving import save_model

        save_model(self, save_directory, pytorch=pytorch, safetensors=safetensors, max_shard_size=max_shard_size)

    def save_torch_state_dict(self, path: str | os.PathLike) -> None:
        """The 0.6.x ``pytorch_model.bin`` alone, at ``path`` (atomic for that one file)."""
        from .saving import save_torch_file

        save_torch_file(self, path)


# Preference when a directory or hub repository holds several: safetensors (no pickle, memory-mapped), our own
# msgpack, then PyTorch pickles; a sharded form comes right after its single-file form.
WEIGHT_NAMES_IN_ORDER = (
    SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME, FLAX_WEIGHTS_NAME, TORCH_WEIGHTS_NAME, TORCH_INDEX_NAME,
)


# Weights are floating point; float16/bfloat16/float64 are converted to the parameter dtype (float32 by default).
WEIGHT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _check_weight_values(values: Mapping[str, np.ndarray], source: str, strict: bool) -> None:
    """Refuse non-float weights (bool, int, complex, object, str: a cast to float would hide a wrong file), naming
    key and dtype; report NaN/inf by key, a warning, or an error with ``strict=True``."""
    wrong = [f"{key}: {array.dtype}" for key, array in values.items() if str(array.dtype) not in WEIGHT_DTYPES]
    if wrong:
        raise ValueError(f"{source}: weights must be floating point ({', '.join(WEIGHT_DTYPES)}); found\n  "
                         + "\n  ".join(wrong))
    not_finite = [key for key, array in values.items() if not np.isfinite(array).all()]
    if not_finite and strict:
        raise ValueError(f"strict load of {source}: NaN or infinite values in {not_finite}")
    if not_finite:
        logger.warning("NaN or infinite values in weights from %s: %s", source, not_finite)


def _read_weights_or_explain(path: str, resolved: "_resolved_directory") -> tuple[dict[str, np.ndarray], str]:
    """read_weights; a corrupt file that came from the download cache is named as the cache file it is (not the
    snapshot link), with how to fetch it again."""
    try:
        return read_weights(path)
    except (OSError, ValueError) as error:
        if resolved._hub_repo() is None:
            raise
        cached = os.path.realpath(path)
        raise OSError(f"the cached file {cached!r} ({os.path.basename(path)} of {resolved.name!r}) cannot be read: "
                      f"{error}. Delete it, or pass force_download=True, to download it again.") from error


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return _torch_to_numpy(value)
    return np.asarray(value)


def _materialize_abstract(specs: Mapping[str, ParamSpec], missing: list[str], seed: int) -> dict[str, np.ndarray]:
    """Initial values for missing parameters of an abstract model, drawn with numpy (no XLA compilation)."""
    rng = np.random.default_rng(seed)
    values = {}
    for key in missing:
        spec = specs[key]
        if not spec.abstract:
            continue
        if spec.init is None:  # layers.new_param records one on every parameter it makes
            raise ValueError(f"{key}: missing from the checkpoint and built without a recorded initializer "
                             f"(make parameters with jaxformers.layers.new_param)")
        kind, scale = spec.init
        if kind == "normal":
            values[key] = (rng.standard_normal(spec.shape, np.float32) * np.float32(scale))
        elif kind == "uniform":
            values[key] = rng.uniform(-scale, scale, spec.shape).astype(np.float32)
        elif kind == "constant":
            values[key] = np.full(spec.shape, scale, np.float32)
        else:
            raise ValueError(f"{key}: unknown initializer {spec.init!r} recorded on the parameter")
    return values


# What a model archive (.tar.gz) may hold: a few regular files (config, weights, vocabulary).
ARCHIVE_MAX_MEMBERS = 1000
ARCHIVE_SIZE_FACTOR = 8  # total uncompressed size <= 8 x the archive's size + 16 MiB (weights barely compress)
ARCHIVE_SIZE_SLACK = 16 << 20


def extract_model_archive(archive: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Extract a model archive, refusing (ValueError naming archive and member) links, special files, paths
    leaving `destination`, more than ARCHIVE_MAX_MEMBERS members, or members expanding past
    ``ARCHIVE_SIZE_FACTOR x archive size + ARCHIVE_SIZE_SLACK`` bytes. Headers are checked before any extraction."""
    archive = str(archive)
    limit = ARCHIVE_SIZE_FACTOR * os.path.getsize(archive) + ARCHIVE_SIZE_SLACK
    try:
        with tarfile.open(archive) as tar:
            members, total = [], 0
            for member in tar:  # headers one at a time: stops at the first offending member
                name = member.name
                if len(members) >= ARCHIVE_MAX_MEMBERS:
                    raise ValueError(f"refusing archive {archive!r}: more than {ARCHIVE_MAX_MEMBERS} members")
                if not (member.isfile() or member.isdir()):
                    raise ValueError(f"refusing archive {archive!r}: member {name!r} is a link or special file")
                if name.startswith("/") or ".." in Path(name).parts:
                    raise ValueError(f"refusing archive {archive!r}: member {name!r} points outside the archive")
                total += member.size
                if total > limit:
                    raise ValueError(f"refusing archive {archive!r}: member {name!r} takes its contents past "
                                     f"{limit} bytes ({ARCHIVE_SIZE_FACTOR} x the archive's size + "
                                     f"{ARCHIVE_SIZE_SLACK >> 20} MiB)")
                members.append(member)
            tar.extractall(destination, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:  # corrupt or truncated archive
        raise OSError(f"cannot extract model archive {archive!r}: {error}") from error


class _resolved_directory:
    """Context manager yielding (directory with the config, weights file path); cleans extracted archives."""

    def __init__(self, cls, name_or_path, hub: HubOptions, from_tf: bool, has_state_dict: bool):
        self.cls, self.name, self.hub, self.cache_dir = cls, str(name_or_path), hub, hub.cache_dir
        self.from_tf, self.has_state_dict = from_tf, has_state_dict
        self._temporary: str | None = None

    def __enter__(self) -> tuple[Path, str | None]:
        name = self.name
        repo = self._hub_repo()
        if repo is not None:
            return self._download_repo(repo)
        if is_remote(name) or name.endswith((".tar.gz", ".tgz", ".tar")):
            archive = cached_path(name, self.cache_dir)
            self._temporary = tempfile.mkdtemp(prefix="jaxformers-")
            try:
                extract_model_archive(archive, self._temporary)
            except BaseException:
                self.__exit__(None, None, None)  # __exit__ does not run when __enter__ raises
                raise
            directory = Path(self._temporary)
            children = [child for child in directory.iterdir() if child.is_dir()]
            if not any(directory.glob("*.json")) and len(children) == 1:
                directory = children[0]
        else:
            directory = Path(name).expanduser()
            if not directory.is_dir():
                known = ", ".join(sorted(self.cls.pretrained_model_archive_map)) or "none"
                raise FileNotFoundError(
                    f"{name!r} is neither a directory, an archive, a hub repository id, nor a shortcut name of "
                    f"{self.cls.__name__} "
                    f"(known shortcut names: {known})"
                )
            # Until __exit__: no save can switch files under us, and an interrupted one is finished first.
            self._reading = consistent_reads(directory)
            self._reading.__enter__()
        try:
            return directory, self._weights_in(directory)
        except BaseException:
            self.__exit__(None, None, None)  # __exit__ does not run when __enter__ raises
            raise

    def _weights_in(self, directory: Path) -> str | None:
        if self.has_state_dict:
            return None
        if self.from_tf:
            from .tf_checkpoints import find_tf_checkpoint

            return find_tf_checkpoint(directory)
        for weights_name in WEIGHT_NAMES_IN_ORDER:
            if (directory / weights_name).is_file():
                return str(directory / weights_name)
        raise FileNotFoundError(
            f"no weights in {str(directory)!r}: expected one of {', '.join(WEIGHT_NAMES_IN_ORDER)} "
            f"(or from_tf=True for a TensorFlow checkpoint)"
        )

    def _hub_repo(self) -> str | None:
        """The hub repository the name stands for (shortcut names mapped to today's repositories), if any."""
        mapped = self.cls.pretrained_model_archive_map.get(self.name)
        if mapped is not None:
            return SHORTCUT_REPOS.get(mapped, mapped)
        return hub_repo_for(self.name)

    def _download_repo(self, repo: str) -> tuple[Path, str | None]:
        """Config and weights of a hub repository, from the hub cache (fetched when needed). All files come from
        one snapshot directory of the cache, the config's."""
        if self.from_tf:
            raise ValueError(f"from_tf=True reads a TensorFlow checkpoint directory, and {self.name!r} is a hub "
                             f"repository: download its TF checkpoint and pass that directory")
        config = self._first_hub_file(repo, CONFIG_NAMES + self.cls.legacy_config_names, "config")
        if self.has_state_dict:
            return Path(config).parent, None
        weights = self._first_hub_file(repo, WEIGHT_NAMES_IN_ORDER, "weights")
        if weights.endswith(".index.json"):
            for shard in _shard_names(weights):
                hub_file(repo, shard, self.hub)
        return Path(config).parent, weights

    def _first_hub_file(self, repo: str, names: tuple[str, ...], what: str) -> str:
        errors = []
        for name in names:
            try:
                return hub_file(repo, name, self.hub)
            except HubFileMissing as error:
                errors.append(f"  {name}: {error}")
            except OSError as error:  # a transport failure: another file name may still come through
                logger.warning("%s; trying the next file", error)
                errors.append(f"  {name}: {error}")
        raise OSError(f"could not get the {what} of {self.name!r} (hub repository {repo}):\n" + "\n".join(errors))

    def __exit__(self, *exc_info) -> None:
        if getattr(self, "_reading", None) is not None:
            self._reading.__exit__(None, None, None)
            self._reading = None
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            error = exc_info[1] if len(exc_info) > 1 else None
            if isinstance(error, (OSError, ValueError)) and self._temporary in str(error):
                # The message names a file of the extraction directory, which is gone now: say where it came from.
                error.add_note(f"{self._temporary} was the temporary extraction of the archive {self.name!r}")
