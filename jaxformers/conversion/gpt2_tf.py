"""Convert OpenAI's GPT-2 TensorFlow checkpoint to jaxformers (and optionally PyTorch) files.

Example:

    jaxformers convert gpt2-tf --gpt2_checkpoint_path models/117M/model.ckpt --output_dir gpt2 --pytorch

The config comes from --config, else from the hparams.json released beside the checkpoint, else the 117M
defaults. The output directory gets config.json + flax_model.msgpack (+ pytorch_model.bin with --pytorch, which
pytorch-pretrained-bert's GPT2Model loads; + model.safetensors with --safetensors). Needs tensorflow
(pip install 'jaxformers[tf]').
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from jaxformers.models.gpt2 import GPT2Config, GPT2Model
from jaxformers.tf_checkpoints import find_tf_checkpoint, read_tf_checkpoint


def convert_gpt2_checkpoint(checkpoint_path: str, config_file: str | None, output_dir: str,
                            pytorch: bool = False, safetensors: bool = False) -> GPT2Model:
    prefix = find_tf_checkpoint(checkpoint_path)
    hparams = Path(prefix).parent / "hparams.json"
    if config_file:
        config = GPT2Config(config_file)
    elif hparams.is_file():
        config = GPT2Config.from_json_file(hparams)
    else:
        config = GPT2Config()
    from . import load_strictly_and_save

    arrays = GPT2Model.torch_keys_from_tf(read_tf_checkpoint(prefix), source=prefix)
    return load_strictly_and_save(GPT2Model(config), arrays, prefix, output_dir, pytorch=pytorch,
                                  safetensors=safetensors)


SUMMARY = "OpenAI's GPT-2 TensorFlow checkpoint (model.ckpt, hparams.json)"
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from . import add_output_arguments

    parser.add_argument("--gpt2_checkpoint_path", "--checkpoint", dest="gpt2_checkpoint_path", required=True,
                        metavar="PATH", help="checkpoint prefix (.../model.ckpt) or the folder holding it")
    add_output_arguments(parser, config_aliases=["--gpt2_config_file"],
                         config_help="GPT2Config JSON file (default: hparams.json beside the checkpoint, else the "
                                     "117M model's; 0.6.x name --gpt2_config_file)")


def run(args: argparse.Namespace) -> None:
    from . import check_file, check_output_dir, check_tf_checkpoint

    check_file(args.config or None, "config file")
    check_output_dir(args.output_dir)
    check_tf_checkpoint(args.gpt2_checkpoint_path)
    convert_gpt2_checkpoint(args.gpt2_checkpoint_path, args.config or None, args.output_dir, args.pytorch,
                            args.safetensors)
    print(f"saved to {args.output_dir}")


def main(argv: Sequence[str] | None = None) -> None:
    from . import script_main

    script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
