"""Convert an original Transformer-XL release (kimiyoung/transformer-xl, TensorFlow) to jaxformers / PyTorch files.

Two independent parts, as in pytorch-pretrained-bert's converter:

* ``--tf_checkpoint_path``: the TensorFlow checkpoint (``model.ckpt-0``...) plus ``--transfo_xl_config_file``
  (a 0.6.x-style JSON; the defaults are transfo-xl-wt103's). Writes ``config.json``, ``flax_model.msgpack`` and
  ``pytorch_model.bin`` (the reference's key names, loadable with ``strict=True`` by pytorch_pretrained_bert /
  pytorch_transformers). The written config sets ``same_length_mask: "tf"``, the original code's attention
  mask under ``same_length`` (the PyTorch libraries always use their own, which hides one more key).
* ``--transfo_xl_dataset_file``: the pre-processed corpus pickle of the original code (``cache.pkl``: a
  ``data_utils.Corpus`` holding a ``vocabulary.Vocab``). It is read with a restricted unpickler that only builds
  plain data (no code from the file runs) and written as ``vocab.json`` + ``corpus.npz``, which
  ``TransfoXLTokenizer`` / ``TransfoXLCorpus.from_pretrained`` read. No pickles are written.

Usage::

    jaxformers convert transfo-xl --pytorch_dump_folder_path out/ \\
        --tf_checkpoint_path model.ckpt-0 --transfo_xl_config_file config.json \\
        --transfo_xl_dataset_file cache.pkl
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger("convert_transfo_xl")


# ------------------------------------------------------------------------------------------------ the corpus


class PickledRecord:
    """Stand-in for the original code's ``Corpus`` / ``Vocab`` classes: unpickling fills ``__dict__`` only."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"expected a dict of attributes, got {type(state).__name__}")
        self.__dict__.update(state)


# Classes the original code pickles, by (module, name) as the pickle names them.
_RECORD_CLASSES = {
    ("data_utils", "Corpus"), ("data_utils", "Vocab"), ("vocabulary", "Vocab"),
    ("data_utils", "TransfoXLCorpus"), ("data_utils", "TransfoXLTokenizer"),
}


def load_original_corpus(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(corpus attributes without the vocabulary, vocabulary attributes)`` from the original corpus pickle.

    Beyond ``jaxformers.safe_pickle``'s plain-data whitelist, only the original Corpus/Vocab classes (as inert
    attribute records) and ``copyreg._reconstructor`` for them are allowed.
    """
    from jaxformers.safe_pickle import load_pickled_data

    source = os.fspath(path)
    # Python 2 pickles (the original release) store numpy buffers as str: decoded as latin1.
    corpus = load_pickled_data(source, records={name: PickledRecord for name in _RECORD_CLASSES}, encoding="latin1")
    state = corpus.__dict__ if isinstance(corpus, PickledRecord) else corpus
    if not isinstance(state, dict):
        raise ValueError(f"{source!r} holds a {type(corpus).__name__}, expected a Transformer-XL corpus")
    state = dict(state)
    vocab = state.pop("vocab", None)
    vocab_state = vocab.__dict__ if isinstance(vocab, PickledRecord) else vocab
    if not isinstance(vocab_state, dict):
        raise ValueError(f"{source!r}: the corpus has no vocabulary ('vocab' attribute)")
    return state, dict(vocab_state)


def convert_dataset(dataset_file: str | os.PathLike, dump_folder: str | os.PathLike) -> tuple[str, str]:
    """Write ``vocab.json`` and ``corpus.npz`` for the original corpus pickle; returns both paths."""
    from jaxformers.tokenizers import transfo_xl as data

    corpus_state, vocab_state = load_original_corpus(dataset_file)
    corpus = data.TransfoXLCorpus()
    corpus.vocab._apply_state(vocab_state, os.fspath(dataset_file))
    dataset = corpus_state.get("dataset")
    if dataset is not None and dataset not in data.DATASETS:
        raise ValueError(f"{os.fspath(dataset_file)!r}: unknown dataset {dataset!r}")
    corpus.dataset = dataset
    for split in ("train", "valid", "test"):
        setattr(corpus, split, data._normalize_split(corpus_state.get(split), f"split {split!r}"))
    paths = corpus.save_pretrained(dump_folder)
    logger.info("saved vocabulary to %s and corpus to %s", *paths)
    return paths


# ------------------------------------------------------------------------------------------------ the model


def convert_tf_checkpoint(tf_checkpoint_path: str | os.PathLike, config_file: str | os.PathLike | None,
                          dump_folder: str | os.PathLike, *, pytorch: bool = True, safetensors: bool = False):
    """Build ``TransfoXLLMHeadModel`` from the config, load every TF variable strictly, save it; returns it."""
    from jaxformers.models.transfo_xl import TransfoXLConfig, TransfoXLLMHeadModel
    from jaxformers.tf_checkpoints import find_tf_checkpoint, read_tf_checkpoint

    from . import load_strictly_and_save

    config = TransfoXLConfig.from_json_file(config_file) if config_file else TransfoXLConfig()
    # The original TF model's same_length mask lets each query see one key more than the PyTorch port's; the
    # converted model (and the config.json written with it) keeps the TF behaviour so its losses match.
    config = TransfoXLConfig.from_dict({**config.to_dict(), "same_length_mask": "tf"})
    checkpoint = find_tf_checkpoint(tf_checkpoint_path)
    logger.info("converting %s with config %s", checkpoint, config)
    model = TransfoXLLMHeadModel(config)
    arrays = model.torch_keys_from_tf(read_tf_checkpoint(checkpoint), source=checkpoint)
    load_strictly_and_save(model, arrays, checkpoint, dump_folder, pytorch=pytorch, safetensors=safetensors)
    logger.info("saved the converted model to %s", dump_folder)
    return model


def convert_transfo_xl_checkpoint(tf_checkpoint_path: str | None, transfo_xl_config_file: str | None,
                                  pytorch_dump_folder_path: str, transfo_xl_dataset_file: str | None, *,
                                  pytorch: bool = True, safetensors: bool = False) -> None:
    if not tf_checkpoint_path and not transfo_xl_dataset_file:
        raise ValueError("nothing to convert: give --tf_checkpoint_path and/or --transfo_xl_dataset_file")
    Path(pytorch_dump_folder_path).mkdir(parents=True, exist_ok=True)
    if transfo_xl_dataset_file:
        convert_dataset(transfo_xl_dataset_file, pytorch_dump_folder_path)
    if tf_checkpoint_path:
        convert_tf_checkpoint(tf_checkpoint_path, transfo_xl_config_file, pytorch_dump_folder_path, pytorch=pytorch,
                              safetensors=safetensors)


SUMMARY = "Transformer-XL TensorFlow release (model.ckpt) and/or its corpus pickle (cache.pkl)"
DESCRIPTION = """Convert an original Transformer-XL release (kimiyoung/transformer-xl, TensorFlow).

