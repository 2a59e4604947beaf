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
import logging
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .configuration import PretrainedConfig
from .file_utils import atomic_write, cached_path, hub_url, is_remote
from .layers import abstract_init

logger = logging.getLogger("jaxformers")

CONFIG_NAMES = ("config.json",)
FLAX_WEIGHTS_NAME = "flax_model.msgpack"
SAFETENSORS_NAME = "model.safetensors"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
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
    """A ``pytorch_model.bin`` without executing pickled code (``weights_only=True``)."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"reading {str(path)!r} needs PyTorch: pip install 'jaxformers[torch]' (or use model.safetensors)"
        ) from error
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError... for unsafe or corrupt files
        raise OSError(f"cannot read PyTorch weights {str(path)!r} safely: {error}") from error
    if not isinstance(state, Mapping):
        raise ValueError(f"{str(path)!r} holds a {type(state).__name__}, expected a state dict of tensors")
    return {key: _torch_to_numpy(value) for key, value in state.items()}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    arrays: dict[str, np.ndarray] = {}
    try:
        with safe_open(str(path), framework="numpy") as reader:
            for key in reader.keys():
                arrays[key] = reader.get_tensor(key)
    except Exception as error:
        raise OSError(f"cannot read safetensors file {str(path)!r}: {error}") from error
    return arrays


def read_msgpack(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from flax import serialization

    with open(path, "rb") as reader:
        try:
            tree = serialization.msgpack_restore(reader.read())
        except Exception as error:
            raise OSError(f"cannot read flax msgpack file {str(path)!r}: {error}") from error
    return flatten_tree(tree)


def flatten_tree(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_tree(value, name + "."))
        else:
            flat[name] = np.asarray(value)
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
    # Shortcut name -> hub repository.
    pretrained_model_archive_map: ClassVar[dict[str, str]] = {}
    # Old checkpoint spellings -> ours, as (regex, replacement) on incoming PyTorch keys.
    legacy_key_renames: ClassVar[tuple[tuple[str, str], ...]] = ()
    # PyTorch keys that duplicate another parameter (tied weights): full key -> the full key it copies.
    tied_torch_keys: ClassVar[dict[str, str]] = {}
    # Non-parameter entries PyTorch keeps in state dicts (buffers), as regexes.
    buffer_key_patterns: ClassVar[tuple[str, ...]] = ()
    # Legacy config file names looked for after config.json.
    legacy_config_names: ClassVar[tuple[str, ...]] = ()

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

    def _finish_init(self) -> None:
        """Drop the construction-time ModuleFactory: it holds RNG state that must not stay in the model graph."""
        if hasattr(self, "_options"):
            del self._options

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

        report = LoadReport(
            missing_keys=sorted(key for key in specs if key not in values),
            unexpected_keys=sorted(incoming),
            skipped_keys=sorted(skipped),
        )
        if strict and (report.missing_keys or report.unexpected_keys):
            raise ValueError(
                f"strict load of {source} into {type(self).__name__} failed: "
                f"missing keys {report.missing_keys}, unexpected keys {report.unexpected_keys}"
            )
        values.update(_materialize_abstract(specs, report.missing_keys, self._init_seed))
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
        for pattern, replacement in self.legacy_key_renames:
            key = re.sub(pattern, replacement, key)
        return key

    def _is_buffer(self, key: str) -> bool:
        return any(re.search(pattern, key) for pattern in self.buffer_key_patterns)

    def _is_tied_copy(self, key: str) -> bool:
        return key in self.tied_torch_keys

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
        """Build the model from a shortcut name, a directory, an archive (.tar.gz) or a TF checkpoint.

        Weights are taken, in order of preference, from ``state_dict``, a TF checkpoint (``from_tf``),
        ``flax_model.msgpack``, ``model.safetensors``, ``pytorch_model.bin``. Extra ``inputs``/``kwargs`` go to the
        constructor (``num_labels``, ``output_attentions``, ``dtype``, ``seed``...); config fields can be overridden
        with ``config_overrides={...}``.
        """
        config_overrides = kwargs.pop("config_overrides", None)
        with _resolved_directory(cls, pretrained_model_name_or_path, cache_dir, from_tf, state_dict is not None) as (
            directory,
            weights_path,
        ):
            config = cls._load_config(directory)
            if config_overrides:
                config.update(config_overrides)
            if state_dict is not None:
                arrays, layout, source = state_dict, "torch", "the given state_dict"
            elif from_tf:
                from .tf_checkpoints import read_tf_checkpoint

                arrays, layout, source = cls.torch_keys_from_tf(read_tf_checkpoint(weights_path)), "torch", weights_path
            else:
                reader, layout = _WEIGHT_READERS[os.path.basename(weights_path)]
                arrays, source = reader(weights_path), weights_path
            # Build the model abstractly (no random init, no XLA compilation): the checkpoint supplies the values.
            with abstract_init():
                model = cls(config, *inputs, **kwargs)
            model._init_seed = int(kwargs.get("seed", 0))
            try:
                report = model.load_state_dict(arrays, layout=layout, strict=strict, source=source)
            except _NeedsConcreteModel:
                model = cls(config, *inputs, **kwargs)
                report = model.load_state_dict(arrays, layout=layout, strict=strict, source=source)
        return (model, report.as_dict()) if output_loading_info else model

    @classmethod
    def torch_keys_from_tf(cls, tf_arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{cls.__name__} has no TensorFlow checkpoint reader")

    @classmethod
    def _load_config(cls, directory: Path) -> PretrainedConfig:
        for name in CONFIG_NAMES + cls.legacy_config_names:
            if (directory / name).is_file():
                return cls.config_class.from_json_file(directory / name)
        names = ", ".join(CONFIG_NAMES + cls.legacy_config_names)
        raise FileNotFoundError(f"no config file ({names}) in {str(directory)!r}")

    # ------------------------------------------------------------------------------------------------ saving
    def save_pretrained(self, save_directory: str | os.PathLike, *, pytorch: bool = False, safetensors: bool = False) -> None:
        """Write ``config.json`` and ``flax_model.msgpack`` (and optionally ``pytorch_model.bin`` /
        ``model.safetensors`` with the 0.6.x key names). Each file is written atomically."""
        from flax import serialization

        directory = Path(save_directory)
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(f"save_pretrained needs a directory; {str(directory)!r} is a file")
        directory.mkdir(parents=True, exist_ok=True)
        # Serialise everything before touching the directory, so a failure leaves no half-written model.
        ours = {key: np.asarray(value) for key, value in per_layer_params(self).items()}
        payloads: dict[str, bytes] = {FLAX_WEIGHTS_NAME: serialization.msgpack_serialize(unflatten_keys(ours))}
        if safetensors:
            from safetensors.numpy import save

            torch_arrays = self.torch_state_dict()
            # safetensors refuses aliased tensors: store tied copies as separate arrays.
            payloads[SAFETENSORS_NAME] = save({key: np.array(value) for key, value in torch_arrays.items()})
        for name, payload in payloads.items():
            with atomic_write(directory / name, "wb") as writer:
                writer.write(payload)
        if pytorch:
            self.save_torch_state_dict(directory / TORCH_WEIGHTS_NAME)
        self.config.to_json_file(directory / CONFIG_NAME)

    def save_torch_state_dict(self, path: str | os.PathLike) -> None:
        try:
            import torch
        except ImportError as error:
            raise ImportError("writing pytorch_model.bin needs PyTorch: pip install 'jaxformers[torch]'") from error
        tensors: dict[str, Any] = {}
        for key, array in self.torch_state_dict().items():
            if array.dtype == jnp.bfloat16:
                tensors[key] = torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
            else:
                tensors[key] = torch.from_numpy(np.array(array))
        with atomic_write(path, "wb") as writer:
            torch.save(tensors, writer)


_WEIGHT_READERS = {
    FLAX_WEIGHTS_NAME: (read_msgpack, "ours"),
    SAFETENSORS_NAME: (read_safetensors, "torch"),
    TORCH_WEIGHTS_NAME: (read_torch_bin, "torch"),
}
WEIGHT_NAMES_IN_ORDER = (FLAX_WEIGHTS_NAME, SAFETENSORS_NAME, TORCH_WEIGHTS_NAME)


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return _torch_to_numpy(value)
    return np.asarray(value)


class _NeedsConcreteModel(Exception):
    """An abstract (eval_shape) model lacks weights that cannot be initialised from metadata alone."""


def _materialize_abstract(specs: Mapping[str, ParamSpec], missing: list[str], seed: int) -> dict[str, np.ndarray]:
    """Initial values for missing parameters of an abstract model, drawn with numpy (no XLA compilation)."""
    rng = np.random.default_rng(seed)
    values = {}
    for key in missing:
        spec = specs[key]
        if not spec.abstract:
            continue
        if spec.init is None:
            raise _NeedsConcreteModel(key)
        kind, scale = spec.init
        if kind == "normal":
            values[key] = (rng.standard_normal(spec.shape, np.float32) * np.float32(scale))
        elif kind == "uniform":
            values[key] = rng.uniform(-scale, scale, spec.shape).astype(np.float32)
        elif kind == "constant":
            values[key] = np.full(spec.shape, scale, np.float32)
        else:
            raise _NeedsConcreteModel(key)
    return values


class _resolved_directory:
    """Context manager yielding (directory with the config, weights file path); cleans extracted archives."""

    def __init__(self, cls, name_or_path, cache_dir, from_tf: bool, has_state_dict: bool):
        self.cls, self.name, self.cache_dir = cls, str(name_or_path), cache_dir
        self.from_tf, self.has_state_dict = from_tf, has_state_dict
        self._temporary: str | None = None

    def __enter__(self) -> tuple[Path, str | None]:
        name = self.name
        if name in self.cls.pretrained_model_archive_map:
            return self._download_shortcut(self.cls.pretrained_model_archive_map[name])
        if is_remote(name) or name.endswith((".tar.gz", ".tgz", ".tar")):
            archive = cached_path(name, self.cache_dir)
            self._temporary = tempfile.mkdtemp(prefix="jaxformers-")
            with tarfile.open(archive) as tar:
                tar.extractall(self._temporary, filter="data")
            directory = Path(self._temporary)
            children = [child for child in directory.iterdir() if child.is_dir()]
            if not any(directory.glob("*.json")) and len(children) == 1:
                directory = children[0]
        else:
            directory = Path(name).expanduser()
            if not directory.is_dir():
                known = ", ".join(sorted(self.cls.pretrained_model_archive_map)) or "none"
                raise FileNotFoundError(
                    f"{name!r} is neither a directory, an archive, nor a shortcut name of {self.cls.__name__} "
                    f"(known shortcut names: {known})"
                )
        return directory, self._weights_in(directory)

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

    def _download_shortcut(self, repo: str) -> tuple[Path, str | None]:
        self._temporary = tempfile.mkdtemp(prefix="jaxformers-")
        directory = Path(self._temporary)
        os.symlink(cached_path(hub_url(repo, CONFIG_NAME), self.cache_dir), directory / CONFIG_NAME)
        if self.has_state_dict:
            return directory, None
        errors = []
        for weights_name in (SAFETENSORS_NAME, TORCH_WEIGHTS_NAME):
            try:
                path = cached_path(hub_url(repo, weights_name), self.cache_dir)
            except OSError as error:
                errors.append(str(error))
                continue
            os.symlink(path, directory / weights_name)
            return directory, str(directory / weights_name)
        raise OSError(f"could not get the weights of {self.name!r}:\n" + "\n".join(errors))

    def __exit__(self, *exc_info) -> None:
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
