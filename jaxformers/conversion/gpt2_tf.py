"""Convert OpenAI's GPT-2 TensorFlow checkpoint to jaxformers (and optionally PyTorch) files.

    jaxformers convert gpt2-tf --gpt2_checkpoint_path models/117M/model.ckpt \
        --output_dir gpt2 [--gpt2_config_file config.json] [--pytorch]

The config comes from ``--gpt2_config_file``, else from the ``hparams.json`` released beside the checkpoint,
else the 117M defaults (``GPT2Config()``). Needs tensorflow (``pip install 'jaxformers[tf]'``). The output
directory gets ``config.json`` + ``flax_model.msgpack``, and with ``--pytorch`` also a ``pytorch_model.bin`` that
pytorch-pretrained-bert's ``GPT2Model`` loads.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from jaxformers.models.gpt2 import GPT2Config, GPT2Model
from jaxformers.tf_checkpoints import find_tf_checkpoint, read_tf_checkpoint


def convert_gpt2_checkpoint(checkpoint_path: str, config_file: str | None, output_dir: str,
                            pytorch: bool = False) -> GPT2Model:
    prefix = find_tf_checkpoint(checkpoint_path)
    hparams = Path(prefix).parent / "hparams.json"
    if config_file:
        config = GPT2Config(config_file)
    elif hparams.is_file():
        config = GPT2Config.from_json_file(hparams)
    else:
        config = GPT2Config()
    model = GPT2Model(config)
    model.load_state_dict(GPT2Model.torch_keys_from_tf(read_tf_checkpoint(prefix)), strict=True, source=prefix)
    model.save_pretrained(output_dir, pytorch=pytorch)
    return model


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpt2_checkpoint_path", required=True,
                        help="checkpoint prefix (model.ckpt) or the folder holding it")
    parser.add_argument("--output_dir", "--pytorch_dump_folder_path", dest="output_dir", required=True,
                        help="where to write config.json and the weights")
    parser.add_argument("--gpt2_config_file", default="", help="optional GPT2Config JSON file")
    parser.add_argument("--pytorch", action="store_true", help="also write pytorch_model.bin")
    args = parser.parse_args(argv)
    convert_gpt2_checkpoint(args.gpt2_checkpoint_path, args.gpt2_config_file or None, args.output_dir, args.pytorch)
    print(f"saved to {args.output_dir}")


if __name__ == "__main__":
    main()
