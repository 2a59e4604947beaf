"""Shared config base: JSON I/O compatible with both 0.6.x ``*_config.json`` files and today's HF ``config.json``."""

from __future__ import annotations

import copy
import json
import os
from typing import Any, ClassVar

from .file_utils import atomic_write


class PretrainedConfig:
    """Base of every model config.

    Subclasses write their own ``__init__`` with the 0.6.x signature and set ``model_type``. ``key_aliases``
    maps other spellings (HF's newer names) to ours; keys we don't know are kept as attributes and written back
    out, so a config read from the hub round-trips unchanged.

    Runtime switches that are not architecture (``scan_layers``, ``remat``) live here too so they travel with
    the model; they default off and the 0.6.x reference ignores them.
    """

    model_type: ClassVar[str] = ""
    key_aliases: ClassVar[dict[str, str]] = {}
    # First positional argument of the 0.6.x constructors: an int (vocab size) or the path of a JSON file.
    vocab_argument: ClassVar[str] = "vocab_size"

    scan_layers: bool = False
    remat: bool = False

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PretrainedConfig":
        config = cls.__new__(cls)
        config._set_defaults()
        config.update(values)
        return config

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> "PretrainedConfig":
        try:
            with open(json_file, encoding="utf-8") as reader:
                values = json.load(reader)
        except json.JSONDecodeError as error:
            raise ValueError(f"config file {str(json_file)!r} is not valid JSON: {error}") from error
        if not isinstance(values, dict):
            raise ValueError(f"config file {str(json_file)!r} must hold a JSON object, found {type(values).__name__}")
        return cls.from_dict(values)

    def _set_defaults(self) -> None:
        """Fill every field with its default by running ``__init__`` with a placeholder vocabulary size."""
        type(self).__init__(self, -1)

    def update(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            setattr(self, self.key_aliases.get(key, key), value)

    def _init_from_first_argument(self, first: int | str | os.PathLike, **fields: Any) -> None:
        """0.6.x constructors accept either a vocabulary size or a JSON path as first argument."""
        if isinstance(first, (str, os.PathLike)):
            for key, value in fields.items():
                setattr(self, key, value)
            with open(first, encoding="utf-8") as reader:
                self.update(json.load(reader))
        elif isinstance(first, int):
            setattr(self, self.vocab_argument, first)
            for key, value in fields.items():
                setattr(self, key, value)
        else:
            raise ValueError(
                f"first argument must be the vocabulary size (int) or the path to a config JSON file, "
                f"got {type(first).__name__}: {first!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.__dict__)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file: str | os.PathLike) -> None:
        with atomic_write(json_file, "w") as writer:
            writer.write(self.to_json_string())

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"
