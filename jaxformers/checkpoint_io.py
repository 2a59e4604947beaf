"""Checkpoint I/O as functions: between a model's ``nnx.State`` and ``{PyTorch key: array}``, and the whole
``from_pretrained`` / ``save_pretrained`` paths.

Our parameter paths *are* the PyTorch state-dict keys (``bert.encoder.layer.0.attention.self.query.weight``), so
conversion needs only: the per-parameter layout (``torch_layout`` metadata, see layers.py), a few legacy key
renames per family, the tied keys PyTorch stores twice, and buffers PyTorch keeps in its state dict. A model class
declares those (``legacy_key_renames``, ``tied_torch_keys``, ``buffer_key_patterns``, ``unused_torch_keys``,
``base_model_prefix``: see :class:`jaxformers.modeling_utils.PreTrainedModel`); the functions here read the
declarations off the model or class they are given.

With ``config.scan_layers`` the repeated layers are one module whose parameters carry a leading ``[num_layers]``
axis; every file format stays per-layer (``layer.0``, ``layer.1``...), so scanned and unrolled models load each
other's files.

Files: :mod:`jaxformers.checkpoint_files` reads them and finds them; :mod:`jaxformers.saving` writes them.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .checkpoint_files import CONFIG_NAMES, _torch_to_numpy, describe_layout, resolved_checkpoint
from .configuration import PretrainedConfig, apply_model_kwargs
from .file_utils import HubOptions
from .layers import build_abstract

if TYPE_CHECKING:
    from .modeling_utils import PreTrainedModel

logger = logging.getLogger("jaxformers")

# Hugging Face spellings of our (0.6.x) keys, for every family: transformers' SequenceSummary is "summary".
_HF_KEY_RENAMES = ((r"(^|\.)multiple_choice_head\.summary\.", r"\1multiple_choice_head.linear."),)
# Weights are floating point; float16/bfloat16/float64 are converted to the parameter dtype (float32 by default).
WEIGHT_DTYPES = ("float16", "bfloat16", "float32", "float64")


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
    """Every parameter of ``nnx.state(model, nnx.Param)`` under its per-layer key (a scanned stack's
    ``[num_layers, ...]`` parameter becomes ``num_layers`` specs of its row shape)."""
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
# Key handling from the class's declarations


def rename_legacy(model: PreTrainedModel, key: str) -> str:
    """An incoming key in today's spelling: the class's ``legacy_key_renames``, then Hugging Face's spellings."""
    for pattern, replacement in model.legacy_key_renames + _HF_KEY_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def is_unused(model: PreTrainedModel, key: str) -> bool:
    """Whether ``key`` is a parameter the class keeps for 0.6.x but never uses (``unused_torch_keys``)."""
    return any(re.search(pattern, key) for pattern in model.unused_torch_keys)


def is_buffer(model: PreTrainedModel, key: str) -> bool:
    """Whether ``key`` is a PyTorch buffer (``buffer_key_patterns``), not a parameter."""
    return any(re.search(pattern, key) for pattern in model.buffer_key_patterns)


def _hf_tied_spellings(model: PreTrainedModel) -> dict[str, str]:
    """Tied copies as Hugging Face checkpoints spell them: GPT's ``lm_head.weight`` (0.6.x wrote
    ``lm_head.decoder.weight``) and BERT's ``cls.predictions.decoder.bias`` (the same tensor as
    ``cls.predictions.bias``)."""
    tied = model.tied_torch_keys
    spellings = {}
    if "lm_head.decoder.weight" in tied:
        spellings["lm_head.weight"] = tied["lm_head.decoder.weight"]
    if "cls.predictions.decoder.weight" in tied:
        spellings["cls.predictions.decoder.bias"] = "cls.predictions.bias"
    return spellings


def _is_tied_copy(model: PreTrainedModel, key: str) -> bool:
    return key in model.tied_torch_keys or key in _hf_tied_spellings(model)


def _resolve_tied_copies(model: PreTrainedModel, incoming: dict[str, Any], source: str) -> None:
    """A tied copy stands in for what it copies when only the copy was saved (transformers keeps either one of
    a tied pair), and must equal it when both were: an untied checkpoint must not load with a weight dropped."""
    for key, origin in {**model.tied_torch_keys, **_hf_tied_spellings(model)}.items():
        if key not in incoming:
            continue
        if origin not in incoming:
            incoming[origin] = incoming[key]
            continue
        copy, original = _as_numpy(incoming[key]), _as_numpy(incoming[origin])
        if copy.shape != original.shape or not np.array_equal(copy, original):
            raise ValueError(
                f"{source}: {key} differs from {origin}, which {type(model).__name__} ties it to (the checkpoint "
                f"was trained with untied weights, which this model cannot hold)"
            )


