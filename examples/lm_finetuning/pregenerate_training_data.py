#!/usr/bin/env python3
"""Pregenerate BERT pre-training instances (masked LM + next-sentence pairs) from a text corpus, one JSON file per
epoch (the pytorch-pretrained-bert 0.6.x ``examples/lm_finetuning/pregenerate_training_data.py``).

Corpus format: one sentence per line, documents separated by blank lines (at least two documents, so that
random "next sentences" can come from another document).

Output in ``--output_dir``: ``epoch_N.json`` (one instance per line: ``tokens``, ``segment_ids``,
``is_random_next``, ``masked_lm_positions``, ``masked_lm_labels``) and ``epoch_N_metrics.json``
(``num_training_examples``, ``max_seq_len``), read by ``finetune_on_pregenerated.py``.

Masking follows Google's BERT: ``--masked_lm_prob`` of the tokens (at most ``--max_predictions_per_seq``),
each replaced by ``[MASK]`` 80% of the time, a random vocabulary token 10%, itself 10%;
``--do_whole_word_mask`` masks all WordPieces of a word together. Unlike the reference, ``--seed`` makes the
output reproducible (each epoch draws from its own seeded generator, whatever ``--num_workers``).

    python examples/lm_finetuning/pregenerate_training_data.py --train_corpus corpus.txt \\
        --bert_model bert-base-uncased --do_lower_case --output_dir training/ --epochs_to_generate 3
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import random
import shelve
import tempfile
from multiprocessing import Pool
from pathlib import Path
from typing import NamedTuple, Sequence

Document = list[list[str]]  # sentences of WordPiece tokens


class DocumentDatabase:
    """Tokenized documents, in memory or (``reduce_memory``) in a temporary on-disk shelf."""

    def __init__(self, reduce_memory: bool = False):
        self._temp_dir = tempfile.TemporaryDirectory() if reduce_memory else None
        self._shelf = (shelve.open(str(Path(self._temp_dir.name) / "shelf.db"), flag="n", protocol=-1)
                       if reduce_memory else None)
        self._documents: list[Document] = []
        self.doc_lengths: list[int] = []  # sentences per document
        self._cumulative: list[int] = []

    def add_document(self, document: Document) -> None:
        if not document:
            return
        if self._shelf is not None:
            self._shelf[str(len(self.doc_lengths))] = document
        else:
            self._documents.append(document)
        self.doc_lengths.append(len(document))
        self._cumulative.append((self._cumulative[-1] if self._cumulative else 0) + len(document))

    def __len__(self) -> int:
        return len(self.doc_lengths)

    def __getitem__(self, index: int) -> Document:
        return self._shelf[str(index)] if self._shelf is not None else self._documents[index]

    def sample_doc(self, current_idx: int, rng: random.Random, sentence_weighted: bool = True) -> Document:
        """Another document than ``current_idx``; with ``sentence_weighted``, each *sentence* of the other
        documents is equally likely, so long documents are picked proportionally more often."""
        if len(self) < 2:
            raise ValueError("need at least two documents to sample a random next sentence")
        if sentence_weighted:
            total = self._cumulative[-1]
            # Draw a sentence position outside the current document, wrapping around the end of the corpus.
            start = self._cumulative[current_idx]
            sentence = rng.randrange(start, start + total - self.doc_lengths[current_idx]) % total
            sampled = bisect.bisect_right(self._cumulative, sentence)
        else:
            sampled = (current_idx + rng.randrange(1, len(self))) % len(self)
        assert sampled != current_idx
        return self[sampled]

    def close(self) -> None:
        if self._shelf is not None:
            self._shelf.close()
            self._temp_dir.cleanup()
            self._shelf = None

    def __enter__(self) -> "DocumentDatabase":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def truncate_seq_pair(tokens_a: list[str], tokens_b: list[str], max_num_tokens: int, rng: random.Random) -> None:
    """Trim the longer sequence, from the front or the back at random (avoids a positional bias), in place."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        assert len(longer) >= 1
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


class MaskedLmInstance(NamedTuple):
    index: int
    label: str


