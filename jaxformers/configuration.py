"""Model configs as frozen dataclasses: one declaration per field, validated once, in one place.

Every way of building a config (the 0.6.x ``Config(vocab_size_or_config_json_file, ...)`` form, ``from_dict``,
``from_json_file``, ``from_pretrained``, ``dataclasses.replace``) runs the same ``__init__``:

1. the family's alias table renames 0.6.x / OpenAI / Hugging Face spellings to ours (``n_vocab`` ->
   ``vocab_size``, ``n_ctx`` -> ``n_positions`` when ``n_positions`` is absent...);
2. each key is a declared field, harmless metadata (``architectures``, ``torch_dtype``...: kept and written
   back), a known field that changes the math (accepted only at the value our models implement, otherwise a
   ValueError naming key and value), or unknown (kept, written back, and named once in a logger warning);
3. each field is checked against its declared type and range; a bad value is a ValueError naming the key, the
   value and the file it came from.

Keyword arguments are stricter than files: an unknown keyword is an error with a did-you-mean.

Runtime switches (``scan_layers``, ``remat``, ``remat_policy``) are declared with ``runtime=True``: they change
how a model runs, not what it computes, so they are not written to ``config.json``. Configs are frozen; derive a
changed one with ``dataclasses.replace(config, hidden_dropout_prob=0.0)`` or ``config.with_overrides({...})``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import logging
import os
from typing import Any, Callable, ClassVar, Mapping

from .file_utils import atomic_write

logger = logging.getLogger(__name__)

# Keys any Hugging Face / pytorch-transformers config may carry that change nothing we compute: kept as read and
# written back unchanged.
HARMLESS_METADATA = frozenset({
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "_name_or_path",
    "name_or_path", "finetuning_task", "problem_type", "output_attentions", "output_hidden_states", "torchscript",
    "use_cache", "return_dict", "output_past", "pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id",
    "decoder_start_token_id", "tokenizer_class", "prefix", "task_specific_params", "gradient_checkpointing",
    # HF splits the feed-forward into chunks of this many positions: the same numbers, less memory.
    "chunk_size_feed_forward", "attn_implementation", "_attn_implementation_autoset", "use_bfloat16",
    # Generation defaults, read by generate() callers, not by the model.
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups", "temperature",
    "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "diversity_penalty",
    "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens", "tie_encoder_decoder", "cross_attention_hidden_size",
})

FIRST_ARGUMENT = "vocab_size_or_config_json_file"


def _only(*accepted: Any) -> Callable[[Any], bool]:
    return lambda value: value in accepted


# Known HF fields that change the math, shared by every family: value -> True when our models compute it.
COMMON_MATH_FIELDS: dict[str, Callable[[Any], bool]] = {
    "is_decoder": _only(False),
    "add_cross_attention": _only(False),
    "is_encoder_decoder": _only(False),
    "tie_word_embeddings": _only(True),
}


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """Type and range of one config field; ``kind`` comes from the field's annotation."""

    kind: str = "any"
    optional: bool = False
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # strict lower bound
    choices: tuple[Any, ...] | None = None
    runtime: bool = False


def spec(default: Any, *, minimum: float | None = None, maximum: float | None = None, above: float | None = None,
         choices: tuple[Any, ...] | None = None, runtime: bool = False) -> Any:
    """Declare a config field: its default and allowed range (its type is the annotation)."""
    bounds = FieldSpec(minimum=minimum, maximum=maximum, above=above, choices=choices, runtime=runtime)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata={"spec": bounds})
    return dataclasses.field(default=default, metadata={"spec": bounds})