def adapt_prefix(model: PreTrainedModel, incoming: dict[str, Any], specs: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Base-model weights load into head models and head-model weights into base models: adds or strips the
    class's ``base_model_prefix`` (``bert.``) on incoming keys so they match the model's."""
    prefix = model.base_model_prefix
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


def refuse_foreign_layout(model: PreTrainedModel, arrays: Mapping[str, Any], source: str,
                          specs: Mapping[str, ParamSpec] | None = None) -> None:
    """A file matching under half of our weights is another layout or model: an error, never random weights."""
    specs = param_specs(model) if specs is None else specs
    names = adapt_prefix(model, {rename_legacy(model, key): None for key in arrays}, specs)
    matched = sum(key in names for key in specs)
    if 2 * matched < len(specs):
        raise ValueError(
            f"{source!r} matches only {matched} of the {len(specs)} weights of {type(model).__name__}: it seems to "
            f"hold {describe_layout(list(arrays))}, not this model's weights"
        )


# ------------------------------------------------------------------------------------------------------------------
# {PyTorch key: array} <-> model


def torch_state_dict(model: PreTrainedModel) -> dict[str, np.ndarray]:
    """The model's parameters as a PyTorch state dict (numpy arrays, PyTorch layouts and key names, tied keys
    included). Buffers are the model class's to add: its ``torch_state_dict()`` method (GPT-2's causal masks,
    Transformer-XL's ``pos_emb.inv_freq``) is this plus them."""
    specs = param_specs(model)
    out: dict[str, np.ndarray] = {}
    for key, value in per_layer_params(model).items():
        array = np.asarray(value)
        if specs[key].torch_layout == "transpose":
            array = array.T
        out[key] = np.ascontiguousarray(array)
    for tied, source in model.tied_torch_keys.items():
        out[tied] = out[source]
    return out


def _incoming_params(model: PreTrainedModel, state_dict: Mapping[str, Any], specs: Mapping[str, ParamSpec],
                     source: str) -> tuple[dict[str, Any], list[str]]:
    """``(arrays under the model's keys, skipped buffer and tied-copy keys)`` from a checkpoint's dict."""
    incoming = {rename_legacy(model, key): value for key, value in state_dict.items()}
    incoming = adapt_prefix(model, incoming, specs)
    _resolve_tied_copies(model, incoming, source)
    skipped = [key for key in incoming if is_buffer(model, key) or _is_tied_copy(model, key)]
    for key in skipped:
        del incoming[key]
    return incoming, skipped


def _take_values(model: PreTrainedModel, incoming: dict[str, Any], specs: Mapping[str, ParamSpec], layout: str,
                 source: str) -> dict[str, np.ndarray]:
    """Pop every key of ``specs`` out of ``incoming`` as an array in our layout; all shape mismatches are one
    error naming each key with both shapes (in the file's layout)."""
    values: dict[str, np.ndarray] = {}
    mismatches: list[str] = []
    for key, spec in specs.items():
        if key not in incoming:
            continue
        array = _as_numpy(incoming.pop(key))
        transposed = layout == "torch" and spec.torch_layout == "transpose"
        if transposed:
            array = array.T
        if tuple(array.shape) != spec.shape:
            found = array.shape[::-1] if transposed else array.shape
            expected = spec.shape[::-1] if transposed else spec.shape
            mismatches.append(f"{key}: expected shape {tuple(expected)}, found {tuple(found)}")
            continue
        values[key] = array
    if mismatches:
        raise ValueError(f"shape mismatch loading {source} into {type(model).__name__}:\n  " + "\n  ".join(mismatches))
    return values