def create_masked_lm_predictions(tokens: list[str], masked_lm_prob: float, max_predictions_per_seq: int,
                                 whole_word_mask: bool, vocab_list: Sequence[str], rng: random.Random
                                 ) -> tuple[list[str], list[int], list[str]]:
    """Mask ``round(len(tokens) * masked_lm_prob)`` tokens (at least 1, at most ``max_predictions_per_seq``).

    Candidates are all tokens but ``[CLS]``/``[SEP]``, grouped into whole words (a ``##`` piece joins the
    previous group) with ``whole_word_mask``. A word that would overshoot the budget is skipped. Returns the
    modified ``tokens`` (changed in place), the sorted masked positions and their original tokens.
    """
    candidates: list[list[int]] = []
    for index, token in enumerate(tokens):
        if token in ("[CLS]", "[SEP]"):
            continue
        if whole_word_mask and candidates and token.startswith("##"):
            candidates[-1].append(index)
        else:
            candidates.append([index])

    num_to_mask = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))))
    rng.shuffle(candidates)
    masked: list[MaskedLmInstance] = []
    covered: set[int] = set()
    for word in candidates:
        if len(masked) >= num_to_mask:
            break
        if len(masked) + len(word) > num_to_mask or covered.intersection(word):
            continue
        for index in word:
            covered.add(index)
            if rng.random() < 0.8:
                replacement = "[MASK]"
            elif rng.random() < 0.5:
                replacement = tokens[index]
            else:
                replacement = rng.choice(vocab_list)
            masked.append(MaskedLmInstance(index, tokens[index]))
            tokens[index] = replacement

    masked.sort(key=lambda instance: instance.index)
    return tokens, [m.index for m in masked], [m.label for m in masked]


