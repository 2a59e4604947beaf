"""The engine that renames a foreign checkpoint's variables to PyTorch keys, driven by declarative rule tables.

A table (``conversion/tables.py``) is an ordered tuple of :class:`Rule`; every checkpoint name is given to the
first rule whose ``pattern`` matches all of it. A rule names its target key(s) with a template and says how the
array changes on the way (``keep``, ``transpose``, ``squeeze_conv``). A name that no rule matches is an error
naming it and the file, unless it is an optimizer slot (:data:`OPTIMIZER_SLOTS`, the one list of them): a
silently dropped name would hide a checkpoint of another architecture until its missing weights showed up as
wrong outputs.

Templates: ``{1}``, ``{2}``... are the pattern's groups (``{0}`` the whole name), with ``/`` turned into ``.``
(``attn/c_attn`` -> ``attn.c_attn``); ``{n}`` splits the array along its first axis into one key per index (a TF
variable stacking one array per layer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]

# Variables a training run saves beside the weights: Adam's moments (Google's BERT optimizer names them
# adam_m/adam_v, tf.train.AdamOptimizer <var>/Adam and <var>/Adam_1), its beta powers and the step counter.
OPTIMIZER_SLOTS = ("adam_m", "adam_v", "Adam", "Adam_1", "beta1_power", "beta2_power", "global_step")
_OPTIMIZER_SLOT = re.compile(r"(^|/)(" + "|".join(OPTIMIZER_SLOTS) + r")(:\d+)?($|/)")


def is_optimizer_slot(name: str) -> bool:
    """Whether the checkpoint variable ``name`` is optimizer state (any path component in OPTIMIZER_SLOTS)."""
    return _OPTIMIZER_SLOT.search(name) is not None


def keep(array: np.ndarray) -> np.ndarray:
    return array


def transpose(array: np.ndarray) -> np.ndarray:
    """TF kernels and projections are ``[in, out]``; nn.Linear weights (and our PyTorch keys) are ``[out, in]``."""
    return array.T


def squeeze_conv(array: np.ndarray) -> np.ndarray:
    """OpenAI's conv1d kernels are ``[1, in, out]``; GPT's Conv1D (and our Linear) keep ``[in, out]``."""
    return array[0] if array.ndim == 3 and array.shape[0] == 1 else array


@dataclass(frozen=True)
class Rule:
    """``pattern`` (a regular expression matching a whole name) -> ``target`` key template(s), via ``transform``.

    ``if_present``: the rule applies only when the checkpoint also holds that name (a layout variant).
    ``ndim``: the rule applies only to arrays of that rank. ``merge``: every name matching the rule goes into
    the one target key, concatenated along axis 0 in the numeric order of group 1 (a table saved in pieces).
    """

    pattern: str
    target: str | tuple[str, ...]
    transform: Transform = keep
    if_present: str | None = None
    ndim: int | None = None
    merge: bool = False

    def applies(self, name: str, array: np.ndarray, names: Mapping[str, Any]) -> re.Match | None:
        if self.if_present is not None and self.if_present not in names:
            return None
        if self.ndim is not None and array.ndim != self.ndim:
            return None
        return re.fullmatch(self.pattern, name)

    def keys(self, match: re.Match, array: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
        """(PyTorch key, array) pairs for one matched name."""
        groups = [(group or "").replace("/", ".") for group in (match.group(0), *match.groups())]
        converted = self.transform(array)
        for template in (self.target,) if isinstance(self.target, str) else self.target:
            if "{n}" in template:  # one key per index along axis 0
                for index, row in enumerate(converted):
                    yield template.format(*groups, n=index), row
            else:
                yield template.format(*groups), converted


@dataclass(frozen=True)
class RuleTable:
    """An ordered rule list for one checkpoint format; ``kind`` names its weights in errors ("a GPT weight")."""

    title: str
    kind: str
    rules: tuple[Rule, ...]


def apply_rules(table: RuleTable, arrays: Mapping[str, Any], source: str = "the checkpoint") -> dict[str, np.ndarray]:
    """Checkpoint ``{name: array}`` -> ``{PyTorch key: array}`` by ``table``; optimizer slots are skipped.

    Errors name ``source`` (the file) and the offending checkpoint names: names no rule matches, and two names
    landing on one key.
    """
    out: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    pieces: dict[str, list[tuple[int, np.ndarray]]] = {}
    unmatched: list[str] = []
    for name in sorted(arrays):
        if is_optimizer_slot(name):
            continue
        array = np.asarray(arrays[name])
        rule, match = _first_rule(table, name, array, arrays)
        if rule is None:
            unmatched.append(name)
            continue
        for key, value in rule.keys(match, array):
            if rule.merge:
                pieces.setdefault(key, []).append((int(match.group(1)), value))
                continue
            if key in origin:
                raise ValueError(f"{source}: {origin[key]!r} and {name!r} both map to {key!r} ({table.title} rules)")
            out[key], origin[key] = value, name
    if unmatched:
        raise ValueError(_unmatched_message(table, unmatched, source))
    for key, parts in pieces.items():
        if key in origin:
            raise ValueError(f"{source}: {origin[key]!r} and the pieces of {key!r} both map to it "
                             f"({table.title} rules)")
        out[key] = np.concatenate([value for _, value in sorted(parts, key=lambda part: part[0])])
    return out


def _first_rule(table: RuleTable, name: str, array: np.ndarray, names: Mapping[str, Any]):
    for rule in table.rules:
        match = rule.applies(name, array, names)
        if match is not None:
            return rule, match
    return None, None


def _unmatched_message(table: RuleTable, names: list[str], source: str) -> str:
    shown = ", ".join(repr(name) for name in names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    what = f"is not a {table.kind} weight" if len(names) == 1 else f"are not {table.kind} weights"
    return (f"{source}: {shown} {what} (no rule of the {table.title} table matches; besides the weights, only "
            f"optimizer slots ({', '.join(OPTIMIZER_SLOTS)}) may appear in a checkpoint)")
