"""Convert OpenAI's original GPT checkpoint (numpy shards) to jaxformers (and optionally PyTorch) files.

    jaxformers convert openai --openai_checkpoint_folder_path finetune-transformer-lm/model \
        --output_dir openai-gpt [--openai_config_file config.json] [--pytorch]

The folder holds ``params_shapes.json`` and ``params_0.npy`` .. ``params_9.npy`` (``parameters_names.json`` is
checked when present). Without a config file the released model's hyper-parameters (``OpenAIGPTConfig()``) are
used. The output directory gets ``config.json`` + ``flax_model.msgpack``, and with ``--pytorch`` also a
``pytorch_model.bin`` that pytorch-pretrained-bert's ``OpenAIGPTModel`` loads.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from jaxformers.models.openai_gpt import OpenAIGPTConfig, OpenAIGPTModel


def convert_openai_checkpoint(checkpoint_folder: str, config_file: str | None, output_dir: str,
                              pytorch: bool = False) -> OpenAIGPTModel:
    config = OpenAIGPTConfig(config_file) if config_file else OpenAIGPTConfig()
    model = OpenAIGPTModel(config)
    arrays = OpenAIGPTModel.torch_keys_from_openai_numpy(checkpoint_folder)
    model.load_state_dict(arrays, strict=True, source=checkpoint_folder)
    model.save_pretrained(output_dir, pytorch=pytorch)
    return model


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--openai_checkpoint_folder_path", required=True,
                        help="folder with params_shapes.json and params_{0..9}.npy")
    parser.add_argument("--output_dir", "--pytorch_dump_folder_path", dest="output_dir", required=True,
                        help="where to write config.json and the weights")
    parser.add_argument("--openai_config_file", default="", help="optional OpenAIGPTConfig JSON file")
    parser.add_argument("--pytorch", action="store_true", help="also write pytorch_model.bin")
    args = parser.parse_args(argv)
    convert_openai_checkpoint(args.openai_checkpoint_folder_path, args.openai_config_file or None, args.output_dir,
                              args.pytorch)
    print(f"saved to {args.output_dir}")


if __name__ == "__main__":
    main()
