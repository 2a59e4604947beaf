#!/usr/bin/env python3
"""Fine-tune BERT's masked-LM and next-sentence heads on a text corpus, masking on the fly (the
pytorch-pretrained-bert 0.6.x ``examples/lm_finetuning/simple_lm_finetuning.py``), with the jitted
``jaxformers.training`` step.

Corpus format: one sentence per line, documents separated by blank lines. Each example is a line (A) and, half
of the time, the next line of its document (B, ``is_next = 0``), otherwise a random line of the corpus
(``is_next = 1``). Every WordPiece is masked with probability 15% (then ``[MASK]`` 80%, a random token 10%,
unchanged 10%), drawn afresh every epoch. ``--seed`` makes all of it reproducible.

The corpus is always held in memory (``--on_memory`` is accepted for compatibility).

    python examples/lm_finetuning/simple_lm_finetuning.py --train_corpus corpus.txt --bert_model bert-base-uncased \\
        --do_lower_case --output_dir finetuned_lm/ --do_train --num_train_epochs 3
"""

from __future__ import annotations

import argparse
import logging
import math
import random
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from finetune_on_pregenerated import (
    add_lm_arguments,
    check_training_args,
    load_pretraining_model,
    save_model_and_vocab,
    train_pretraining,
    write_history,
)

logger = logging.getLogger("simple_lm_finetuning")


class BERTDataset:
    """Sentence pairs for next-sentence prediction, with masked-LM features built per access.

    ``len()`` follows the reference: every line that has a next line in its document, minus one.
    """

    def __init__(self, corpus_path: str | Path, tokenizer, seq_len: int, encoding: str = "utf-8"):
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.vocab_tokens = list(tokenizer.vocab)
        self.documents: list[list[str]] = []
        self.sample_to_doc: list[tuple[int, int]] = []  # (document, line) of each line with a successor
        self.corpus_lines = 0
        document: list[str] = []
        with open(corpus_path, encoding=encoding) as reader:
            for line in reader:
                line = line.strip()
                if line:
                    self.sample_to_doc.append((len(self.documents), len(document)))
                    document.append(line)
                    self.corpus_lines += 1
                elif document:
                    self._close_document(document)
                    document = []
        if document:
            self._close_document(document)
        if len(self.documents) < 2:
            raise ValueError(f"{corpus_path}: need at least two documents (separated by a blank line) to draw "
                             "random next sentences from another document")
        self.num_docs = len(self.documents)

    def _close_document(self, document: list[str]) -> None:
        self.documents.append(document)
        self.sample_to_doc.pop()  # the last line has no next sentence

    def __len__(self) -> int:
        # The reference's count, one below the number of usable lines.
        return self.corpus_lines - self.num_docs - 1

    def random_sentence_pair(self, index: int, rng: random.Random) -> tuple[str, str, int]:
        """``(a, b, is_next_label)``: label 0 when b really follows a, 1 when b is a random line."""
        doc_id, line = self.sample_to_doc[index]
        first, second = self.documents[doc_id][line], self.documents[doc_id][line + 1]
        if rng.random() > 0.5:
            return first, second, 0
        return first, self.random_line(doc_id, rng), 1

    def random_line(self, current_doc: int, rng: random.Random) -> str:
        """A random line, preferably (10 tries) from another document than ``current_doc``."""
        for _ in range(10):
            doc_id = rng.randrange(len(self.documents))
            document = self.documents[doc_id]
            line = document[rng.randrange(len(document))]
            if doc_id != current_doc:
                break
        return line

    def random_word(self, tokens: list[str], rng: random.Random) -> tuple[list[str], list[int]]:
        """Mask each token with probability 15% (80% [MASK], 10% random token, 10% kept), in place.
        Returns the tokens and the label ids (-1 where not masked)."""
        labels = []
        vocab = self.tokenizer.vocab
        for index, token in enumerate(tokens):
            probability = rng.random()
            if probability < 0.15:
                probability /= 0.15
                if probability < 0.8:
                    tokens[index] = "[MASK]"
                elif probability < 0.9:
                    tokens[index] = rng.choice(self.vocab_tokens)
                labels.append(vocab[token] if token in vocab else vocab["[UNK]"])
            else:
                labels.append(-1)
        return tokens, labels

    def features(self, index: int, rng: random.Random) -> dict[str, np.ndarray]:
        """``[CLS] a [SEP] b [SEP]`` padded to ``seq_len`` with masked-LM labels and the next-sentence label."""
        text_a, text_b, is_next = self.random_sentence_pair(index, rng)
        tokens_a, tokens_b = self.tokenizer.tokenize(text_a), self.tokenizer.tokenize(text_b)
        while len(tokens_a) + len(tokens_b) > self.seq_len - 3:
            (tokens_a if len(tokens_a) > len(tokens_b) else tokens_b).pop()
        tokens_a, labels_a = self.random_word(tokens_a, rng)
        tokens_b, labels_b = self.random_word(tokens_b, rng)
        tokens = ["[CLS]", *tokens_a, "[SEP]", *tokens_b, "[SEP]"]
        labels = [-1, *labels_a, -1, *labels_b, -1]
        length = len(tokens)
        out = {
            "input_ids": np.zeros(self.seq_len, np.int32),
            "input_mask": np.zeros(self.seq_len, np.int32),
            "segment_ids": np.zeros(self.seq_len, np.int32),
            "lm_label_ids": np.full(self.seq_len, -1, np.int32),
            "is_next": np.int32(is_next),
        }
        out["input_ids"][:length] = self.tokenizer.convert_tokens_to_ids(tokens)
        out["input_mask"][:length] = 1
        out["segment_ids"][len(tokens_a) + 2:length] = 1
        out["lm_label_ids"][:length] = labels
        return out


