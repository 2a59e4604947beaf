"""Google's BERT TensorFlow checkpoint -> jaxformers (and optionally PyTorch) files.

    jaxformers convert bert-tf --tf_checkpoint_path uncased_L-12_H-768_A-12/bert_model.ckpt \\
        --bert_config_file uncased_L-12_H-768_A-12/bert_config.json --output_dir bert-base-uncased --pytorch

Needs tensorflow (``pip install 'jaxformers[tf]'``).
"""

from __future__ import annotations

import argparse
import os
from typing import Sequence

from ..tf_checkpoints import find_tf_checkpoint, read_tf_checkpoint


def convert_bert_tf_checkpoint(
    tf_checkpoint_path: str | os.PathLike,
    bert_config_file: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    model_class: str = "BertForPreTraining",
    pytorch: bool = False,
    safetensors: bool = False,
) -> None:
    """Google's BERT TF checkpoint -> ``output_dir`` with config.json + flax_model.msgpack (and PyTorch files)."""
    from ..models import bert

    config = bert.BertConfig.from_json_file(bert_config_file)
    model = getattr(bert, model_class)(config)
    arrays = read_tf_checkpoint(find_tf_checkpoint(tf_checkpoint_path))
    model.load_state_dict(model.torch_keys_from_tf(arrays), strict=True, source=str(tf_checkpoint_path))
    model.save_pretrained(output_dir, pytorch=pytorch, safetensors=safetensors)


def add_bert_tf_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tf_checkpoint_path", required=True, help="checkpoint prefix, e.g. .../bert_model.ckpt")
    parser.add_argument("--bert_config_file", required=True, help="bert_config.json of the checkpoint")
    parser.add_argument("--output_dir", required=True, help="directory to write config.json + weights into")
    parser.add_argument("--model_class", default="BertForPreTraining")
    parser.add_argument("--pytorch", action="store_true", help="also write pytorch_model.bin (0.6.x key names)")
    parser.add_argument("--safetensors", action="store_true", help="also write model.safetensors")


def run_bert_tf(args: argparse.Namespace) -> None:
    convert_bert_tf_checkpoint(
        args.tf_checkpoint_path, args.bert_config_file, args.output_dir,
        model_class=args.model_class, pytorch=args.pytorch, safetensors=args.safetensors,
    )
    print(f"wrote {args.output_dir}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bert_tf_arguments(parser)
    run_bert_tf(parser.parse_args(argv))