def create_instances_from_document(doc_database: DocumentDatabase, doc_idx: int, max_seq_length: int,
                                   short_seq_prob: float, masked_lm_prob: float, max_predictions_per_seq: int,
                                   whole_word_mask: bool, vocab_list: Sequence[str], rng: random.Random
                                   ) -> list[dict]:
    """Sentence-pair instances from one document, as in Google's BERT ``create_pretraining_data.py``.

    Sentences are gathered into chunks of about ``max_seq_length - 3`` tokens (shorter with probability
    ``short_seq_prob``); a chunk splits at a random sentence boundary into A and B, and half of the time (always
    when the chunk is one sentence) B is replaced by text from a random other document (``is_random_next``), the
    unused sentences being put back for the next chunk.
    """
    document = doc_database[doc_idx]
    max_num_tokens = max_seq_length - 3  # [CLS] A [SEP] B [SEP]
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    instances = []
    chunk: list[list[str]] = []
    chunk_length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target_seq_length:
            if chunk:
                a_end = rng.randrange(1, len(chunk)) if len(chunk) >= 2 else 1
                tokens_a = list(itertools.chain.from_iterable(chunk[:a_end]))
                tokens_b: list[str] = []
                if len(chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    random_document = doc_database.sample_doc(doc_idx, rng, sentence_weighted=True)
                    for sentence in random_document[rng.randrange(0, len(random_document)):]:
                        tokens_b.extend(sentence)
                        if len(tokens_b) >= target_b_length:
                            break
                    i -= len(chunk) - a_end  # the unused sentences start the next chunk
                else:
                    is_random_next = False
                    tokens_b = list(itertools.chain.from_iterable(chunk[a_end:]))
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                if not tokens_a or not tokens_b:
                    raise ValueError(f"document {doc_idx} produced an empty segment (max_seq_len too small?)")

                tokens = ["[CLS]", *tokens_a, "[SEP]", *tokens_b, "[SEP]"]
                segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
                tokens, positions, labels = create_masked_lm_predictions(
                    tokens, masked_lm_prob, max_predictions_per_seq, whole_word_mask, vocab_list, rng)
                instances.append({
                    "tokens": tokens,
                    "segment_ids": segment_ids,
                    "is_random_next": is_random_next,
                    "masked_lm_positions": positions,
                    "masked_lm_labels": labels,
                })
            chunk = []
            chunk_length = 0
        i += 1
    return instances


def read_corpus(path: Path, tokenizer, docs: DocumentDatabase) -> None:
    """Blank lines end documents; every other line is a sentence, tokenized with ``tokenizer``."""
    from tqdm import tqdm

    document: Document = []
    with path.open(encoding="utf-8") as reader:
        for line in tqdm(reader, desc="Loading Dataset", unit=" lines"):
            line = line.strip()
            if not line:
                docs.add_document(document)
                document = []
            else:
                tokens = tokenizer.tokenize(line)
                if tokens:
                    document.append(tokens)
    docs.add_document(document)  # a last document without a trailing blank line


def write_epoch(args: argparse.Namespace, docs: DocumentDatabase, vocab_list: Sequence[str], epoch: int) -> int:
    """Write ``epoch_{epoch}.json`` and its metrics file; returns the number of instances."""
    rng = random.Random(f"{args.seed}-{epoch}")
    num_instances = 0
    epoch_path = args.output_dir / f"epoch_{epoch}.json"
    partial = epoch_path.with_suffix(".json.partial")
    with partial.open("w", encoding="utf-8") as writer:
        for doc_idx in range(len(docs)):
            for instance in create_instances_from_document(
                    docs, doc_idx, max_seq_length=args.max_seq_len, short_seq_prob=args.short_seq_prob,
                    masked_lm_prob=args.masked_lm_prob, max_predictions_per_seq=args.max_predictions_per_seq,
                    whole_word_mask=args.do_whole_word_mask, vocab_list=vocab_list, rng=rng):
                writer.write(json.dumps(instance) + "\n")
                num_instances += 1
    partial.replace(epoch_path)  # a crashed run never leaves a truncated epoch behind
    metrics = {"num_training_examples": num_instances, "max_seq_len": args.max_seq_len}
    (args.output_dir / f"epoch_{epoch}_metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return num_instances


def _write_epoch_in_worker(job):
    return write_epoch(*job)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train_corpus", type=Path, required=True,
                        help="text file: one sentence per line, blank lines between documents")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--bert_model", type=str, required=True,
                        help="shortcut name or directory whose vocab.txt tokenizes the corpus")
    parser.add_argument("--do_lower_case", action="store_true")
    parser.add_argument("--do_whole_word_mask", action="store_true",
                        help="mask whole words (all their WordPieces) rather than single WordPieces")
    parser.add_argument("--reduce_memory", action="store_true",
                        help="keep the tokenized corpus on disk rather than in memory (large corpora)")
    parser.add_argument("--num_workers", type=int, default=1, help="processes writing epochs in parallel")
    parser.add_argument("--epochs_to_generate", type=int, default=3, help="number of epochs of data to pregenerate")
    parser.add_argument("--max_seq_len", type=int, default=128)
    parser.add_argument("--short_seq_prob", type=float, default=0.1,
                        help="probability of making a shorter sequence as a training example")
    parser.add_argument("--masked_lm_prob", type=float, default=0.15, help="probability of masking each token")
    parser.add_argument("--max_predictions_per_seq", type=int, default=20,
                        help="maximum number of tokens to mask in each sequence")
    parser.add_argument("--seed", type=int, default=42, help="makes the generated data reproducible")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # Before any model loads or any file is written: a typo must cost nothing and leave nothing behind.
    from jaxformers.arguments import check_paths

    check_paths(None, files=[("--train_corpus", args.train_corpus)], output_dirs=[("--output_dir", args.output_dir)],
                models=[("--bert_model", args.bert_model)])
    if args.num_workers > 1 and args.reduce_memory:
        raise ValueError("--num_workers > 1 cannot be combined with --reduce_memory (the shelf is per process)")
    if args.max_seq_len < 5:
        raise ValueError(f"--max_seq_len must be at least 5 ([CLS] a [SEP] b [SEP]), got {args.max_seq_len}")

    from jaxformers.tokenizers.bert import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(args.bert_model, do_lower_case=args.do_lower_case)
    vocab_list = list(tokenizer.vocab.keys())
    with DocumentDatabase(reduce_memory=args.reduce_memory) as docs:
        read_corpus(args.train_corpus, tokenizer, docs)
        if len(docs) <= 1:
            raise SystemExit(
                f"ERROR: no document breaks found in {args.train_corpus}. Random next sentences must come from "
                "another document: separate documents with blank lines (at least two documents; any natural "
                "boundary such as chapters, sections or paragraphs will do).")
        args.output_dir.mkdir(parents=True, exist_ok=True)
        from tqdm import tqdm

        jobs = [(args, docs, vocab_list, epoch) for epoch in range(args.epochs_to_generate)]
        if args.num_workers > 1:
            with Pool(min(args.num_workers, args.epochs_to_generate)) as pool:
                counts = list(tqdm(pool.imap(_write_epoch_in_worker, jobs), total=len(jobs), desc="Epoch"))
        else:
            counts = [write_epoch(*job) for job in tqdm(jobs, desc="Epoch")]
    print(f"wrote {args.epochs_to_generate} epochs to {args.output_dir}: {counts} instances")


if __name__ == "__main__":
    main()
