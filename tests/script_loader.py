"""Import the repository's scripts (examples/, conversion/) by path: those folders are not packages."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(relative_path: str) -> ModuleType:
    """Execute ``REPO/relative_path`` as a fresh module registered under its file stem, so that scripts importing
    each other (``run_swag`` imports ``run_squad``, ``run_squad`` imports ``squad``) find the loaded one."""
    path = REPO / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
