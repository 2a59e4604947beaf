#!/usr/bin/env python3
"""Fine-tune BERT's masked-LM and next-sentence heads (``BertForPreTraining``) on data written by
``pregenerate_training_data.py`` (the pytorch-pretrained-bert 0.6.x ``examples/lm_finetuning/
finetune_on_pregenerated.py``), with the jitted ``jaxformers.training`` step.

Epoch ``e`` of training reads ``epoch_{e % N}.json`` where N is the number of pregenerated epochs (with a warning
when data is reused). Each optimizer step takes ``--train_batch_size`` instances (split into
``--gradient_accumulation_steps`` micro-batches); the learning rate warms up linearly over
``--warmup_proportion`` of the steps then decays linearly (BertAdam, weight decay 0.01 except biases and
LayerNorm). The fine-tuned model (``config.json``, ``flax_model.msgpack``, ``pytorch_model.bin``) and
``vocab.txt`` are saved to ``--output_dir``.

    python examples/lm_finetuning/finetune_on_pregenerated.py --pregenerated_data training/ \\
        --bert_model bert-base-uncased --do_lower_case --output_dir finetuned_lm/ --epochs 3
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

logger = logging.getLogger("finetune_on_pregenerated")

# The reference's parameter groups: these names get no weight decay.
NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")


# ----------------------------------------------------------------------------------------------------- data


def instance_to_features(instance: dict, tokenizer, max_seq_length: int) -> dict[str, np.ndarray]:
    """One pregenerated instance -> padded arrays (``lm_label_ids`` is -1 except at masked positions)."""
    tokens = instance["tokens"]
    if len(tokens) > max_seq_length:
        raise ValueError(f"instance has {len(tokens)} tokens, more than max_seq_len={max_seq_length}")
    input_ids = np.zeros(max_seq_length, np.int32)
    input_ids[:len(tokens)] = tokenizer.convert_tokens_to_ids(tokens)
    input_mask = np.zeros(max_seq_length, np.int32)
    input_mask[:len(tokens)] = 1
    segment_ids = np.zeros(max_seq_length, np.int32)
    segment_ids[:len(instance["segment_ids"])] = instance["segment_ids"]
    lm_label_ids = np.full(max_seq_length, -1, np.int32)
    lm_label_ids[instance["masked_lm_positions"]] = tokenizer.convert_tokens_to_ids(instance["masked_lm_labels"])
    return {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids,
            "lm_label_ids": lm_label_ids, "is_next": np.int32(instance["is_random_next"])}


def load_epoch(data_dir: Path, data_epoch: int, tokenizer) -> dict[str, np.ndarray]:
    """All instances of ``epoch_{data_epoch}.json`` as stacked arrays ``[examples, ...]``."""
    data_file = data_dir / f"epoch_{data_epoch}.json"
    metrics_file = data_dir / f"epoch_{data_epoch}_metrics.json"
    if not (data_file.is_file() and metrics_file.is_file()):
        raise FileNotFoundError(f"missing {data_file} or {metrics_file}: run pregenerate_training_data.py first")
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    num_examples, max_seq_len = metrics["num_training_examples"], metrics["max_seq_len"]
    columns: dict[str, list[Any]] = {}
    with data_file.open(encoding="utf-8") as reader:
        for line_number, line in enumerate(reader, start=1):
            try:
                features = instance_to_features(json.loads(line), tokenizer, max_seq_len)
            except (ValueError, KeyError) as error:
                raise ValueError(f"{data_file}:{line_number}: bad instance: {error}") from None
            for name, value in features.items():
                columns.setdefault(name, []).append(value)
    arrays = {name: np.stack(values) for name, values in columns.items()}
    found = len(arrays.get("input_ids", ()))
    if found != num_examples:
        raise ValueError(f"{data_file} has {found} instances but {metrics_file} says {num_examples}")
    return arrays


def count_data_epochs(data_dir: Path, epochs: int) -> tuple[int, list[int]]:
    """How many pregenerated epochs exist, and the number of examples each training epoch will see."""
    available = 0
    while (data_dir / f"epoch_{available}.json").is_file() and (data_dir / f"epoch_{available}_metrics.json").is_file():
        available += 1
    if available == 0:
        raise FileNotFoundError(f"no epoch_0.json / epoch_0_metrics.json in {data_dir}")
    if available < epochs:
        logger.warning("only %d epochs of pregenerated data for %d training epochs: data will be reused",
                       available, epochs)
    sizes = []
    for epoch in range(epochs):
        metrics = json.loads((data_dir / f"epoch_{epoch % available}_metrics.json").read_text(encoding="utf-8"))
        sizes.append(int(metrics["num_training_examples"]))
    return available, sizes


def shuffled_batches(arrays: dict[str, np.ndarray], batch_size: int, rng: np.random.Generator,
                     group_by_length: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Random full batches (the remainder is dropped so that every step has a full batch); with
    ``group_by_length``, each of rows of similar length."""
    from jaxformers.training.bucketing import example_lengths, length_grouped_order

    if group_by_length:
        order = length_grouped_order(example_lengths(arrays["input_mask"]), batch_size, rng)
    else:
        order = rng.permutation(len(arrays["input_ids"]))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        rows = order[start:start + batch_size]
        yield {name: value[rows] for name, value in arrays.items()}


