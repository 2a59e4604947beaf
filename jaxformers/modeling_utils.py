"""The model base class: what a model class must declare, and the 0.6.x loading/saving methods.

``PreTrainedModel`` holds the class declarations the checkpoint code reads (config class, base-model prefix,
shortcut names, legacy key renames, tied keys, buffers, unused keys, legacy config names, TF rule table) and the
construction helpers every model uses. Its loading and saving methods are one-line delegations to the functions
of :mod:`jaxformers.checkpoint_io`; the file formats are in :mod:`jaxformers.checkpoint_files` and
:mod:`jaxformers.saving`. The names those modules define are re-exported here, where 0.6.x-style code and
earlier jaxformers versions import them (``read_torch_bin``, ``LoadReport``, ``param_specs``, ``CONFIG_NAME``...).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import checkpoint_io
from .checkpoint_files import (  # noqa: F401  (re-exported)
    ARCHIVE_MAX_MEMBERS,
    ARCHIVE_SIZE_FACTOR,
    ARCHIVE_SIZE_SLACK,
    CONFIG_NAME,
    CONFIG_NAMES,
    FLAX_WEIGHTS_NAME,
    MSGPACK_MARKER,
    MSGPACK_MARKER_KEY,
    SAFETENSORS_INDEX_NAME,
    SAFETENSORS_NAME,
    TORCH_INDEX_NAME,
    TORCH_WEIGHTS_NAME,
    WEIGHT_NAMES_IN_ORDER,
    describe_layout,
    extract_model_archive,
    flatten_tree,
    hf_flax_to_torch,
    jaxformers_msgpack_tree,
    logger,
    read_msgpack,
    read_msgpack_with_layout,
    read_safetensors,
    read_sharded,
    read_torch_bin,
    read_weights,
    unflatten_keys,
)
from .checkpoint_io import (  # noqa: F401  (re-exported)
    WEIGHT_DTYPES,
    LoadReport,
    ParamSpec,
    assign_per_layer_params,
    param_specs,
    per_layer_params,
)
from .configuration import PretrainedConfig
from .layers import ModuleFactory


class PreTrainedModel(nnx.Module):
    """What a model class declares (the class attributes below, read by :mod:`jaxformers.checkpoint_io`), the
    construction helpers its constructors use, and the 0.6.x loading/saving API (delegations)."""

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
        """The PyTorch state dict (numpy arrays, PyTorch layouts and key names, tied keys included); classes with
        buffers in PyTorch's state dict add them here."""
        return checkpoint_io.torch_state_dict(self)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], *, layout: str = "torch", strict: bool = False, source: str = "state_dict"
    ) -> LoadReport:
        """Copy arrays into the model. ``layout="torch"`` for PyTorch/safetensors dicts, ``"ours"`` for msgpack.

        A shape mismatch is an error naming the key and both shapes. Missing and unexpected keys are logged (and
        raise with ``strict=True``). Keys with or without the base-model prefix (``bert.``) are both accepted.
        """
        return checkpoint_io.load_state_dict(self, state_dict, layout=layout, strict=strict, source=source)

    def _is_unused(self, key: str) -> bool:
        return checkpoint_io.is_unused(self, key)

    def _is_buffer(self, key: str) -> bool:
        return checkpoint_io.is_buffer(self, key)

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
        return checkpoint_io.load_pretrained(cls, pretrained_model_name_or_path, cache_dir, from_tf, state_dict,
                                             *inputs, output_loading_info=output_loading_info, strict=strict, **kwargs)

    @classmethod
    def torch_keys_from_tf(cls, tf_arrays: Mapping[str, np.ndarray],
                           source: str = "the TensorFlow checkpoint") -> dict[str, np.ndarray]:
        """TF variables -> PyTorch keys by the class's rule table; a name no rule matches is an error."""
        return checkpoint_io.torch_keys_from_tf(cls, tf_arrays, source)

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
        checkpoint_io.save_pretrained(self, save_directory, pytorch=pytorch, safetensors=safetensors,
                                      max_shard_size=max_shard_size)

    def save_torch_state_dict(self, path: str | os.PathLike) -> None:
        """The 0.6.x ``pytorch_model.bin`` alone, at ``path`` (atomic for that one file)."""
        checkpoint_io.save_torch_state_dict(self, path)
