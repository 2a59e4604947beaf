"""Checks of command-line paths, run right after parsing, before any model loads or any file is written.

The example scripts call ``check_paths(parser, ...)``: the first problem becomes ``parser.error(...)`` (usage,
exit 2), naming the flag and the path, so a typo costs no model load and leaves no empty output directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterable


def looks_like_path(name: str) -> bool:
    """True for names that can only be paths (not a shortcut name nor a hub id ``org/name``)."""
    return (os.path.isabs(name) or name.startswith(("~", ".")) or name.count("/") > 1
            or (os.sep != "/" and os.sep in name) or name.endswith((".tar.gz", ".tgz", ".json", ".bin")))


def model_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a from_pretrained source, or None: a path that does not exist is refused here;
    shortcut names and hub ids are left to from_pretrained (it names what it could not find)."""
    path = Path(name).expanduser()
    if path.exists():
        return None
    if looks_like_path(name):
        return f"{name!r} does not exist (expected a checkpoint directory or archive, a shortcut name or a hub id)"
    return None


def path_problem(path: str, kind: str) -> str | None:
    """``kind``: "file", "dir" or "output_dir" (absent is fine, an existing file is not)."""
    target = Path(path).expanduser()
    if kind == "output_dir":
        return f"{path!r} is an existing file, not a directory" if target.exists() and not target.is_dir() else None
    if not target.exists():
        return f"{path!r} does not exist"
    if kind == "file" and not target.is_file():
        return f"{path!r} is not a file"
    if kind == "dir" and not target.is_dir():
        return f"{path!r} is not a directory"
    return None


def check_paths(parser: argparse.ArgumentParser | None, *, files: Iterable[tuple[str, str | None]] = (),
                dirs: Iterable[tuple[str, str | None]] = (), output_dirs: Iterable[tuple[str, str | None]] = (),
                models: Iterable[tuple[str, str | None]] = ()) -> None:
    """Each argument: ``(flag, value)`` pairs; a value of None (flag not given) is skipped. Without a parser the
    error is printed as argparse does (``prog: error: ...``, exit 2)."""
    problems = [f"{flag}: {path_problem(str(value), kind)}"
                for kind, pairs in (("file", files), ("dir", dirs), ("output_dir", output_dirs))
                for flag, value in pairs if value and path_problem(str(value), kind)]
    problems += [f"{flag}: {model_name_problem(value)}" for flag, value in models if value and model_name_problem(value)]
    if not problems:
        return
    if parser is not None:
        parser.error(problems[0])
    print(f"{os.path.basename(sys.argv[0])}: error: {problems[0]}", file=sys.stderr)
    raise SystemExit(2)
