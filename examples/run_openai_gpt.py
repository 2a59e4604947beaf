#!/usr/bin/env python3
"""Fine-tune OpenAI GPT on the ROCStories cloze test (story + two endings, pick the right one) with
``OpenAIGPTDoubleHeadsModel`` (the pytorch-pretrained-bert 0.6.x ``examples/run_openai_gpt.py``), with the jitted
``jaxformers.training`` step.

Each story becomes two sequences ``_start_ story _delimiter_ ending _classify_``; the multiple-choice head reads
the hidden state at ``_classify_``. Three special tokens are added to the tokenizer and the model's embedding
table (new rows, fine-tuned). The loss is ``--lm_coef * lm_loss + mc_loss``; the optimizer is OpenAIAdam with
linear warmup/decay and weight decay on matrices (not biases). ``--do_eval`` writes ``eval_loss``,
``eval_accuracy`` and ``train_loss`` (mean over the last epoch) to ``eval_results.txt``.

Datasets are the ROCStories CSV files (header, then ``InputStoryid, InputSentence1..4,
RandomFifthSentenceQuiz1, RandomFifthSentenceQuiz2, AnswerRightEnding``), e.g.:

    python examples/run_openai_gpt.py --model_name openai-gpt --do_train --do_eval \\
        --train_dataset "$ROC/cloze_test_val__spring2016 - cloze_test_ALL_val.csv" \\
        --eval_dataset "$ROC/cloze_test_test__spring2016 - cloze_test_ALL_test.csv" \\
        --output_dir log --train_batch_size 16

Differences from the reference: batches have a fixed size (the last incomplete training batch of each epoch is
dropped, so the step compiles once) and the dataset paths are required (no download).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
from typing import Any, Iterator, Sequence

import numpy as np

logger = logging.getLogger("run_openai_gpt")

SPECIAL_TOKENS = ("_start_", "_delimiter_", "_classify_")
NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")

Story = tuple[str, str, str, int]  # story, ending 1, ending 2, index of the right ending (0 or 1)


def load_rocstories_dataset(path: str) -> list[Story]:
    """Rows of a ROCStories cloze CSV (after its header) as ``(story, ending1, ending2, label)``."""
    stories = []
    with open(path, encoding="utf-8", newline="") as stream:
        reader = csv.reader(stream)
        if next(reader, None) is None:
            raise ValueError(f"{path} is empty: expected a ROCStories CSV with a header line")
        for line_number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 8:
                raise ValueError(f"{path}:{line_number}: expected 8 columns (id, 4 sentences, 2 endings, answer), "
                                 f"found {len(row)}")
            try:
                label = int(row[-1]) - 1
            except ValueError:
                raise ValueError(f"{path}:{line_number}: AnswerRightEnding {row[-1]!r} is not 1 or 2") from None
            if label not in (0, 1):
                raise ValueError(f"{path}:{line_number}: AnswerRightEnding {row[-1]!r} is not 1 or 2")
            stories.append((" ".join(row[1:5]), row[5], row[6], label))
    return stories


def encode_stories(stories: Sequence[Story], tokenizer) -> list[tuple[list[int], list[int], list[int], int]]:
    def ids(text: str) -> list[int]:
        return tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))

    return [(ids(story), ids(first), ids(second), label) for story, first, second, label in stories]


def input_length_for(datasets: Sequence[Sequence[tuple]], n_positions: int) -> tuple[int, int]:
    """``(cap_length, input_length)``: story and endings are capped at ``n_positions // 2 - 2`` tokens each;
    sequences are padded to the longest ``start + story + delimiter + ending + classify`` (at most n_positions)."""
    cap = n_positions // 2 - 2
    longest = max(len(story[:cap]) + max(len(first[:cap]), len(second[:cap])) + 3
                  for dataset in datasets for story, first, second, _ in dataset)
    return cap, min(longest, n_positions)


def pre_process_dataset(encoded: Sequence[tuple], input_length: int, cap_length: int, start_token: int,
                        delimiter_token: int, clf_token: int) -> dict[str, np.ndarray]:
    """Model inputs: ``input_ids [n, 2, len]``, ``mc_token_ids [n, 2]`` (position of ``_classify_``),
    ``lm_labels [n, 2, len]`` (the inputs, -1 on padding) and ``mc_labels [n]``."""
    count = len(encoded)
    input_ids = np.zeros((count, 2, input_length), np.int32)
    mc_token_ids = np.zeros((count, 2), np.int32)
    lm_labels = np.full((count, 2, input_length), -1, np.int32)
    mc_labels = np.zeros((count,), np.int32)
    for row, (story, first, second, label) in enumerate(encoded):
        for choice, ending in enumerate((first, second)):
            tokens = [start_token, *story[:cap_length], delimiter_token, *ending[:cap_length], clf_token]
            tokens = tokens[:input_length]
            input_ids[row, choice, :len(tokens)] = tokens
            mc_token_ids[row, choice] = len(tokens) - 1
            lm_labels[row, choice, :len(tokens)] = tokens
        mc_labels[row] = label
    return {"input_ids": input_ids, "mc_token_ids": mc_token_ids, "lm_labels": lm_labels, "mc_labels": mc_labels}


def train_batches(data: dict[str, np.ndarray], batch_size: int, epochs: int, seed: int) -> Iterator[dict]:
    """Shuffled full batches, epoch after epoch, reproducible from ``seed``."""
    count = len(data["mc_labels"])
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(count)
        for start in range(0, count - batch_size + 1, batch_size):
            rows = order[start:start + batch_size]
            yield {name: value[rows] for name, value in data.items()}


def accuracy(logits: np.ndarray, labels: np.ndarray) -> int:
    """Number of rows whose argmax is the label."""
    return int(np.sum(np.argmax(logits, axis=1) == labels))


def make_loss_fn(lm_coef: float):
    def loss_fn(model, batch, dropout_rng):
        lm_loss, mc_loss = model(batch["input_ids"], batch["mc_token_ids"], batch["lm_labels"], batch["mc_labels"],
                                 dropout_rng=dropout_rng)
        return lm_coef * lm_loss + mc_loss

    return loss_fn


def predict_mc_logits(model, batch):
    _, mc_logits = model(batch["input_ids"], batch["mc_token_ids"])
    return mc_logits  # [batch, 2]


def evaluate(context, state, data: dict[str, np.ndarray], batch_size: int) -> dict[str, float]:
    """Mean multiple-choice loss over batches and accuracy over examples, as the reference computes them."""
    from jaxformers.training import make_eval_step, pad_batch

    eval_step = make_eval_step(context, predict_mc_logits)
    count = len(data["mc_labels"])
    total_loss, correct, batches = 0.0, 0, 0
    for start in range(0, count, batch_size):
        batch = {name: value[start:start + batch_size] for name, value in data.items()}
        padded, real = pad_batch(batch, batch_size)
        logits = np.asarray(eval_step(state, context.shard_batch(padded)), np.float64)[:real]
        labels = batch["mc_labels"]
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        total_loss += float(-log_probs[np.arange(real), labels].mean())
        correct += accuracy(logits, labels)
        batches += 1
    return {"eval_loss": total_loss / batches, "eval_accuracy": correct / count}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from jaxformers.training import add_training_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name", type=str, default="openai-gpt", help="shortcut name or model directory")
    parser.add_argument("--train_dataset", type=str, default="", help="ROCStories CSV for training")
    parser.add_argument("--eval_dataset", type=str, default="", help="ROCStories CSV for evaluation")
    parser.add_argument("--max_grad_norm", type=float, default=1.0, help="per-tensor gradient clipping")
    parser.add_argument("--lr_schedule", type=str, default="warmup_linear", help="learning-rate schedule name")
    parser.add_argument("--weight_decay", type=float, default=0.01, help="decay of weight matrices (not biases)")
    parser.add_argument("--lm_coef", type=float, default=0.9, help="weight of the language-modeling loss")
    parser.add_argument("--n_valid", type=int, default=374, help="unused; kept for compatibility")
    add_training_arguments(parser)
    parser.set_defaults(train_batch_size=8, eval_batch_size=16, learning_rate=6.25e-5, warmup_proportion=0.002,
                        num_train_epochs=3)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    # Before any model loads or any file is written: a typo must cost nothing and leave nothing behind.
    from jaxformers.arguments import check_paths

    check_paths(None, files=[("--train_dataset", args.train_dataset), ("--eval_dataset", args.eval_dataset)],
                output_dirs=[("--output_dir", args.output_dir)], models=[("--model_name", args.model_name)])
    if not args.do_train and not args.do_eval:
        raise ValueError("at least one of --do_train or --do_eval must be given")
    if not args.output_dir:
        raise ValueError("--output_dir is required")
    for flag, needed in (("train_dataset", args.do_train), ("eval_dataset", args.do_eval)):
        if needed and not getattr(args, flag):
            raise ValueError(f"--{flag} is required (the ROCStories CSV; nothing is downloaded)")
    if args.num_train_epochs != int(args.num_train_epochs):
        raise ValueError(f"--num_train_epochs must be a whole number, got {args.num_train_epochs}")
    os.makedirs(args.output_dir, exist_ok=True)

    import optax

    from jaxformers.models.openai_gpt import OpenAIGPTDoubleHeadsModel
    from jaxformers.optimization import OpenAIAdam, get_schedule, weight_decay_mask
    from jaxformers.tokenizers.openai_gpt import OpenAIGPTTokenizer
    from jaxformers.training import (
        create_train_state,
        make_train_step,
        model_from_state,
        model_overrides,
        setup_run,
        train_loop,
        write_eval_results,
    )

    setup = setup_run(args)
    precision, mesh = setup.precision, setup.mesh

    # The special tokens get ids after the vocabulary, and new embedding rows that fine-tuning learns.
    tokenizer = OpenAIGPTTokenizer.from_pretrained(args.model_name, special_tokens=list(SPECIAL_TOKENS))
    special_ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    model = OpenAIGPTDoubleHeadsModel.from_pretrained(args.model_name, config_overrides=model_overrides(args))
    model.set_num_special_tokens(len(SPECIAL_TOKENS), seed=args.seed)

    logger.info("Encoding dataset...")
    datasets = {}
    if args.do_train:
        datasets["train"] = encode_stories(load_rocstories_dataset(args.train_dataset), tokenizer)
    if args.do_eval:
        datasets["eval"] = encode_stories(load_rocstories_dataset(args.eval_dataset), tokenizer)
    for name, dataset in datasets.items():
        if not dataset:
            raise ValueError(f"the {name} dataset has no stories")
    cap_length, input_length = input_length_for(list(datasets.values()), model.config.n_positions)
    arrays = {name: pre_process_dataset(dataset, input_length, cap_length, *special_ids)
              for name, dataset in datasets.items()}

    results: dict[str, Any] = {"train_loss": None}
    if args.do_train:
        epochs = int(args.num_train_epochs)
        steps_per_epoch = len(arrays["train"]["mc_labels"]) // args.train_batch_size
        num_steps = steps_per_epoch * epochs
        if num_steps == 0:
            raise ValueError(f"--train_batch_size {args.train_batch_size} is larger than the training set")
        tx = OpenAIAdam(args.learning_rate, warmup=args.warmup_proportion, t_total=num_steps,
                        schedule=args.lr_schedule, max_grad_norm=args.max_grad_norm, weight_decay=args.weight_decay,
                        weight_decay_mask=lambda params: weight_decay_mask(params, NO_DECAY))
        context, state = create_train_state(model, tx, seed=args.seed, precision=precision, mesh=mesh,
                                            fsdp=args.fsdp, optimize_on_cpu=args.optimize_on_cpu)
        step = make_train_step(context, make_loss_fn(args.lm_coef), tx, precision=precision,
                               grad_accum_steps=args.gradient_accumulation_steps)
        schedule = get_schedule(args.lr_schedule, warmup=args.warmup_proportion, t_total=num_steps)
        checkpoint_dir = os.path.join(args.output_dir, "checkpoints") if args.checkpoint_every else None
        state, history = train_loop(
            step, state, train_batches(arrays["train"], args.train_batch_size, epochs, args.seed),
            num_steps=num_steps, context=context, checkpoint_dir=checkpoint_dir,
            checkpoint_every=args.checkpoint_every, desc="Training",
            lr_fn=lambda s: args.learning_rate * float(schedule.get_lr(s + 1, nowarn=True)))
        last_epoch = history[-steps_per_epoch:]
        results["train_loss"] = float(np.mean([entry["loss"] for entry in last_epoch])) if last_epoch else None
        results["train_history"] = history

        # Save, then reload what was saved (as the reference does) so that evaluation uses the files.
        trained = model_from_state(context, state)
        if setup.is_main:
            trained.save_pretrained(args.output_dir, pytorch=True)
            tokenizer.save_vocabulary(args.output_dir)
        model = OpenAIGPTDoubleHeadsModel.from_pretrained(args.output_dir)
        tokenizer = OpenAIGPTTokenizer.from_pretrained(args.output_dir)

    if args.do_eval:
        context, state = create_train_state(model, optax.set_to_zero(), seed=args.seed, precision=precision,
                                            mesh=mesh)
        metrics = evaluate(context, state, arrays["eval"], args.eval_batch_size)
        eval_results = {**metrics, "train_loss": results["train_loss"]}
        write_eval_results(args.output_dir, eval_results)
        results.update(metrics)
    return results


if __name__ == "__main__":
    main()
