"""Checkpoint converters: ``jaxformers convert FORMAT ...`` and the scripts in ``conversion/`` run these.

Every converter module has ``SUMMARY`` (one line), ``DESCRIPTION``, ``add_arguments(parser)`` and
``run(args)``; ``main(argv)`` runs it as a script. The arguments meaning the same thing have the same names in
every format (``--output_dir``, ``--config``, ``--pytorch``, ``--safetensors``); the 0.6.x names stay aliases.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

# command-line format name -> module in this package
FORMATS = {
    "bert-tf": "bert_tf",
    "gpt2-tf": "gpt2_tf",
    "openai": "openai",
    "transfo-xl": "transfo_xl",
}


def converter_module(format_name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{FORMATS[format_name]}")


def converter_main(format_name: str) -> Callable[[Sequence[str] | None], None]:
    return converter_module(format_name).main


class _OutputDirImplyingPytorch(argparse.Action):
    """``--pytorch_dump_folder_path DIR`` (0.6.x): the 0.6.x converters always wrote pytorch_model.bin there."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        namespace.output_dir = values
        namespace.pytorch = True


def add_output_arguments(parser: argparse.ArgumentParser, *, config_aliases: Sequence[str], config_help: str) -> None:
    """The arguments every converter shares: where to write, which config, which extra file formats."""
    # Not required=True: argparse would then refuse the alias below, which fills the same destination.
    parser.add_argument("--output_dir", "--dump_folder", dest="output_dir", metavar="DIR", default=None,
                        help="directory that receives config.json + flax_model.msgpack (created if missing; "
                             "required)")
    parser.add_argument("--pytorch_dump_folder_path", action=_OutputDirImplyingPytorch, dest="output_dir",
                        metavar="DIR", help="0.6.x name: same as --output_dir DIR --pytorch")
    parser.add_argument("--config", *config_aliases, dest="config", metavar="FILE", default=None, help=config_help)
    parser.add_argument("--pytorch", action="store_true",
                        help="also write pytorch_model.bin with the 0.6.x key names (needs torch)")
    parser.add_argument("--safetensors", action="store_true", help="also write model.safetensors")


def check_output_dir(path: str | None) -> None:
    """Refuse a missing --output_dir, or one that is an existing file, before any checkpoint is read."""
    from ..cli import UsageError

    if not path:
        raise UsageError("the following arguments are required: --output_dir")
    if Path(path).exists() and not Path(path).is_dir():
        raise FileExistsError(f"output directory {path!r} is an existing file")


def check_file(path: str | None, what: str) -> None:
    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(f"{what} {path!r} does not exist" if not Path(path).exists()
                                else f"{what} {path!r} is not a file")


def check_tf_checkpoint(path: str) -> str:
    """The checkpoint prefix for ``path`` (a prefix, an index file or the folder holding one), or a clear error."""
    from ..tf_checkpoints import find_tf_checkpoint

    if not Path(path).exists() and not Path(path + ".index").is_file():
        raise FileNotFoundError(f"TensorFlow checkpoint {path!r} does not exist (expected {path}.index, "
                                "or a folder holding one *.index file)")
    return find_tf_checkpoint(path)


def load_strictly_and_save(model: Any, arrays: dict[str, Any], source: str, output_dir: str | os.PathLike, *,
                           pytorch: bool, safetensors: bool) -> Any:
    """Load the converted ``{PyTorch key: array}`` into ``model`` (every weight, nothing else) and save it."""
    model.load_state_dict(arrays, strict=True, source=source)
    model.save_pretrained(output_dir, pytorch=pytorch, safetensors=safetensors)
    return model


def configure_convert(parser: argparse.ArgumentParser) -> None:
    """``jaxformers convert FORMAT ...``: one sub-command per format, each listed with its one-line summary."""
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True,
                                    title="formats (jaxformers convert FORMAT --help for its arguments)")
    for name in FORMATS:
        module = converter_module(name)
        sub = formats.add_parser(name, help=module.SUMMARY, description=module.DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(convert=module.run)


def run_convert(args: argparse.Namespace) -> int:
    args.convert(args)
    return 0


def script_main(module: ModuleType, argv: Sequence[str] | None) -> None:
    """Run one converter as a script (``python conversion/convert_*.py``), with the CLI's error handling."""
    from ..cli import Parser, run_parsed

    prog = os.path.basename(sys.argv[0]) if argv is None else module.__name__.rsplit(".", 1)[-1]
    parser = Parser(prog=prog, description=module.DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    code = run_parsed(parser, lambda args: module.run(args) or 0, argv)
    if code:
        raise SystemExit(code)
