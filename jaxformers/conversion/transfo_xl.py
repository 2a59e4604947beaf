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
import io
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


def _reconstruct(cls: Any, base: Any, state: Any) -> PickledRecord:
    # copyreg._reconstructor, used by protocol 0/1 pickles; only our stand-in class may be built.
    if not (isinstance(cls, type) and issubclass(cls, PickledRecord)) or base is not object or state is not None:
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r} from {base!r}")
    return cls.__new__(cls)


def load_original_corpus(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(corpus attributes without the vocabulary, vocabulary attributes)`` from the original corpus pickle.

    Beyond ``jaxformers.safe_pickle``'s plain-data whitelist, only the original Corpus/Vocab classes (as inert
    attribute records) and ``copyreg._reconstructor`` for them are allowed.
    """
    from jaxformers.safe_pickle import RestrictedUnpickler

    class CorpusUnpickler(RestrictedUnpickler):  # the plain-data whitelist, extended
        def __init__(self, stream, source):
            super().__init__(stream, source)
            # Python 2 pickles (the original release) store numpy buffers as str: decode them as latin1.
            pickle.Unpickler.__init__(self, stream, encoding="latin1")

        def find_class(self, module: str, name: str) -> Any:
            if (module, name) in _RECORD_CLASSES:
                return PickledRecord
            if (module, name) in (("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor")):
                return _reconstruct
            if (module, name) in (("builtins", "object"), ("__builtin__", "object")):
                return object
            return super().find_class(module, name)

    source = os.fspath(path)
    with open(source, "rb") as stream:
        payload = stream.read()
    corpus = CorpusUnpickler(io.BytesIO(payload), source).load()
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
                          dump_folder: str | os.PathLike):
    """Build ``TransfoXLLMHeadModel`` from the config, load every TF variable strictly, save it; returns it."""
    from jaxformers.models.transfo_xl import TransfoXLConfig, TransfoXLLMHeadModel
    from jaxformers.tf_checkpoints import find_tf_checkpoint, read_tf_checkpoint

    config = TransfoXLConfig.from_json_file(config_file) if config_file else TransfoXLConfig()
    # The original TF model's same_length mask lets each query see one key more than the PyTorch port's; the
    # converted model (and the config.json written with it) keeps the TF behaviour so its losses match.
    config = TransfoXLConfig.from_dict({**config.to_dict(), "same_length_mask": "tf"})
    checkpoint = find_tf_checkpoint(tf_checkpoint_path)
    logger.info("converting %s with config %s", checkpoint, config)
    model = TransfoXLLMHeadModel(config)
    arrays = model.torch_keys_from_tf(read_tf_checkpoint(checkpoint))
    model.load_state_dict(arrays, strict=True, source=checkpoint)
    model.save_pretrained(dump_folder, pytorch=True)
    logger.info("saved config.json, flax_model.msgpack and pytorch_model.bin to %s", dump_folder)
    return model


def convert_transfo_xl_checkpoint(tf_checkpoint_path: str | None, transfo_xl_config_file: str | None,
                                  pytorch_dump_folder_path: str, transfo_xl_dataset_file: str | None) -> None:
    if not tf_checkpoint_path and not transfo_xl_dataset_file:
        raise ValueError("nothing to convert: give --tf_checkpoint_path and/or --transfo_xl_dataset_file")
    Path(pytorch_dump_folder_path).mkdir(parents=True, exist_ok=True)
    if transfo_xl_dataset_file:
        convert_dataset(transfo_xl_dataset_file, pytorch_dump_folder_path)
    if tf_checkpoint_path:
        convert_tf_checkpoint(tf_checkpoint_path, transfo_xl_config_file, pytorch_dump_folder_path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pytorch_dump_folder_path", "--dump_folder", required=True,
                        help="Folder receiving the converted model and/or vocabulary + corpus.")
    parser.add_argument("--tf_checkpoint_path", default="", help="TensorFlow checkpoint prefix or its directory.")
    parser.add_argument("--transfo_xl_config_file", default="",
                        help="JSON config of the checkpoint (default: the transfo-xl-wt103 architecture).")
    parser.add_argument("--transfo_xl_dataset_file", default="",
                        help="Pre-processed corpus pickle of the original code, converted to vocab.json + corpus.npz.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    convert_transfo_xl_checkpoint(args.tf_checkpoint_path or None, args.transfo_xl_config_file or None,
                                  args.pytorch_dump_folder_path, args.transfo_xl_dataset_file or None)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
