"""Auto classes: pick the jaxformers config, tokenizer or model class from a checkpoint's ``model_type``.

``AutoModelForSequenceClassification.from_pretrained("some/dir")`` reads the directory's config (``config.json``,
or a family's legacy name such as ``bert_config.json``), takes its ``model_type`` (``bert``, ``openai-gpt``,
``gpt2``, ``transfo-xl``) and forwards every argument to that family's class, e.g.
``BertForSequenceClassification.from_pretrained``. Hub repository ids and the 0.6.x shortcut names work as they
do for the classes themselves (the config is fetched through the Hugging Face cache).

Configs without ``model_type`` (0.6.x files, OpenAI's ``hparams.json``) are recognised by their keys. A
``model_type`` we do not implement, or a head a family does not have, is a ValueError naming both.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar

# model_type -> (module, config class, tokenizer module, tokenizer class)
_FAMILIES: dict[str, tuple[str, str, str, str]] = {
    "bert": ("bert", "BertConfig", "bert", "BertTokenizer"),
    "openai-gpt": ("openai_gpt", "OpenAIGPTConfig", "openai_gpt", "OpenAIGPTTokenizer"),
    "gpt2": ("gpt2", "GPT2Config", "gpt2", "GPT2Tokenizer"),
    "transfo-xl": ("transfo_xl", "TransfoXLConfig", "transfo_xl", "TransfoXLTokenizer"),
}
# Other spellings of model_type found in config files (transformers renamed openai-gpt's, 0.6.x had none).
_MODEL_TYPE_ALIASES = {"openai": "openai-gpt", "transfo_xl": "transfo-xl", "openai_gpt": "openai-gpt"}

# task -> model_type -> class name. Missing entries are heads the family does not have.
_HEADS: dict[str, dict[str, str]] = {
    "base": {"bert": "BertModel", "openai-gpt": "OpenAIGPTModel", "gpt2": "GPT2Model",
             "transfo-xl": "TransfoXLModel"},
    # As in transformers, the GPT families' pre-training model is their language-model head.
    "pretraining": {"bert": "BertForPreTraining", "openai-gpt": "OpenAIGPTLMHeadModel",
                    "gpt2": "GPT2LMHeadModel", "transfo-xl": "TransfoXLLMHeadModel"},
    "masked_lm": {"bert": "BertForMaskedLM"},
    "causal_lm": {"openai-gpt": "OpenAIGPTLMHeadModel", "gpt2": "GPT2LMHeadModel",
                  "transfo-xl": "TransfoXLLMHeadModel"},
    "sequence_classification": {"bert": "BertForSequenceClassification"},
    "token_classification": {"bert": "BertForTokenClassification"},
    "question_answering": {"bert": "BertForQuestionAnswering"},
    "multiple_choice": {"bert": "BertForMultipleChoice"},
}
# Config file names tried in a model directory, in order.
_CONFIG_FILES = ("config.json", "bert_config.json", "openai_gpt_config.json", "hparams.json")
_TOKENIZER_CONFIG = "tokenizer_config.json"


def _family(model_type: str, source: str) -> tuple[str, str, str, str]:
    key = _MODEL_TYPE_ALIASES.get(model_type, model_type)
    if key not in _FAMILIES:
        raise ValueError(f"{source}: model_type {model_type!r} is not implemented by jaxformers "
                         f"(supported: {', '.join(_FAMILIES)})")
    return _FAMILIES[key]


def _model_type_from_keys(values: dict[str, Any], source: str) -> str:
    """model_type of a config without one, from the fields only one family has."""
    if "model_type" in values:
        return _MODEL_TYPE_ALIASES.get(values["model_type"], values["model_type"])
    if "n_token" in values or "cutoffs" in values or "div_val" in values:
        return "transfo-xl"
    if "afn" in values:
        return "openai-gpt"
    if "n_embd" in values or "n_ctx" in values:
        return "gpt2"
    if "hidden_size" in values and "type_vocab_size" in values:
        return "bert"
    raise ValueError(f"{source}: no model_type, and its keys match no family jaxformers implements "
                     f"({', '.join(_FAMILIES)})")


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as stream:
            values = json.load(stream)
    except json.JSONDecodeError as error:
        raise ValueError(f"config file {path!r} is not valid JSON: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"config file {path!r} must hold a JSON object, found {type(values).__name__}")
    return values


def _hub_options(kwargs: dict[str, Any]):
    """The hub options in ``kwargs`` (left in place: the class's own from_pretrained needs them too)."""
    from .file_utils import HubOptions

    return HubOptions.pop_from(dict(kwargs), kwargs.get("cache_dir"))


def _resolve_file(name: str, filenames: tuple[str, ...], kwargs: dict[str, Any]) -> str | None:
    """Local path of the first of `filenames` a directory, shortcut name or hub repository has (None: none)."""
    if os.path.isdir(name):
        return next((os.path.join(name, f) for f in filenames if os.path.isfile(os.path.join(name, f))), None)
    from .file_utils import pretrained_file

    options = _hub_options(kwargs)
    for filename in filenames:
        try:
            return pretrained_file(name, filename, options)
        except FileNotFoundError:
            continue
    return None


def _config_file(name: str, kwargs: dict[str, Any]) -> str:
    path = _resolve_file(name, _CONFIG_FILES, kwargs)
    if path is None:
        raise OSError(f"no model config ({', '.join(_CONFIG_FILES)}) found for {name!r}")
    return path


def _import(module: str, name: str, package: str = "models") -> Any:
    return getattr(importlib.import_module(f"jaxformers.{package}.{module}"), name)


def model_type_of(pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> str:
    """The ``model_type`` of a checkpoint directory, shortcut name or hub repository id."""
    path = _config_file(os.fspath(pretrained_model_name_or_path), kwargs)
    return _model_type_from_keys(_read_json(path), path)


class AutoConfig:
    """``AutoConfig.from_pretrained(dir or name)``: the config of the checkpoint's family (BertConfig...)."""

    def __init__(self) -> None:
        raise TypeError("AutoConfig is not instantiated: use AutoConfig.from_pretrained(...) or .for_model(...)")

    @staticmethod
    def config_class_for(model_type: str) -> type:
        module, config_name, _, _ = _family(model_type, "AutoConfig")
        return _import(module, config_name)

    @classmethod
    def for_model(cls, model_type: str, *args: Any, **kwargs: Any) -> Any:
        """A fresh config of `model_type` (``"bert"``...), built with the family's config constructor."""
        return cls.config_class_for(model_type)(*args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
        """Read the checkpoint's config file into its family's config class; hub options (``revision``,
        ``token``, ``cache_dir``, ``local_files_only``...) apply to the download."""
        path = _config_file(os.fspath(pretrained_model_name_or_path), kwargs)
        model_type = _model_type_from_keys(_read_json(path), path)
        module, config_name, _, _ = _family(model_type, path)
        return _import(module, config_name).from_json_file(path)


class AutoTokenizer:
    """``AutoTokenizer.from_pretrained(dir or name)``: the family's tokenizer, chosen by tokenizer_config.json's
    ``tokenizer_class`` or else the model config's ``model_type``; arguments go to its ``from_pretrained``."""

    _BY_CLASS_NAME: ClassVar[dict[str, str]] = {
        "BertTokenizer": "bert", "BertTokenizerFast": "bert", "GPT2Tokenizer": "gpt2", "GPT2TokenizerFast": "gpt2",
        "OpenAIGPTTokenizer": "openai-gpt", "OpenAIGPTTokenizerFast": "openai-gpt",
        "TransfoXLTokenizer": "transfo-xl",
    }
    # transformers' family-less tokenizer over tokenizer.json (5.x names it TokenizersBackend): the model config's
    # model_type picks the family, and that tokenizer refuses a tokenizer.json of another model type by name.
    _GENERIC_CLASS_NAMES: ClassVar[frozenset[str]] = frozenset({"PreTrainedTokenizerFast", "TokenizersBackend"})

    def __init__(self) -> None:
        raise TypeError("AutoTokenizer is not instantiated: use AutoTokenizer.from_pretrained(...)")

    @classmethod
    def tokenizer_class_for(cls, model_type: str) -> type:
        _, _, module, tokenizer_name = _family(model_type, "AutoTokenizer")
        return _import(module, tokenizer_name, package="tokenizers")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        name = os.fspath(pretrained_model_name_or_path)
        settings_path = _resolve_file(name, (_TOKENIZER_CONFIG,), kwargs)
        class_name = _read_json(settings_path).get("tokenizer_class") if settings_path else None
        if class_name is not None and class_name not in cls._GENERIC_CLASS_NAMES:
            if class_name not in cls._BY_CLASS_NAME:
                raise ValueError(f"{settings_path}: tokenizer_class {class_name!r} is not implemented by jaxformers "
                                 f"(supported: {', '.join(sorted(cls._BY_CLASS_NAME))})")
            model_type = cls._BY_CLASS_NAME[class_name]
        else:
            model_type = model_type_of(name, **kwargs)
        return cls.tokenizer_class_for(model_type).from_pretrained(name, *args, **kwargs)


class _AutoModel:
    """Shared dispatch of the AutoModel* classes; ``task`` names the head."""

    task: ClassVar[str] = "base"

    def __init__(self) -> None:
        raise TypeError(f"{type(self).__name__} is not instantiated: use {type(self).__name__}.from_pretrained(...)"
                        f" or .from_config(config)")

    @classmethod
    def model_class_for(cls, model_type: str, source: str = "") -> type:
        """The jaxformers class of this head for `model_type`; ValueError naming both when there is none."""
        module = _family(model_type, source or cls.__name__)[0]
        key = _MODEL_TYPE_ALIASES.get(model_type, model_type)
        class_name = _HEADS[cls.task].get(key)
        if class_name is None:
            families = ", ".join(_HEADS[cls.task])
            raise ValueError(f"{cls.__name__}: model_type {model_type!r}{f' ({source})' if source else ''} has no "
                             f"{cls.task.replace('_', ' ')} head in jaxformers (families with one: {families})")
        return _import(module, class_name)

    @classmethod
    def from_config(cls, config: Any, *args: Any, **kwargs: Any) -> Any:
        """A randomly initialised model of this head for `config` (a jaxformers config instance)."""
        return cls.model_class_for(type(config).model_type)(config, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """Find the checkpoint's model_type and call that class's ``from_pretrained`` with every argument."""
        name = os.fspath(pretrained_model_name_or_path)
        lookup = dict(kwargs)
        if args and "cache_dir" not in lookup:
            lookup["cache_dir"] = args[0]  # the classes' first positional argument after the name
        if lookup.get("from_tf") or (len(args) > 1 and args[1]):
            model_type = _model_type_of_tf_checkpoint(name, lookup)
            source = name
        else:
            source = _config_file(name, lookup)
            model_type = _model_type_from_keys(_read_json(source), source)
        return cls.model_class_for(model_type, source).from_pretrained(name, *args, **kwargs)


def _model_type_of_tf_checkpoint(name: str, kwargs: dict[str, Any]) -> str:
    """A TF checkpoint directory has a config beside it (or only OpenAI's params_shapes.json)."""
    directory = name if os.path.isdir(name) else os.path.dirname(name)
    path = _resolve_file(directory, _CONFIG_FILES, kwargs)
    if path is not None:
        return _model_type_from_keys(_read_json(path), path)
    if (Path(directory) / "params_shapes.json").is_file():
        return "openai-gpt"
    raise OSError(f"no model config ({', '.join(_CONFIG_FILES)}) beside the TensorFlow checkpoint {name!r}")


class AutoModel(_AutoModel):
    """The family's bare model (BertModel, GPT2Model, OpenAIGPTModel, TransfoXLModel)."""

    task = "base"


class AutoModelForPreTraining(_AutoModel):
    """BertForPreTraining; the GPT families' language-model heads."""

    task = "pretraining"


class AutoModelForMaskedLM(_AutoModel):
    """BertForMaskedLM."""

    task = "masked_lm"


class AutoModelForCausalLM(_AutoModel):
    """GPT2LMHeadModel, OpenAIGPTLMHeadModel, TransfoXLLMHeadModel."""

    task = "causal_lm"


class AutoModelForSequenceClassification(_AutoModel):
    """BertForSequenceClassification (``num_labels`` from the config or the arguments)."""

    task = "sequence_classification"


class AutoModelForTokenClassification(_AutoModel):
    """BertForTokenClassification."""

    task = "token_classification"


class AutoModelForQuestionAnswering(_AutoModel):
    """BertForQuestionAnswering."""

    task = "question_answering"


class AutoModelForMultipleChoice(_AutoModel):
    """BertForMultipleChoice."""

    task = "multiple_choice"


__all__ = [
    "AutoConfig",
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoModelForMaskedLM",
    "AutoModelForMultipleChoice",
    "AutoModelForPreTraining",
    "AutoModelForQuestionAnswering",
    "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification",
    "AutoTokenizer",
    "model_type_of",
]