def load_state_dict(model: PreTrainedModel, state_dict: Mapping[str, Any], *, layout: str = "torch",
                    strict: bool = False, source: str = "state_dict",
                    specs: Mapping[str, ParamSpec] | None = None) -> LoadReport:
    """Copy arrays into the model. ``layout="torch"`` for PyTorch/safetensors dicts, ``"ours"`` for msgpack.

    A shape mismatch is an error naming the key and both shapes. Missing and unexpected keys are logged (and
    raise with ``strict=True``). Keys with or without the base-model prefix (``bert.``) are both accepted.
    ``specs`` is ``param_specs(model)`` when the caller already has it (one graph walk fewer).
    """
    specs = param_specs(model) if specs is None else specs
    incoming, skipped = _incoming_params(model, state_dict, specs, source)
    values = _take_values(model, incoming, specs, layout, source)
    check_weight_values(values, source, strict)

    absent = sorted(key for key in specs if key not in values)
    report = LoadReport(
        # Parameters the class keeps for 0.6.x but never uses (transformers' class lacks them) may be absent.
        missing_keys=[key for key in absent if not is_unused(model, key)],
        unexpected_keys=sorted(incoming),
        skipped_keys=sorted(skipped),
    )
    name = type(model).__name__
    if strict and (report.missing_keys or report.unexpected_keys):
        raise ValueError(f"strict load of {source} into {name} failed: "
                         f"missing keys {report.missing_keys}, unexpected keys {report.unexpected_keys}")
    values.update(materialize_abstract(specs, absent, model._init_seed))
    assign_per_layer_params(model, values)
    if report.missing_keys:
        logger.warning("Weights of %s not initialized from %s (kept at their initial values): %s",
                       name, source, report.missing_keys)
    if report.unexpected_keys:
        logger.warning("Weights from %s not used in %s: %s", source, name, report.unexpected_keys)
    return report


def check_weight_values(values: Mapping[str, np.ndarray], source: str, strict: bool) -> None:
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


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor in a user's state_dict
        return _torch_to_numpy(value)
    return np.asarray(value)


def materialize_abstract(specs: Mapping[str, ParamSpec], missing: list[str], seed: int) -> dict[str, np.ndarray]:
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


# ------------------------------------------------------------------------------------------------------------------
# from_pretrained / save_pretrained


# Abstract models already built in this process, by (class, config, constructor arguments) -> (graphdef, state).
# Loading a second checkpoint of one architecture (an evaluation sweep, a warm reload) then copies the graph
# instead of tracing every initializer again under nnx.eval_shape (0.1-0.2 s for MiniLM on 2 CPU cores).
_ABSTRACT_MODELS: collections.OrderedDict[tuple, tuple[nnx.GraphDef, nnx.State]] = collections.OrderedDict()
_ABSTRACT_MODELS_LOCK = threading.Lock()  # loads from several threads share the cache
ABSTRACT_CACHE_SIZE = 8
_PLAIN_ARGUMENTS = (type(None), bool, int, float, str, type, np.dtype)


def _abstract_cache_key(cls: type, config: PretrainedConfig, inputs: tuple, kwargs: Mapping[str, Any]) -> tuple | None:
    """The cache key, or None when an argument is not a plain value (an ``nnx.Rngs``, an array, an object whose
    repr would not tell two of them apart): such builds are never cached."""
    arguments = (*inputs, *kwargs.values())
    if not all(isinstance(value, _PLAIN_ARGUMENTS) for value in arguments):
        return None
    # The seed only feeds initializers, which an abstract build never runs (load_pretrained draws the missing
    # parameters from it afterwards): a sweep over seeds shares one entry.
    kwargs = {name: value for name, value in kwargs.items() if name != "seed"}
    # Every dataclass field, runtime switches and kept metadata included (the config's own repr is its
    # config.json, which leaves the runtime switches out).
    fields = tuple((field.name, repr(getattr(config, field.name))) for field in dataclasses.fields(config))
    return cls, type(config), fields, repr(inputs), repr(sorted(kwargs.items()))


def abstract_model(cls: type[PreTrainedModel], config: PretrainedConfig, inputs: tuple = (),
                   kwargs: Mapping[str, Any] | None = None) -> PreTrainedModel:
    """``cls(config, *inputs, **kwargs)`` built by :func:`jaxformers.layers.build_abstract` (shapes only). A build
    repeated in this process is a fresh copy of the first (its own Variables: nothing is shared between the
    models it returns)."""
    kwargs = dict(kwargs or {})
    key = _abstract_cache_key(cls, config, inputs, kwargs)
    if key is None:
        return build_abstract(lambda: cls(config, *inputs, **kwargs))
    with _ABSTRACT_MODELS_LOCK:
        cached = _ABSTRACT_MODELS.get(key)
    if cached is None:
        cached = nnx.split(build_abstract(lambda: cls(config, *inputs, **kwargs)))
    with _ABSTRACT_MODELS_LOCK:
        _ABSTRACT_MODELS[key] = cached
        _ABSTRACT_MODELS.move_to_end(key)
        while len(_ABSTRACT_MODELS) > ABSTRACT_CACHE_SIZE:
            _ABSTRACT_MODELS.popitem(last=False)
    graphdef, state = cached
    return nnx.merge(graphdef, state, copy=True)


