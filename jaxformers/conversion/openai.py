"""Convert OpenAI's original GPT checkpoint (numpy shards) to jaxformers (and optionally PyTorch) files.

Example:

    jaxformers convert openai --openai_checkpoint_folder_path finetune-transformer-lm/model --output_dir openai-gpt

The folder holds params_shapes.json and params_0.npy .. params_9.npy (parameters_names.json is checked when
present). Without --config the released model's hyper-parameters are used. The output directory gets
config.json + flax_model.msgpack (+ pytorch_model.bin with --pytorch, which pytorch-pretrained-bert's
OpenAIGPTModel loads; + model.safetensors with --safetensors).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxformers.models.openai_gpt import OpenAIGPTConfig, OpenAIGPTModel

from .readers import read_openai_checkpoint
from .rules import apply_rules
from .tables import OPENAI_NUMPY


def torch_keys_from_openai_numpy(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """OpenAI's released checkpoint folder -> PyTorch keys of an OpenAIGPTModel (``tables.OPENAI_NUMPY``)."""
    return apply_rules(OPENAI_NUMPY, read_openai_checkpoint(directory), source=str(directory))


def load_openai_numpy(model_class: type, directory: str | os.PathLike, inputs: tuple, kwargs: dict[str, Any]) -> Any:
    """``model_class.from_pretrained(directory, from_tf=True, *inputs, **kwargs)``: the config is the folder's
    config.json (or legacy name) when there is one, else the released model's; returns what from_pretrained does."""
    from ..configuration import apply_model_kwargs
    from ..modeling_utils import CONFIG_NAME

    directory = Path(directory)
    config_overrides = kwargs.pop("config_overrides", None)
    output_loading_info = kwargs.pop("output_loading_info", False)
    strict = kwargs.pop("strict", False)
    names = [name for name in (CONFIG_NAME, *model_class.legacy_config_names) if (directory / name).is_file()]
    config = model_class.config_class.from_json_file(directory / names[0]) if names else model_class.config_class()
    config, kwargs = apply_model_kwargs(model_class, config, inputs, kwargs, config_overrides)
    model = model_class(config, *inputs, **kwargs)
    report = model.load_state_dict(torch_keys_from_openai_numpy(directory), strict=strict, source=str(directory))
    return (model, report.as_dict()) if output_loading_info else model


def convert_openai_checkpoint(checkpoint_folder: str, config_file: str | None, output_dir: str,
                              pytorch: bool = False, safetensors: bool = False) -> OpenAIGPTModel:
    from . import load_strictly_and_save

    config = OpenAIGPTConfig(config_file) if config_file else OpenAIGPTConfig()
    return load_strictly_and_save(OpenAIGPTModel(config), torch_keys_from_openai_numpy(checkpoint_folder),
                                  checkpoint_folder, output_dir, pytorch=pytorch, safetensors=safetensors)


SUMMARY = "OpenAI's original GPT release (params_shapes.json + params_{0..9}.npy)"
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from . import add_output_arguments

    parser.add_argument("--openai_checkpoint_folder_path", "--checkpoint", dest="openai_checkpoint_folder_path",
                        required=True, metavar="DIR", help="folder with params_shapes.json and params_{0..9}.npy")
    add_output_arguments(parser, config_aliases=["--openai_config_file"],
                         config_help="OpenAIGPTConfig JSON file (default: the released model's hyper-parameters; "
                                     "0.6.x name --openai_config_file)")


def run(args: argparse.Namespace) -> None:
    from . import check_file, check_output_dir

    folder = Path(args.openai_checkpoint_folder_path)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} does not exist" if not folder.exists()
                                else f"checkpoint folder {str(folder)!r} is not a directory")
    check_file(str(folder / "params_shapes.json"), "checkpoint file")
    check_file(args.config or None, "config file")
    check_output_dir(args.output_dir)
    convert_openai_checkpoint(str(folder), args.config or None, args.output_dir, args.pytorch, args.safetensors)
    print(f"saved to {args.output_dir}")


def main(argv: Sequence[str] | None = None) -> None:
    from . import script_main

    script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
