#!/usr/bin/env python3
"""Fine-tune BERT on SWAG (multiple choice): the pytorch-pretrained-bert 0.6.2 ``examples/run_swag.py`` on
jaxformers' jit-compiled training engine.

``--data_dir`` holds the SWAG CSV files ``train.csv`` and ``val.csv`` (header ``,video-id,fold-ind,startphrase,
sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label``). Each example becomes four inputs
``[CLS] sent1 [SEP] sent2 ending_i [SEP]``, scored by ``BertForMultipleChoice`` (``num_choices=4``); training
minimizes the cross-entropy over the four scores with BertAdam (warmup, weight decay except biases/LayerNorm,
pooler frozen as in the reference). ``--do_eval`` writes ``eval_loss``, ``eval_accuracy``, ``global_step`` and
``loss`` to ``eval_results.txt``.

    python examples/run_swag.py --bert_model bert-base-uncased --do_train --do_lower_case --do_eval \\
        --data_dir $SWAG_DIR/data --train_batch_size 16 --learning_rate 2e-5 --num_train_epochs 3.0 \\
        --max_seq_length 80 --output_dir /tmp/swag_output/ --gradient_accumulation_steps 4

Columns are found by their header names, so files with or without the leading unnamed index column both work.
As in run_squad.py, the schedule length is the real number of optimizer steps and a last partial batch is
padded with zero-weight rows. ``loss`` in eval_results.txt is the mean training loss of the last epoch (the
reference divided the last epoch's summed loss by the steps of all epochs).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_squad import (  # after the sys.path line that makes it importable
    bert_adam_without_pooler,
    pad_rows,
    train_batches,
    weighted_nll,
)

logger = logging.getLogger("run_swag")

NUM_CHOICES = 4
ENDING_COLUMNS = tuple(f"ending{i}" for i in range(NUM_CHOICES))


@dataclass
class SwagExample:
    """One SWAG question: a context sentence, the start of the second sentence, its four possible endings."""

    swag_id: str
    context_sentence: str
    start_ending: str
    endings: list[str]
    label: int | None = None


@dataclass
class SwagFeatures:
    """Per choice: ``(tokens, input_ids, input_mask, segment_ids)`` padded to ``max_seq_length``."""

    example_id: str
    choices_features: list[tuple[list[str], list[int], list[int], list[int]]]
    label: int | None


def read_swag_examples(input_file: str | os.PathLike, is_training: bool) -> list[SwagExample]:
    """Read a SWAG CSV file. The id is the ``fold-ind`` column, the context ``sent1``, the shared start of the
    endings ``sent2``; ``label`` (the right ending, 0-3) is required when ``is_training``."""
    path = os.fspath(input_file)
    with open(path, encoding="utf-8", newline="") as reader:
        rows = list(csv.reader(reader))
    if not rows:
        raise ValueError(f"{path}: empty file, expected a SWAG CSV with a header line")
    header = rows[0]
    if is_training and header[-1] != "label":
        raise ValueError(f"{path}: for training, the input file must contain a label column (last header "
                         f"column is {header[-1]!r})")
    wanted = ["fold-ind", "sent1", "sent2", *ENDING_COLUMNS] + (["label"] if is_training else [])
    missing = [name for name in wanted if name not in header]
    if missing:
        raise ValueError(f"{path}: header has no column {', '.join(map(repr, missing))} (header: {header})")
    column = {name: header.index(name) for name in wanted}

    examples = []
    for line_number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}, line {line_number}: {len(row)} fields, the header has {len(header)}")
        label = None
        if is_training:
            try:
                label = int(row[column["label"]])
            except ValueError:
                raise ValueError(f"{path}, line {line_number}: label {row[column['label']]!r} is not an "
                                 "integer") from None
            if not 0 <= label < NUM_CHOICES:
                raise ValueError(f"{path}, line {line_number}: label {label} is not in 0..{NUM_CHOICES - 1}")
        examples.append(SwagExample(
            swag_id=row[column["fold-ind"]],
            context_sentence=row[column["sent1"]],
            start_ending=row[column["sent2"]],
            endings=[row[column[name]] for name in ENDING_COLUMNS],
            label=label,
        ))
    return examples


def truncate_seq_pair(tokens_a: list[str], tokens_b: list[str], max_length: int) -> None:
    """Drop tokens from the end of the longer list (``tokens_b`` on ties) until both fit in ``max_length``."""
    while len(tokens_a) + len(tokens_b) > max_length:
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()


def convert_examples_to_features(examples: Sequence[SwagExample], tokenizer: Any, max_seq_length: int,
                                 is_training: bool, log_first: int = 5) -> list[SwagFeatures]:
    """Four ``[CLS] context [SEP] start_ending ending [SEP]`` inputs per example (segment 0 up to the first
    [SEP], 1 after), each pair truncated to fit ``max_seq_length``."""
    features = []
    for example_index, example in enumerate(examples):
        context_tokens = tokenizer.tokenize(example.context_sentence)
        start_ending_tokens = tokenizer.tokenize(example.start_ending)
        choices = []
        for ending in example.endings:
            context_choice = list(context_tokens)  # truncated per choice, so copy
            ending_tokens = start_ending_tokens + tokenizer.tokenize(ending)
            truncate_seq_pair(context_choice, ending_tokens, max_seq_length - 3)
            tokens = ["[CLS]", *context_choice, "[SEP]", *ending_tokens, "[SEP]"]
            segment_ids = [0] * (len(context_choice) + 2) + [1] * (len(ending_tokens) + 1)
            input_ids = tokenizer.convert_tokens_to_ids(tokens)
            input_mask = [1] * len(input_ids)
            padding = [0] * (max_seq_length - len(input_ids))
            choices.append((tokens, input_ids + padding, input_mask + padding, segment_ids + padding))
        if example_index < log_first:
            logger.info("*** Example ***  swag_id: %s", example.swag_id)
            for index, (tokens, input_ids, _, _) in enumerate(choices):
                logger.info("choice %d: %s", index, " ".join(tokens))
            if is_training:
                logger.info("label: %s", example.label)
        features.append(SwagFeatures(example.swag_id, choices, example.label if is_training else None))
    return features


def features_to_arrays(features: Sequence[SwagFeatures], with_labels: bool) -> dict[str, np.ndarray]:
    """int32 ``input_ids``, ``input_mask``, ``segment_ids`` ``[n, 4, seq]`` and ``labels`` ``[n]``."""
    def field(index: int) -> np.ndarray:
        return np.asarray([[choice[index] for choice in f.choices_features] for f in features], np.int32)

    arrays = {"input_ids": field(1), "input_mask": field(2), "segment_ids": field(3)}
    if with_labels:
        arrays["labels"] = np.asarray([f.label for f in features], np.int32)
    return arrays


def accuracy(logits: np.ndarray, labels: np.ndarray) -> int:
    """Number of rows whose highest-scoring choice is the label."""
    return int(np.sum(np.argmax(logits, axis=1) == labels))


def swag_loss(model: Any, batch: dict[str, Any], dropout_rng: Any) -> Any:
    """Cross-entropy over the four choices, averaged over the batch's real rows."""
    logits = model(batch["input_ids"], batch["segment_ids"], batch["input_mask"], dropout_rng=dropout_rng)
    return weighted_nll(logits, batch["labels"], batch["example_weight"])  # logits: [batch, 4]