def seed_from_rngs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``from_pretrained``'s constructor keywords with ``rngs=`` replaced by ``seed=``, drawn from its params
    stream: an ``nnx.Rngs`` from outside cannot be advanced inside the abstract build's trace, and the seed is all
    the load needs (for the parameters the checkpoint lacks)."""
    kwargs = dict(kwargs)
    rngs = kwargs.pop("rngs", None)
    if rngs is not None:
        kwargs["seed"] = int(jax.random.randint(rngs.params(), (), 0, np.iinfo(np.int32).max))
    return kwargs


def load_pretrained(cls: type[PreTrainedModel], pretrained_model_name_or_path: str | os.PathLike,
                    cache_dir: str | os.PathLike | None = None, from_tf: bool = False,
                    state_dict: Mapping[str, Any] | None = None, *inputs: Any, output_loading_info: bool = False,
                    strict: bool = False, **kwargs: Any) -> Any:
    """``cls.from_pretrained(...)`` (see :meth:`jaxformers.modeling_utils.PreTrainedModel.from_pretrained`): the
    model, or ``(model, report dict)`` with ``output_loading_info=True``."""
    config_overrides = kwargs.pop("config_overrides", None)
    hub = HubOptions.pop_from(kwargs, cache_dir)
    resolved = resolved_checkpoint(cls, pretrained_model_name_or_path, hub, from_tf, state_dict is not None)
    with resolved as (directory, weights_path):
        config, kwargs = apply_model_kwargs(cls, load_config(cls, directory), inputs, kwargs, config_overrides)
        if state_dict is not None:
            arrays, layout, source = state_dict, "torch", "the given state_dict"
        elif from_tf:
            from .tf_checkpoints import read_tf_checkpoint

            arrays = cls.torch_keys_from_tf(read_tf_checkpoint(weights_path), source=weights_path)
            layout, source = "torch", weights_path
        else:
            (arrays, layout), source = resolved.read_weights(weights_path), weights_path
        # Shapes only (no random init, no XLA compilation): the checkpoint supplies the values, and the few
        # parameters it lacks are drawn from their recorded initializers.
        kwargs = seed_from_rngs(kwargs)
        model = abstract_model(cls, config, inputs, kwargs)
        model._init_seed = int(kwargs.get("seed", 0))
        specs = param_specs(model)
        if state_dict is None:
            refuse_foreign_layout(model, arrays, source, specs)
        report = load_state_dict(model, arrays, layout=layout, strict=strict, source=source, specs=specs)
    return (model, report.as_dict()) if output_loading_info else model


def torch_keys_from_tf(cls: type[PreTrainedModel], tf_arrays: Mapping[str, np.ndarray],
                       source: str = "the TensorFlow checkpoint") -> dict[str, np.ndarray]:
    """TF variables -> PyTorch keys by the class's rule table; a name no rule matches is an error."""
    if cls.tf_checkpoint_rules is None:
        raise NotImplementedError(f"{cls.__name__} has no TensorFlow checkpoint reader")
    from .conversion.rules import apply_rules
    from .conversion.tables import TABLES

    return apply_rules(TABLES[cls.tf_checkpoint_rules], tf_arrays, source)


def load_config(cls: type[PreTrainedModel], directory: Path) -> PretrainedConfig:
    """The class's config from ``config.json`` in ``directory``, else from its ``legacy_config_names``."""
    for name in CONFIG_NAMES + cls.legacy_config_names:
        if (directory / name).is_file():
            return cls.config_class.from_json_file(directory / name)
    names = ", ".join(CONFIG_NAMES + cls.legacy_config_names)
    raise FileNotFoundError(f"no config file ({names}) in {str(directory)!r}")


def save_pretrained(model: PreTrainedModel, save_directory: str | os.PathLike, *, pytorch: bool = False,
                    safetensors: bool = False, max_shard_size: int | str | None = None) -> None:
    """``model.save_pretrained(...)``: config and weight files, switched into the directory all at once
    (:func:`jaxformers.saving.save_model`)."""
    from .saving import save_model

    save_model(model, save_directory, pytorch=pytorch, safetensors=safetensors, max_shard_size=max_shard_size)


def save_torch_state_dict(model: PreTrainedModel, path: str | os.PathLike) -> None:
    """The 0.6.x ``pytorch_model.bin`` alone, at ``path`` (atomic for that one file)."""
    from .saving import save_torch_file

    save_torch_file(model, path)