# ------------------------------------------------------------------------------------------------- training


def add_lm_arguments(parser: argparse.ArgumentParser) -> None:
    """The shared training flags, with the LM scripts' defaults."""
    from jaxformers.training import add_training_arguments

    from jaxformers.training.bucketing import add_bucketing_arguments

    add_training_arguments(parser)
    add_bucketing_arguments(parser)  # each batch padded to its length bucket, not --max_seq_length
    parser.set_defaults(learning_rate=3e-5)


def load_pretraining_model(args: argparse.Namespace):
    from jaxformers.models.bert import BertForPreTraining
    from jaxformers.training import model_overrides

    return BertForPreTraining.from_pretrained(args.bert_model, config_overrides=model_overrides(args))


def pretraining_loss(model, batch, dropout_rng):
    return model(batch["input_ids"], batch["segment_ids"], batch["input_mask"], batch["lm_label_ids"],
                 batch["is_next"], dropout_rng=dropout_rng)


def train_pretraining(model, batches: Iterable[dict[str, np.ndarray]], num_steps: int,
                      args: argparse.Namespace, setup, desc: str = "train"):
    """Run BertAdam over ``batches`` (one dict per optimizer step) on ``setup``'s mesh and precision (see
    ``jaxformers.training.setup_run``); returns ``(trained model, history)``."""
    from jaxformers.optimization import BertAdam, get_schedule, weight_decay_mask
    from jaxformers.training import create_train_state, make_train_step, model_from_state, train_loop

    precision = setup.precision
    tx = BertAdam(args.learning_rate, warmup=args.warmup_proportion, t_total=num_steps, weight_decay=0.01,
                  weight_decay_mask=lambda params: weight_decay_mask(params, NO_DECAY))
    context, state = create_train_state(model, tx, seed=args.seed, precision=precision,
                                        mesh=setup.mesh, fsdp=args.fsdp,
                                        optimize_on_cpu=args.optimize_on_cpu)
    step = make_train_step(context, pretraining_loss, tx, precision=precision,
                           grad_accum_steps=args.gradient_accumulation_steps)
    from jaxformers.training.bucketing import Bucketer, CompileLog

    step = CompileLog(step, "train step")  # logs each length bucket's compilation
    batches = Bucketer.from_args(args).trim_all(batches)
    schedule = get_schedule("warmup_linear", warmup=args.warmup_proportion, t_total=num_steps)
    checkpoint_dir = os.path.join(args.output_dir, "checkpoints") if args.checkpoint_every else None
    state, history = train_loop(
        step, state, batches, num_steps=num_steps, context=context, checkpoint_dir=checkpoint_dir,
        checkpoint_every=args.checkpoint_every, desc=desc,
        lr_fn=lambda s: args.learning_rate * float(schedule.get_lr(s, nowarn=True)))
    return model_from_state(context, state), history


