"""Google's BERT TensorFlow checkpoint -> jaxformers (and optionally PyTorch) files.

Example:

    jaxformers convert bert-tf --tf_checkpoint_path uncased_L-12_H-768_A-12/bert_model.ckpt \\
        --config uncased_L-12_H-768_A-12/bert_config.json --output_dir bert-base-uncased --pytorch

The output directory gets config.json + flax_model.msgpack (+ pytorch_model.bin with --pytorch, + model.safetensors
with --safetensors). Needs tensorflow (pip install 'jaxformers[tf]').
"""

from __future__ import annotations

import argparse
import os
import sys
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
    prefix = find_tf_checkpoint(tf_checkpoint_path)
    from . import load_strictly_and_save

    arrays = model.torch_keys_from_tf(read_tf_checkpoint(prefix), source=prefix)
    load_strictly_and_save(model, arrays, prefix, output_dir, pytorch=pytorch, safetensors=safetensors)


SUMMARY = "Google's BERT TensorFlow checkpoint (bert_model.ckpt + bert_config.json)"
DESCRIPTION = __doc__
MODEL_CLASSES = ("BertForPreTraining", "BertModel", "BertForMaskedLM", "BertForNextSentencePrediction",
                 "BertForSequenceClassification", "BertForMultipleChoice", "BertForTokenClassification",
                 "BertForQuestionAnswering")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from . import add_output_arguments

    parser.add_argument("--tf_checkpoint_path", "--checkpoint", dest="tf_checkpoint_path", required=True,
                        metavar="PATH", help="checkpoint prefix (.../bert_model.ckpt) or the folder holding it")
    add_output_arguments(parser, config_aliases=["--bert_config_file"],
                         config_help="bert_config.json of the checkpoint (required; 0.6.x name --bert_config_file)")
    parser.add_argument("--model_class", "--model-class", dest="model_class", default="BertForPreTraining",
                        choices=MODEL_CLASSES, metavar="CLASS",
                        help="BERT class to build, one of: " + ", ".join(MODEL_CLASSES) + " (default BertForPreTraining, "
                             "which holds every weight of Google's release)")


def run(args: argparse.Namespace) -> None:
    from . import check_file, check_output_dir, check_tf_checkpoint
    from ..cli import UsageError

    if args.config is None:
        raise UsageError("--config (bert_config.json) is required for a BERT checkpoint")
    check_file(args.config, "config file")
    check_output_dir(args.output_dir)
    check_tf_checkpoint(args.tf_checkpoint_path)
    convert_bert_tf_checkpoint(
        args.tf_checkpoint_path, args.config, args.output_dir,
        model_class=args.model_class, pytorch=args.pytorch, safetensors=args.safetensors,
    )
    print(f"wrote {args.output_dir}")


def main(argv: Sequence[str] | None = None) -> None:
    from . import script_main

    script_main(sys.modules[__name__], argv)