def swag_scores(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """``logits [batch, 4]`` (float32) and each row's cross-entropy ``[batch]``."""
    import jax
    import jax.numpy as jnp

    logits = model(batch["input_ids"], batch["segment_ids"], batch["input_mask"]).astype(jnp.float32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, batch["labels"][:, None], axis=-1)[:, 0]
    return logits, nll


def build_parser() -> argparse.ArgumentParser:
    from jaxformers.training import add_training_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=None, type=str, required=True,
                        help="The input data dir. Should contain the .csv files (train.csv, val.csv) for the task.")
    parser.add_argument("--bert_model", default=None, type=str, required=True,
                        help="Shortcut name (bert-base-uncased, ...) or a directory written by save_pretrained.")
    add_training_arguments(parser)
    from jaxformers.training.bucketing import add_bucketing_arguments

    add_bucketing_arguments(parser)  # batches padded to their length bucket; --group_by_length
    parser.add_argument("--no_cuda", action="store_true", help="Run on the CPU even if an accelerator is present.")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the script; returns ``train_history`` and ``eval_results`` for callers that import it."""
    args = build_parser().parse_args(argv)
    # Before any model loads or any file is written: a typo must cost nothing and leave nothing behind.
    from jaxformers.arguments import check_paths

    check_paths(None, dirs=[("--data_dir", args.data_dir)], output_dirs=[("--output_dir", args.output_dir)],
                models=[("--bert_model", args.bert_model)])
    if not args.do_train and not args.do_eval:
        raise SystemExit("At least one of `do_train` or `do_eval` must be True.")
    if not args.output_dir:
        raise SystemExit("--output_dir is required")
    if args.do_train:
        from jaxformers.training.checkpoint import check_output_dir

        try:  # before anything loads; claimed below once the devices are set up
            check_output_dir(args.output_dir)
        except ValueError as error:
            raise SystemExit(str(error)) from None

    import jax
    from tqdm.auto import tqdm

    from jaxformers.models.bert import BertForMultipleChoice
    from jaxformers.optimization import WarmupLinearSchedule
    from jaxformers.tokenizers.bert import BertTokenizer
    from jaxformers.training import (
        claim_output_dir,
        create_train_state,
        host_share,
        make_eval_step,
        make_train_step,
        model_from_state,
        model_overrides,
        release_output_dir,
        setup_run,
        train_loop,
        write_eval_results,
    )

    setup = setup_run(args)
    precision, mesh = setup.precision, setup.mesh
    if args.do_train:
        # Results of another run are never overwritten; what an interrupted run of ours left (checkpoints, a
        # save killed half-way) is resumed.
        try:
            claim_output_dir(args.output_dir, "run_swag")
        except ValueError as error:
            raise SystemExit(str(error)) from None
    eval_batch_size = setup.round_up(args.eval_batch_size)
    os.makedirs(args.output_dir, exist_ok=True)

    tokenizer = BertTokenizer.from_pretrained(args.bert_model, do_lower_case=args.do_lower_case)
    model = BertForMultipleChoice.from_pretrained(args.bert_model, num_choices=NUM_CHOICES,
                                                  config_overrides=model_overrides(args))
    outputs: dict[str, Any] = {}
    context = state = None
    global_step, train_loss = 0, None

    if args.do_train:
        train_examples = read_swag_examples(os.path.join(args.data_dir, "train.csv"), is_training=True)
        train_features = convert_examples_to_features(train_examples, tokenizer, args.max_seq_length, True)
        epochs = int(args.num_train_epochs)
        steps_per_epoch = math.ceil(len(train_features) / args.train_batch_size)
        num_steps = steps_per_epoch * epochs
        logger.info("***** Running training *****")
        logger.info("  Num examples = %d", len(train_examples))
        logger.info("  Batch size = %d", args.train_batch_size)
        logger.info("  Num steps = %d", num_steps)

        schedule = WarmupLinearSchedule(warmup=args.warmup_proportion, t_total=max(num_steps, 1))
        tx = bert_adam_without_pooler(args.learning_rate, args.warmup_proportion, max(num_steps, 1))
        context, state = create_train_state(model, tx, seed=args.seed, precision=precision, mesh=mesh,
                                            fsdp=args.fsdp, optimize_on_cpu=args.optimize_on_cpu)
        step = make_train_step(context, swag_loss, tx, precision=precision,
                               grad_accum_steps=args.gradient_accumulation_steps)
        from jaxformers.training.bucketing import Bucketer, CompileLog

        step = CompileLog(step, "train step")  # logs each length bucket's compilation
        batches = Bucketer.from_args(args).trim_all(train_batches(
            features_to_arrays(train_features, with_labels=True), args.train_batch_size, epochs, args.seed,
            args.group_by_length))
        checkpoint_dir = os.path.join(args.output_dir, "checkpoints") if args.checkpoint_every else None
        state, history = train_loop(step, state, batches, num_steps=num_steps, context=context,
                                    checkpoint_dir=checkpoint_dir, checkpoint_every=args.checkpoint_every,
                                    desc="Iteration", lr_fn=lambda s: args.learning_rate * schedule.get_lr(s))
        outputs["train_history"] = history
        global_step = int(jax.device_get(state.step))
        last_epoch = [entry["loss"] for entry in history if entry["step"] > num_steps - steps_per_epoch]
        train_loss = float(np.mean(last_epoch)) if last_epoch else None

        if setup.is_main:
            model_from_state(context, state).save_pretrained(args.output_dir)
            tokenizer.save_vocabulary(args.output_dir)
            logger.info("model, config and vocabulary saved to %s", args.output_dir)

    if args.do_eval:
        if state is None:
            import optax

            context, state = create_train_state(model, optax.identity(), seed=args.seed, precision=precision,
                                                mesh=mesh, fsdp=args.fsdp)
        eval_examples = read_swag_examples(os.path.join(args.data_dir, "val.csv"), is_training=True)
        eval_features = convert_examples_to_features(eval_examples, tokenizer, args.max_seq_length, True)
        if not eval_features:
            raise SystemExit(f"{os.path.join(args.data_dir, 'val.csv')}: no examples to evaluate")
        logger.info("***** Running evaluation *****")
        logger.info("  Num examples = %d", len(eval_examples))
        logger.info("  Batch size = %d", eval_batch_size)
        arrays = features_to_arrays(eval_features, with_labels=True)
        eval_step = make_eval_step(context, swag_scores)
        from jaxformers.training.bucketing import Bucketer

        bucketer = Bucketer.from_args(args)
        batch_losses, correct = [], 0
        for start in tqdm(range(0, len(eval_features), eval_batch_size), desc="Evaluating", unit="batch"):
            chunk = {name: value[start:start + eval_batch_size] for name, value in arrays.items()}
            real = len(chunk["labels"])
            padded = pad_rows(chunk, eval_batch_size)
            del padded["example_weight"]
            padded = bucketer.trim(padded)
            logits, nll = eval_step(state, context.shard_batch(host_share(padded)))
            logits, nll = np.asarray(logits)[:real], np.asarray(nll)[:real]
            # As the reference: the mean of per-batch mean losses, and accuracy over all examples.
            batch_losses.append(float(np.mean(nll)))
            correct += accuracy(logits, chunk["labels"])
        results = {"eval_loss": float(np.mean(batch_losses)), "eval_accuracy": correct / len(eval_features),
                   "global_step": global_step}
        if train_loss is not None:
            results["loss"] = train_loss
        outputs["eval_results"] = results
        write_eval_results(args.output_dir, results)
    if args.do_train:
        release_output_dir(args.output_dir)
    return outputs


if __name__ == "__main__":
    main()
