#!/usr/bin/env python3
"""Evaluate a Transformer-XL language model on a tokenized corpus split: loss and perplexity, as the
pytorch-pretrained-bert 0.6.x ``examples/run_transfo_xl.py`` does, with each segment run by one jitted call.

The split is cut into ``--batch_size`` parallel streams and read ``--tgt_len`` tokens at a time; memories of
``--mem_len`` steps carry context from one segment to the next (``--ext_len`` extra context tokens are fed in
front of each segment). The loss is the mean negative log-likelihood per token, perplexity its exponential.

The corpus (``vocab.json`` + ``corpus.npz`` written by ``TransfoXLCorpus.save_pretrained``, or the 0.6.x
``vocab.bin`` + ``corpus.bin``) is read from ``--corpus`` (default: the model directory / shortcut name).

Unlike the reference script, ``--clamp_len`` and ``--same_length`` are applied to the transformer (the reference
set them on the LM-head wrapper, where they had no effect), and ``--ext_len > 0`` works (the 1.2.0 head scored
the extended context too).

    python examples/run_transfo_xl.py --model_name transfo-xl-wt103 --split test --tgt_len 128 --mem_len 1600
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger("run_transfo_xl")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name", type=str, default="transfo-xl-wt103",
                        help="shortcut name or a directory written by save_pretrained / the converter")
    parser.add_argument("--corpus", type=str, default=None,
                        help="corpus directory or shortcut name (default: --model_name)")
    parser.add_argument("--split", type=str, default="test", choices=["all", "valid", "test"])
    parser.add_argument("--batch_size", type=int, default=10)
    parser.add_argument("--tgt_len", type=int, default=128, help="tokens predicted per segment")
    parser.add_argument("--ext_len", type=int, default=0, help="extra context tokens fed before each segment")
    parser.add_argument("--mem_len", type=int, default=1600, help="memory length (steps kept from past segments)")
    parser.add_argument("--clamp_len", type=int, default=1000, help="max relative distance (<= 0: no clamping)")
    parser.add_argument("--same_length", action="store_true", help="every position attends to as many keys")
    parser.add_argument("--work_dir", type=str, default="LM-TFM", help="log.txt and eval_results.json go here")
    parser.add_argument("--no_progress", action="store_true", help="no tqdm progress bar")
    parser.add_argument("--model_parallel", type=int, default=1,
                        help="split the model over N devices (tensor parallelism: heads, MLP columns, vocabulary)")
    args = parser.parse_args(argv)
    for name in ("batch_size", "tgt_len"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    for name in ("ext_len", "mem_len"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    from jaxformers.arguments import check_paths

    check_paths(parser, output_dirs=[("--work_dir", args.work_dir)],
                models=[("--model_name", args.model_name), ("--corpus", args.corpus)])
    return args


def evaluate(step, iterator, show_progress: bool, desc: str) -> tuple[float, int, float]:
    """``(mean loss per token, segments, seconds)`` over every segment of `iterator`, memories carried along."""
    import numpy as np
    from tqdm import tqdm

    total_loss, total_len, segments = 0.0, 0, 0
    mems = None
    start = time.time()
    for data, target, seq_len in tqdm(iterator, total=iterator.n_batch, desc=desc, disable=not show_progress):
        nll, mems = step(data, target, mems)
        # Segment mean weighted by its length, as the reference: the last segment may be shorter.
        total_loss += seq_len * float(np.mean(np.asarray(nll, dtype=np.float64)))
        total_len += seq_len
        segments += 1
    if total_len == 0:
        raise ValueError(f"the {desc} split is too short for batch size {iterator.bsz}: no segment to evaluate")
    return total_loss / total_len, segments, time.time() - start


def format_log(loss: float, split: str) -> str:
    return f"| {split} loss {loss:5.2f} | {split} ppl {math.exp(loss):9.3f} "


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    log_format = logging.Formatter("%(asctime)s - %(name)s - %(message)s")
    logging.basicConfig(level=logging.INFO, format=log_format._fmt, handlers=[logging.StreamHandler()], force=True)

    from jaxformers.evaluation import make_eval_step
    from jaxformers.models.transfo_xl import TransfoXLLMHeadModel
    from jaxformers.tokenizers.transfo_xl import TransfoXLCorpus
    from jaxformers.training import place_model

    corpus = TransfoXLCorpus.from_pretrained(args.corpus or args.model_name)
    model = place_model(TransfoXLLMHeadModel.from_pretrained(args.model_name), args)
    # Only now, with the corpus and model loaded, does the run leave files: a failed start creates no work_dir.
    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    log_file = logging.FileHandler(work_dir / "log.txt")
    log_file.setFormatter(log_format)
    logging.getLogger().addHandler(log_file)
    logger.info("%s", vars(args))
    if len(corpus.vocab) != model.config.n_token:
        raise ValueError(f"the corpus vocabulary has {len(corpus.vocab)} symbols but the model has n_token="
                         f"{model.config.n_token}: they do not belong together")
    model.eval()
    model.reset_length(args.tgt_len, args.ext_len, args.mem_len)
    model.transformer.clamp_len = args.clamp_len
    model.transformer.same_length = bool(args.same_length or model.config.same_length)
    step = make_eval_step(model)

    splits = ["valid", "test"] if args.split == "all" else [args.split]
    results: dict[str, Any] = {}
    for split in splits:
        iterator = corpus.get_iterator(split, args.batch_size, args.tgt_len, ext_len=args.ext_len)
        loss, segments, seconds = evaluate(step, iterator, not args.no_progress, split)
        logger.info("Time : %.2fs, %.2fms/segment", seconds, 1000 * seconds / max(segments, 1))
        results[f"{split}_loss"] = loss
        results[f"{split}_ppl"] = math.exp(loss)
    line = "".join(format_log(results[f"{split}_loss"], split) for split in splits)
    logger.info("=" * 100)
    logger.info(line)
    logger.info("=" * 100)
    with open(work_dir / "eval_results.json", "w", encoding="utf-8") as writer:
        json.dump(results, writer, indent=2)
    return results


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[1]))
    main()