def _kind_of(annotation: Any) -> tuple[str, bool]:
    """``"int | None"`` -> ``("int", True)``; ``"list[int]"`` -> ``("list", False)``."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    parts = [part.strip() for part in text.split("|")]
    optional = "None" in parts
    base = [part for part in parts if part != "None"][0].split("[")[0]
    return base, optional


def configclass(cls: type) -> type:
    """Make ``cls`` a frozen config dataclass that keeps the shared validating ``__init__``."""
    cls.__init__ = PretrainedConfig.__init__
    cls = dataclasses.dataclass(frozen=True, eq=False, repr=False)(cls)
    specs = {}
    for item in dataclasses.fields(cls):
        kind, optional = _kind_of(item.type)
        specs[item.name] = dataclasses.replace(item.metadata.get("spec", FieldSpec()), kind=kind, optional=optional)
    cls._specs = specs
    return cls


class PretrainedConfig:
    """Base of every model config (see the module docstring). Subclasses are declared with ``@configclass``."""

    model_type: ClassVar[str] = ""
    # Other spellings of our fields (0.6.x, OpenAI hparams, Hugging Face) -> ours. When the alias is also one of
    # our fields (GPT-2's n_ctx) it is copied, not renamed; when our name is given too, ours wins.
    aliases: ClassVar[dict[str, str]] = {}
    # Family-specific known fields that change the math: key -> accepts(value).
    math_fields: ClassVar[dict[str, Callable[[Any], bool]]] = {}
    # Family-specific harmless keys, on top of HARMLESS_METADATA.
    metadata_keys: ClassVar[frozenset[str]] = frozenset()
    # The field the 0.6.x first positional argument sets when it is an int.
    vocab_argument: ClassVar[str] = "vocab_size"
    # The 0.6.x positional order when it is not the order the fields are declared in.
    positional: ClassVar[tuple[str, ...]] = ()
    # Constructor arguments that are not fields (``_normalize`` turns them into fields).
    arguments: ClassVar[frozenset[str]] = frozenset()
    _specs: ClassVar[dict[str, FieldSpec]] = {}

    # Fields every family shares. Labels: read from Hugging Face configs (id2label keys become ints).
    num_labels: int | None = spec(None, minimum=1)
    id2label: dict[int, str] | None = spec(None)
    label2id: dict[str, int] | None = spec(None)
    # Runtime switches: how the layer stack runs (one scanned module; rematerialised in the backward pass).
    scan_layers: bool = spec(False, runtime=True)
    remat: bool = spec(False, runtime=True)
    # What remat keeps for the backward pass: a jax.checkpoint policy name (jaxformers.layers.REMAT_POLICIES).
    remat_policy: str = spec("nothing_saveable", runtime=True, choices=(
        "nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable", "everything_saveable"))
    # Keys read from a file that are not fields (metadata, unknown keys): written back unchanged.
    extra: dict[str, Any] = spec({})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        kept = dict(kwargs.pop("extra", None) or {})  # keys kept from a file, passed on by dataclasses.replace
        values, source = cls._values_from_arguments(args, kwargs)
        fields, extra = cls._sort_keys(cls._apply_aliases(values), source)
        _init_checked(self, fields, {**kept, **extra}, source)

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def _values_from_arguments(cls, args: tuple, kwargs: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The 0.6.x calling convention -> (values, source file or None); unknown keywords are errors."""
        positional = cls.positional or [name for name in cls._specs if name not in _BASE_FIELDS]
        first = args[0] if args else kwargs.pop(FIRST_ARGUMENT, None)
        if len(args) > len(positional):
            raise TypeError(f"{cls.__name__} takes at most {len(positional)} positional arguments, got {len(args)}")
        named = dict(zip(positional[1:], args[1:]))
        clash = sorted(set(named) & set(kwargs))
        if clash:
            raise TypeError(f"{cls.__name__} got several values for {clash}")
        named.update(kwargs)
        cls.check_override_names(named, what="keyword argument")
        values: dict[str, Any] = {}
        source = None
        if isinstance(first, (str, os.PathLike)):
            source = str(first)
            values = read_json_object(first)
        elif isinstance(first, int) and not isinstance(first, bool):
            values = {cls.vocab_argument: first}
        elif first is not None:
            raise ValueError(
                f"first argument must be the vocabulary size (int) or the path to a config JSON file, "
                f"got {type(first).__name__}: {first!r}"
            )
        # Explicit keywords win over the file.
        return {**values, **named}, source

    @classmethod
    def _apply_aliases(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(values)
        for alias, ours in cls.aliases.items():
            if alias not in out:
                continue
            value = out[alias] if alias in cls._specs else out.pop(alias)
            out.setdefault(ours, value)
        return cls._normalize(out)

    @classmethod
    def _normalize(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Family rules beyond renaming (derived fields); runs on every constructor path."""
        return values

    @classmethod
    def _sort_keys(cls, values: dict[str, Any], source: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split into (declared fields, kept extra keys); refuse math we do not implement; warn on unknown."""
        fields, extra, unknown = {}, {}, []
        math = {**COMMON_MATH_FIELDS, **cls.math_fields}
        model_type = values.get("model_type")
        if model_type and cls.model_type and model_type != cls.model_type:
            raise ValueError(f"{cls.__name__}: model_type={model_type!r}{_where(source)}: this is not a "
                             f"{cls.model_type!r} config; load it with the matching jaxformers class")
        for key, value in values.items():
            if key in cls._specs:
                fields[key] = value
                continue
            if key in math and not math[key](value):
                raise ValueError(
                    f"{cls.__name__}: {key}={value!r}{_where(source)} changes the model's math in a way jaxformers "
                    f"does not implement; remove the key or use a supported value"
                )
            if key not in math and key not in HARMLESS_METADATA and key not in cls.metadata_keys:
                unknown.append(key)
            extra[key] = value
        if unknown:
            logger.warning("%s: keeping unknown config keys%s (not used by the model): %s", cls.__name__,
                           _where(source), ", ".join(sorted(unknown)))
        return fields, extra

    def _normalize_labels(self, source: str | None) -> None:
        """HF JSON stores id2label keys as strings; num_labels follows id2label when only that is given."""
        if self.id2label is not None:
            try:
                labels = {int(key): str(value) for key, value in self.id2label.items()}
            except (TypeError, ValueError) as error:
                raise ValueError(f"{type(self).__name__}: id2label keys must be integers{_where(source)}: "
                                 f"{self.id2label!r}") from error
            object.__setattr__(self, "id2label", labels)
            if self.num_labels is None:
                object.__setattr__(self, "num_labels", len(labels))
            elif self.num_labels != len(labels):
                raise ValueError(f"{type(self).__name__}: num_labels={self.num_labels} but id2label has "
                                 f"{len(labels)} entries{_where(source)}")

    def _check(self, source: str | None) -> None:
        """Checks across fields; families override and call ``self._require``."""

    def _require(self, ok: bool, key: str, message: str, source: str | None) -> None:
        if not ok:
            raise ValueError(f"{type(self).__name__}: {key}={getattr(self, key)!r}{_where(source)}: {message}")

    # --------------------------------------------------------------------------------------- public builders
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "PretrainedConfig":
        if not isinstance(values, Mapping):
            raise ValueError(f"{cls.__name__}.from_dict needs a dict, got {type(values).__name__}")
        return cls._from_mapping(values, None)

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> "PretrainedConfig":
        return cls._from_mapping(read_json_object(json_file), str(json_file))

    @classmethod
    def _from_mapping(cls, values: Mapping[str, Any], source: str | None) -> "PretrainedConfig":
        # The constructor's path, except that a file's unknown keys are kept (and reported), not refused.
        config = cls.__new__(cls)
        fields, extra = cls._sort_keys(cls._apply_aliases(values), source)
        _init_checked(config, fields, extra, source)
        return config

    @classmethod
    def check_override_names(cls, names: Mapping[str, Any] | list[str], *, what: str = "config override") -> None:
        """Raise a ValueError with a did-you-mean for names that are neither fields, aliases nor known keys."""
        known = set(cls._specs) | set(cls.aliases) | cls.arguments | HARMLESS_METADATA | cls.metadata_keys
        known |= set(cls.math_fields)
        known |= set(COMMON_MATH_FIELDS)
        for name in names:
            if name not in known:
                raise ValueError(f"unknown {what} {name!r} for {cls.__name__}{did_you_mean(name, cls._specs)}")

    def with_overrides(self, overrides: Mapping[str, Any] | None, *, what: str = "config override"):
        """A copy with ``overrides`` applied (validated like everything else; unknown names are errors)."""
        if not overrides:
            return self
        type(self).check_override_names(overrides, what=what)
        return dataclasses.replace(self, **overrides)

    # ---------------------------------------------------------------------------------------------- output
    def to_dict(self) -> dict[str, Any]:
        """Architecture fields and kept keys, as written to ``config.json`` (runtime switches left out)."""
        out = {}
        for name, field_spec in self._specs.items():
            if field_spec.runtime or name == "extra":
                continue
            value = getattr(self, name)
            if name in _BASE_FIELDS and value is None:
                continue
            out[name] = copy.deepcopy(value)
        for key, value in self.extra.items():
            out.setdefault(key, copy.deepcopy(value))
        return out

    def runtime_options(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name, s in self._specs.items() if s.runtime}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file: str | os.PathLike) -> None:
        with atomic_write(json_file, "w") as writer:
            writer.write(self.to_json_string())

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self) and self.to_dict() == other.to_dict()
                and self.runtime_options() == other.runtime_options())

    def __hash__(self) -> int:
        # Frozen, so computed once (nnx may hash a model's static attributes on every jitted call).
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((type(self).__name__, self.to_json_string(), tuple(sorted(self.runtime_options().items()))))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __getattr__(self, name: str) -> Any:
        # Kept keys read like fields (``config.pad_token_id``), as 0.6.x code setting attributes from JSON did.
        if name.startswith("__") or name == "extra":
            raise AttributeError(name)
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no field {name!r}{did_you_mean(name, self._specs)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


def _default_of(cls: type, name: str) -> Any:
    item = cls.__dataclass_fields__[name]
    if item.default is not dataclasses.MISSING:
        return item.default
    return item.default_factory()


def _init_checked(config: PretrainedConfig, fields: dict[str, Any], extra: dict[str, Any], source: str | None):
    cls = type(config)
    for name, field_spec in cls._specs.items():
        if name == "extra":
            continue
        value = fields[name] if name in fields else _default_of(cls, name)  # replace() passes every field
        object.__setattr__(config, name, _checked(cls, name, value, field_spec, source))
    object.__setattr__(config, "extra", extra)
    config._normalize_labels(source)
    config._check(source)


def _where(source: str | None) -> str:
    return f" in {source!r}" if source else ""


def did_you_mean(name: str, candidates: Any) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _checked(cls: type, key: str, value: Any, field_spec: FieldSpec, source: str | None) -> Any:
    """``value`` converted to the field's kind, or a ValueError naming class, key, value and file."""
    def fail(expected: str) -> ValueError:
        return ValueError(f"{cls.__name__}: {key}={value!r}{_where(source)}: expected {expected}")

    if value is None:
        if field_spec.optional:
            return None
        raise fail(f"a {field_spec.kind}, not null")
    kind = field_spec.kind
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        value = float(value)
    elif kind == "bool":
        if not isinstance(value, bool):
            raise fail("true or false")
    elif kind == "str":
        if not isinstance(value, str):
            raise fail("a string")
    elif kind in ("list", "tuple"):
        if not isinstance(value, (list, tuple)):
            raise fail("a list")
        value = list(value)
    elif kind == "dict":
        if not isinstance(value, Mapping):
            raise fail("a JSON object")
        value = dict(value)
    _check_range(value, field_spec, fail)
    return value


def _check_range(value: Any, field_spec: FieldSpec, fail: Callable[[str], ValueError]) -> None:
    if field_spec.choices is not None and value not in field_spec.choices:
        raise fail("one of " + ", ".join(repr(choice) for choice in field_spec.choices))
    if field_spec.minimum is not None and value < field_spec.minimum:
        raise fail(f"a value >= {field_spec.minimum}")
    if field_spec.maximum is not None and value > field_spec.maximum:
        raise fail(f"a value <= {field_spec.maximum}")
    if field_spec.above is not None and value <= field_spec.above:
        raise fail(f"a value > {field_spec.above}")


def read_json_object(json_file: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in ``json_file``; a ValueError naming the file when it is not valid JSON or not an object."""
    try:
        with open(json_file, encoding="utf-8") as reader:
            values = json.load(reader)
    except json.JSONDecodeError as error:
        raise ValueError(f"config file {str(json_file)!r} is not valid JSON: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"config file {str(json_file)!r} must hold a JSON object, found {type(values).__name__}")
    return values


configclass(PretrainedConfig)
_BASE_FIELDS = frozenset(item.name for item in dataclasses.fields(PretrainedConfig))


def _constructor_names(model_cls: type) -> set[str]:
    """Keyword names the model class's ``__init__`` chain accepts (every class's, since they pass ``**kwargs``
    up)."""
    import inspect

    names: set[str] = set()
    for klass in model_cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for parameter in list(inspect.signature(init).parameters.values())[1:]:
            if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                names.add(parameter.name)
    # The constructors hand their **kwargs to the parameter factory: seed, rngs, dtype, param_dtype.
    factory = getattr(model_cls, "_factory", None)
    if factory is not None:
        names |= {parameter.name for parameter in inspect.signature(factory).parameters.values()
                  if parameter.kind == parameter.KEYWORD_ONLY and parameter.name != "options"}
    return names


def apply_model_kwargs(model_cls: type, config: PretrainedConfig, inputs: tuple, kwargs: dict[str, Any],
                       config_overrides: Mapping[str, Any] | None) -> tuple[PretrainedConfig, dict[str, Any]]:
    """``from_pretrained``'s keywords -> (config with overrides, constructor keywords).

    A keyword the model's constructor takes goes to it; a config field (``scan_layers=True``) overrides the
    config, as ``config_overrides`` does; anything else is a ValueError with a did-you-mean. When the caller gives
    no ``num_labels`` and the config names one (a Hugging Face classifier's config), the model gets that one.
    """
    accepted = _constructor_names(model_cls)
    constructor, overrides = {}, dict(config_overrides or {})
    config_names = set(config._specs) | set(config.aliases) | config.arguments
    for key, value in kwargs.items():
        if key in accepted:
            constructor[key] = value
        elif key in config_names:
            overrides[key] = value
        else:
            raise ValueError(f"unknown keyword argument {key!r} for {model_cls.__name__}.from_pretrained"
                             f"{did_you_mean(key, accepted | set(config._specs))}")
    config = config.with_overrides(overrides, what="config override")
    if "num_labels" in accepted and "num_labels" not in constructor and not inputs and config.num_labels:
        constructor["num_labels"] = config.num_labels
    return config, constructor