def check_training_args(args: argparse.Namespace) -> None:
    if not args.output_dir:
        raise ValueError("--output_dir is required")


def save_model_and_vocab(model, tokenizer, output_dir: str) -> None:
    import jax

    if jax.process_index() != 0:
        return
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir, pytorch=True)
    tokenizer.save_vocabulary(output_dir)
    logger.info("saved the fine-tuned model and vocabulary to %s", output_dir)


def write_history(output_dir: str, history: Sequence[dict]) -> None:
    """``train_history.json``: one metrics dict per step (loss, lr, grad norm...)."""
    import jax

    if jax.process_index() == 0:
        Path(output_dir, "train_history.json").write_text(json.dumps(list(history), indent=1), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pregenerated_data", type=Path, required=True,
                        help="directory written by pregenerate_training_data.py")
    parser.add_argument("--bert_model", type=str, required=True, help="shortcut name or model directory")
    parser.add_argument("--reduce_memory", action="store_true",
                        help="accepted for compatibility: only the data epoch being trained on is in memory")
    add_lm_arguments(parser)
    # The reference's spelling of --num_train_epochs (a whole number here: each epoch reads one data file).
    parser.add_argument("--epochs", dest="num_train_epochs", type=int, help="number of training epochs (default 3)")
    args = parser.parse_args(argv)
    if args.num_train_epochs != int(args.num_train_epochs) or args.num_train_epochs < 1:
        parser.error(f"--epochs must be a positive whole number, got {args.num_train_epochs}")
    args.num_train_epochs = int(args.num_train_epochs)
    return args


def epoch_batches(args: argparse.Namespace, tokenizer, num_data_epochs: int) -> Iterator[dict[str, np.ndarray]]:
    """Every optimizer step's batch, epoch after epoch, reproducibly shuffled from ``--seed``."""
    for epoch in range(args.num_train_epochs):
        arrays = load_epoch(args.pregenerated_data, epoch % num_data_epochs, tokenizer)
        rng = np.random.default_rng([args.seed, epoch])
        yield from shuffled_batches(arrays, args.train_batch_size, rng, getattr(args, "group_by_length", False))


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    # Before any model loads or any file is written: a typo must cost nothing and leave nothing behind.
    from jaxformers.arguments import check_paths

    check_paths(None, dirs=[("--pregenerated_data", args.pregenerated_data)],
                output_dirs=[("--output_dir", args.output_dir)], models=[("--bert_model", args.bert_model)])
    check_training_args(args)
    from jaxformers.tokenizers.bert import BertTokenizer
    from jaxformers.training import setup_run

    setup = setup_run(args)

    num_data_epochs, epoch_sizes = count_data_epochs(args.pregenerated_data, args.num_train_epochs)
    num_steps = sum(size // args.train_batch_size for size in epoch_sizes)
    if num_steps == 0:
        raise ValueError(f"--train_batch_size {args.train_batch_size} is larger than the data "
                         f"({epoch_sizes} examples per epoch): no full batch to train on")
    logger.info("***** Running training *****\n  Num examples = %d\n  Batch size = %d\n  Num steps = %d",
                sum(epoch_sizes), args.train_batch_size, num_steps)

    tokenizer = BertTokenizer.from_pretrained(args.bert_model, do_lower_case=args.do_lower_case)
    model = load_pretraining_model(args)
    model, history = train_pretraining(model, epoch_batches(args, tokenizer, num_data_epochs), num_steps, args,
                                       setup)
    if history:
        logger.info("loss: first step %.4f, last step %.4f", history[0]["loss"], history[-1]["loss"])
    if not all(math.isfinite(entry["loss"]) for entry in history):
        logger.warning("some steps had a non-finite loss")
    save_model_and_vocab(model, tokenizer, args.output_dir)
    write_history(args.output_dir, history)
    return history


if __name__ == "__main__":
    main()
