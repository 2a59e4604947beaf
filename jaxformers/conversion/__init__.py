"""Checkpoint converters: ``jaxformers convert FORMAT ...`` and the scripts in ``conversion/`` run these."""

import importlib
from typing import Callable, Sequence

# command-line format name -> module in this package (each has ``main(argv)``)
FORMATS = {
    "bert-tf": "bert_tf",
    "gpt2-tf": "gpt2_tf",
    "openai": "openai",
    "transfo-xl": "transfo_xl",
}


def converter_main(format_name: str) -> Callable[[Sequence[str] | None], None]:
    return importlib.import_module(f"{__name__}.{FORMATS[format_name]}").main