Two independent parts, as in pytorch-pretrained-bert's converter:
  --tf_checkpoint_path: the TensorFlow checkpoint plus --config (a 0.6.x-style JSON; default: transfo-xl-wt103's).
      Writes config.json + flax_model.msgpack (+ pytorch_model.bin with --pytorch, loadable with strict=True by
      pytorch_pretrained_bert / pytorch_transformers). The config keeps the original TF same_length mask.
  --transfo_xl_dataset_file: the corpus pickle of the original code (cache.pkl), read without running code from
      it, written as vocab.json + corpus.npz.

Example:

    jaxformers convert transfo-xl --tf_checkpoint_path transfo_xl/model.ckpt --config config.json \\
        --transfo_xl_dataset_file cache.pkl --output_dir transfo-xl-wt103 --pytorch
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from . import add_output_arguments

    parser.add_argument("--tf_checkpoint_path", "--checkpoint", dest="tf_checkpoint_path", default="", metavar="PATH",
                        help="TensorFlow checkpoint prefix (model.ckpt-0) or the folder holding it")
    add_output_arguments(parser, config_aliases=["--transfo_xl_config_file"],
                         config_help="JSON config of the checkpoint (default: the transfo-xl-wt103 architecture; "
                                     "0.6.x name --transfo_xl_config_file)")
    parser.add_argument("--transfo_xl_dataset_file", default="", metavar="FILE",
                        help="pre-processed corpus pickle of the original code, written as vocab.json + corpus.npz")


def run(args: argparse.Namespace) -> None:
    from . import check_file, check_output_dir, check_tf_checkpoint
    from ..cli import UsageError

    if not args.tf_checkpoint_path and not args.transfo_xl_dataset_file:
        raise UsageError("nothing to convert: give --tf_checkpoint_path and/or --transfo_xl_dataset_file")
    check_file(args.config or None, "config file")
    check_file(args.transfo_xl_dataset_file or None, "dataset file")
    check_output_dir(args.output_dir)
    if args.tf_checkpoint_path:
        check_tf_checkpoint(args.tf_checkpoint_path)
    logging.basicConfig(level=logging.INFO)
    convert_transfo_xl_checkpoint(args.tf_checkpoint_path or None, args.config or None, args.output_dir,
                                  args.transfo_xl_dataset_file or None, pytorch=args.pytorch,
                                  safetensors=args.safetensors)


def main(argv: Sequence[str] | None = None) -> None:
    from . import script_main

    script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