def epoch_batches(dataset: BERTDataset, epochs: int, batch_size: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
    """Shuffled full batches, epoch after epoch; pairs and masks are redrawn every epoch, reproducibly."""
    for epoch in range(epochs):
        rng = random.Random(f"{seed}-{epoch}")
        order = list(range(len(dataset)))
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            rows = [dataset.features(index, rng) for index in order[start:start + batch_size]]
            yield {name: np.stack([row[name] for row in rows]) for name in rows[0]}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train_corpus", type=str, required=True,
                        help="text file: one sentence per line, blank lines between documents")
    parser.add_argument("--bert_model", type=str, required=True, help="shortcut name or model directory")
    parser.add_argument("--on_memory", action="store_true", help="accepted for compatibility (always in memory)")
    add_lm_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    # Before any model loads or any file is written: a typo must cost nothing and leave nothing behind.
    from jaxformers.arguments import check_paths

    check_paths(None, files=[("--train_corpus", args.train_corpus)], output_dirs=[("--output_dir", args.output_dir)],
                models=[("--bert_model", args.bert_model)])
    if not args.do_train:
        raise ValueError("nothing to do: pass --do_train")
    if args.group_by_length:  # its sentence pairs are drawn while batching: no lengths to group by beforehand
        raise ValueError("--group_by_length is not available here: pregenerate the data (pregenerate_training_data.py)"
                         " and use finetune_on_pregenerated.py --group_by_length")
    check_training_args(args)
    from jaxformers.tokenizers.bert import BertTokenizer
    from jaxformers.training import setup_run

    setup = setup_run(args)

    tokenizer = BertTokenizer.from_pretrained(args.bert_model, do_lower_case=args.do_lower_case)
    dataset = BERTDataset(args.train_corpus, tokenizer, seq_len=args.max_seq_length)
    epochs = math.ceil(args.num_train_epochs)
    steps_per_epoch = len(dataset) // args.train_batch_size
    num_steps = int(steps_per_epoch * args.num_train_epochs)
    if num_steps == 0:
        raise ValueError(f"--train_batch_size {args.train_batch_size} is larger than the {len(dataset)} "
                         "examples: no full batch to train on")
    logger.info("***** Running training *****\n  Num examples = %d\n  Batch size = %d\n  Num steps = %d",
                len(dataset), args.train_batch_size, num_steps)
    model = load_pretraining_model(args)
    batches = epoch_batches(dataset, epochs, args.train_batch_size, args.seed)
    model, history = train_pretraining(model, batches, num_steps, args, setup)
    if history:
        logger.info("loss: first step %.4f, last step %.4f", history[0]["loss"], history[-1]["loss"])
    save_model_and_vocab(model, tokenizer, args.output_dir)
    write_history(args.output_dir, history)
    return history


if __name__ == "__main__":
    main()
