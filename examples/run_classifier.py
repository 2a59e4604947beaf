"""Fine-tune BERT on a GLUE task (CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI) and evaluate it.

The JAX counterpart of ``examples/run_classifier.py`` from pytorch-pretrained-bert 0.6.2, with the same flags,
hyper-parameter defaults, optimizer (BertAdam, weight decay 0.01 except biases and LayerNorm parameters, linear
warmup then linear decay) and outputs: the fine-tuned model and ``vocab.txt`` in ``--output_dir`` and the dev-set
metrics in ``eval_results.txt`` (for MNLI also the mismatched dev set, in ``<output_dir>-MM``). Training is one
jit-compiled step (see ``jaxformers.training``) with ``--bf16`` / ``--fp16``, gradient accumulation, data
parallelism over all devices (``--fsdp`` to shard the weights), ``--remat`` and ``--scan_layers``.

Example (the reference's MRPC recipe)::

    python examples/run_classifier.py --task_name MRPC --do_train --do_eval --do_lower_case \\
        --data_dir $GLUE_DIR/MRPC --bert_model bert-base-uncased --max_seq_length 128 \\
        --train_batch_size 32 --learning_rate 2e-5 --num_train_epochs 3.0 --output_dir /tmp/mrpc_output

Differences from the reference, all deliberate: shuffling uses numpy's generator (seeded by ``--seed``), not
torch's; the last, partial batch of an epoch is padded to the full batch size with zero-weight rows (one compiled
shape) and its loss is still the mean over its real examples; a fractional ``--num_train_epochs`` trains that
fraction of an epoch (the reference truncates to whole epochs); each batch is padded to the smallest length
bucket that holds it rather than to ``--max_seq_length`` (the same results, faster: ``--pad_to max_seq_length``
restores the reference's padding, ``--group_by_length`` batches similar lengths; see
``jaxformers/training/bucketing.py``).
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so that `import glue` works from any directory

import glue

from jaxformers.arguments import check_paths
from jaxformers.models.bert import BertForSequenceClassification
from jaxformers.optimization import BertAdam, get_schedule, weight_decay_mask
from jaxformers.tokenizers.bert import BertTokenizer
from jaxformers.training.bucketing import (
    Bucketer,
    CompileLog,
    add_bucketing_arguments,
    example_lengths,
    length_grouped_order,
)
from jaxformers.training import (
    RunningTotals,
    add_training_arguments,
    claim_output_dir,
    create_train_state,
    host_share,
    make_eval_step,
    make_train_step,
    model_from_state,
    model_overrides,
    pad_batch,
    release_output_dir,
    setup_run,
    train_loop,
    write_eval_results,
)

logger = logging.getLogger("run_classifier")

# The reference's two parameter groups: names containing any of these get no weight decay.
NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")
FEATURE_KEYS = ("input_ids", "input_mask", "segment_ids")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Fine-tune BERT on a GLUE task with JAX (pytorch-pretrained-bert 0.6.2's run_classifier.py).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    required = parser.add_argument_group("required")
    required.add_argument("--data_dir", required=True, type=str,
                          help="Directory with the task's .tsv files (train.tsv, dev.tsv, ...).")
    required.add_argument("--bert_model", required=True, type=str,
                          help="Shortcut name (bert-base-uncased, bert-large-uncased, bert-base-cased, ...) or a "
                               "directory with config.json, weights and vocab.txt.")
    required.add_argument("--task_name", required=True, type=str,
                          help=f"The GLUE task: one of {', '.join(sorted(glue.PROCESSORS))} (any case).")
    parser.add_argument("--cache_dir", default=None, type=str,
                        help="Where downloaded pretrained models are cached.")
    add_training_arguments(parser)
    add_bucketing_arguments(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output_dir is None:
        parser.error("--output_dir is required")
    if not (args.do_train or args.do_eval):
        parser.error("at least one of --do_train and --do_eval is required")
    if args.task_name.lower() not in glue.PROCESSORS:
        parser.error(f"unknown --task_name {args.task_name!r}; choose one of {sorted(glue.PROCESSORS)}")
    # Before any model loads or the output directory is created: a typo must leave nothing behind.
    check_paths(parser, dirs=[("--data_dir", args.data_dir)], output_dirs=[("--output_dir", args.output_dir)],
                models=[("--bert_model", args.bert_model)])
    return args


# ----------------------------------------------------------------------------------------------- model pieces


def per_example_loss(logits: jax.Array, labels: jax.Array, output_mode: str) -> jax.Array:
    """Cross-entropy (classification) or squared error (regression), one value per example: [batch]."""
    logits = logits.astype(jnp.float32)  # [batch, num_labels]
    if output_mode == "regression":
        return jnp.square(logits.reshape(-1) - labels.astype(jnp.float32))
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_probs, labels.astype(jnp.int32)[:, None], axis=-1)[:, 0]


def make_loss_fn(output_mode: str):
    def loss_fn(model, batch, dropout_rng):
        logits = model(batch["input_ids"], batch["segment_ids"], batch["input_mask"], dropout_rng=dropout_rng)
        # Weights are 0 on padding rows and sum to 1 over the whole update (see iterate_train_batches),
        # so the accumulated loss is the mean over the real examples of the batch.
        return jnp.sum(batch["weight"] * per_example_loss(logits, batch["label_ids"], output_mode))

    return loss_fn


def predict_fn(model, batch):
    return model(batch["input_ids"], batch["segment_ids"], batch["input_mask"]).astype(jnp.float32)


# ------------------------------------------------------------------------------------------------------ data


def iterate_train_batches(arrays: dict[str, np.ndarray], batch_size: int, accumulation_steps: int, num_steps: int,
                          seed: int, group_by_length: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """``num_steps`` batches of ``batch_size`` rows, reshuffled every epoch with a generator seeded by ``seed``
    (so a resumed run sees the same sequence); with ``group_by_length``, each batch of similar lengths. An epoch's last, short batch is padded with copies of row 0 that
    get weight 0; each real row gets ``accumulation_steps / real_rows`` so that the per-micro-batch weighted sums,
    averaged over the micro-batches by the train step, give the mean loss over the batch's real rows."""
    count = len(arrays["label_ids"])
    rng = np.random.default_rng(seed)
    lengths = example_lengths(arrays["input_mask"]) if group_by_length else None
    produced = 0
    while produced < num_steps:
        order = rng.permutation(count) if lengths is None else length_grouped_order(lengths, batch_size, rng)
        for start in range(0, count, batch_size):
            if produced == num_steps:
                return
            rows = order[start:start + batch_size]
            real = len(rows)
            rows = np.concatenate([rows, np.zeros(batch_size - real, dtype=rows.dtype)])
            batch = {key: value[rows] for key, value in arrays.items()}
            weight = np.zeros(batch_size, np.float32)
            weight[:real] = accumulation_steps / real
            batch["weight"] = weight
            yield batch
            produced += 1


def load_features(processor: glue.DataProcessor, examples: list[glue.InputExample], tokenizer: BertTokenizer,
                  max_seq_length: int) -> dict[str, np.ndarray]:
    features = glue.convert_examples_to_features(examples, processor.get_labels(), max_seq_length, tokenizer,
                                                 processor.output_mode)
    return glue.features_to_arrays(features, processor.output_mode)


def evaluate(eval_step, state, arrays: dict[str, np.ndarray], batch_size: int, output_mode: str,
             multiple: int, bucketer: Bucketer | None = None) -> tuple[np.ndarray, float]:
    """Predictions for every example ([n] label ids or scores) and the reference's eval loss: the mean over
    batches of each batch's mean loss."""
    outputs, batch_losses = [], []
    count = len(arrays["label_ids"])
    # Every batch is padded to the same size, a multiple of the device count: one compiled shape for all.
    padded_size = -(-batch_size // multiple) * multiple
    for start in range(0, count, batch_size):
        chunk = {key: arrays[key][start:start + batch_size] for key in (*FEATURE_KEYS, "label_ids")}
        padded, real = pad_batch(chunk, padded_size)
        if bucketer is not None:
            padded = bucketer.trim(padded)
        logits = np.asarray(eval_step(state, host_share(padded)))[:real]  # [real, num_labels]
        losses = np.asarray(per_example_loss(jnp.asarray(logits), jnp.asarray(chunk["label_ids"]), output_mode))
        batch_losses.append(float(losses.mean()))
        outputs.append(logits)
    logits = np.concatenate(outputs)
    preds = logits.reshape(-1) if output_mode == "regression" else logits.argmax(axis=-1)
    return preds, float(np.mean(batch_losses))


# ------------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the script; returns the dev-set results (with ``mnli-mm/...`` keys for MNLI's mismatched set)."""
    results, _ = run(parse_args(argv))
    return results


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """The script's work for parsed ``args``: returns the dev-set results and the per-step training metrics
    (``loss``, ``lr``, ``grad_norm``... of each step run in this call; empty without ``--do_train``)."""
    setup = setup_run(args)
    precision, mesh, num_devices, is_main_process = setup.precision, setup.mesh, setup.num_devices, setup.is_main

    random.seed(args.seed)
    np.random.seed(args.seed)

    task_name = args.task_name.lower()
    processor = glue.get_processor(task_name)
    output_mode = processor.output_mode
    num_labels = glue.NUM_LABELS[task_name]
    output_dir = Path(args.output_dir)
    if args.do_train:
        # As the reference: never train into a directory that already holds results; but a directory that an
        # interrupted run of ours left (killed at any moment, even while saving the model) is resumed.
        claim_output_dir(output_dir, f"run_classifier {task_name}")
    output_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = BertTokenizer.from_pretrained(args.bert_model, cache_dir=args.cache_dir,
                                              do_lower_case=args.do_lower_case)
    model = BertForSequenceClassification.from_pretrained(
        args.bert_model, cache_dir=args.cache_dir, num_labels=num_labels,
        config_overrides=model_overrides(args),
    )

    global_step, train_loss, history, totals = 0, None, [], RunningTotals()
    if args.do_train:
        train_examples = processor.get_train_examples(args.data_dir)
        if not train_examples:
            raise ValueError(f"no training examples in {args.data_dir!r}")
        train_arrays = load_features(processor, train_examples, tokenizer, args.max_seq_length)
        batch_size = args.train_batch_size
        steps_per_epoch = math.ceil(len(train_examples) / batch_size)
        num_steps = max(1, math.ceil(args.num_train_epochs * steps_per_epoch))
        # The reference's t_total, which its warmup-linear schedule decays to zero at.
        t_total = int(len(train_examples) / batch_size) * args.num_train_epochs
        if t_total <= 0:
            t_total = num_steps
        schedule = get_schedule("warmup_linear", warmup=args.warmup_proportion, t_total=t_total)
        tx = BertAdam(args.learning_rate, schedule=schedule, weight_decay=0.01,
                      weight_decay_mask=lambda params: weight_decay_mask(params, no_decay=NO_DECAY))
        logger.info("***** Running training *****")
        logger.info("  Num examples = %d, batch size = %d, num steps = %d, t_total = %s", len(train_examples),
                    batch_size, num_steps, t_total)
        context, state = create_train_state(model, tx, seed=args.seed, precision=precision, mesh=mesh,
                                            fsdp=args.fsdp, optimize_on_cpu=args.optimize_on_cpu)
        step = make_train_step(context, make_loss_fn(output_mode), tx, precision=precision,
                               grad_accum_steps=args.gradient_accumulation_steps)
        bucketer = Bucketer.from_args(args)
        step = CompileLog(step, "train step")  # logs each bucket's compilation
        batches = bucketer.trim_all(iterate_train_batches(train_arrays, batch_size, args.gradient_accumulation_steps,
                                                          num_steps, args.seed, args.group_by_length))
        checkpoint_dir = output_dir / "checkpoints" if args.checkpoint_every else None
        state, history = train_loop(
            step, state, batches, num_steps=num_steps, context=context, checkpoint_dir=checkpoint_dir,
            checkpoint_every=args.checkpoint_every, desc="Iteration",
            lr_fn=lambda s: args.learning_rate * schedule.get_lr(s, nowarn=True), totals=totals,
        )
        global_step = int(jax.device_get(state.step))
        # The mean over every step from the first, also when this run resumed from a checkpoint.
        train_loss = totals.mean("loss")
        if is_main_process:
            trained = model_from_state(context, state)
            if output_mode == "classification":
                # The task's label names in config.json: transformers' classifiers and pipelines show them.
                trained.config = trained.config.with_overrides(
                    {"num_labels": num_labels, "id2label": dict(enumerate(processor.get_labels()))})
            # flax_model.msgpack and config.json, plus the reference's pytorch_model.bin when PyTorch is
            # installed, so PyTorch users can load the result directly.
            try:
                trained.save_pretrained(output_dir, pytorch=True)
            except ImportError:
                logger.info("PyTorch not installed: pytorch_model.bin not written")
                trained.save_pretrained(output_dir)
            tokenizer.save_vocabulary(output_dir)
    else:
        context, state = create_train_state(model, optax.identity(), seed=args.seed, precision=precision,
                                            mesh=mesh, fsdp=args.fsdp)

    results: dict[str, Any] = {}
    if args.do_eval:
        eval_step = make_eval_step(context, predict_fn)
        if args.eval_batch_size < 1:
            raise ValueError(f"--eval_batch_size must be >= 1, got {args.eval_batch_size}")
        eval_tasks = [(task_name, output_dir)]
        if task_name == "mnli":
            eval_tasks.append(("mnli-mm", Path(str(output_dir) + "-MM")))
        for eval_task, eval_dir in eval_tasks:
            eval_processor = glue.get_processor(eval_task)
            eval_examples = eval_processor.get_dev_examples(args.data_dir)
            if not eval_examples:
                raise ValueError(f"no dev examples for {eval_task} in {args.data_dir!r}")
            eval_arrays = load_features(eval_processor, eval_examples, tokenizer, args.max_seq_length)
            logger.info("***** Running evaluation: %s, %d examples *****", eval_task, len(eval_examples))
            preds, eval_loss = evaluate(eval_step, state, eval_arrays, args.eval_batch_size, output_mode,
                                        num_devices, Bucketer.from_args(args))
            result: dict[str, Any] = glue.compute_metrics(eval_task, preds, eval_arrays["label_ids"])
            result.update(eval_loss=eval_loss, global_step=global_step, loss=train_loss)
            if is_main_process:
                eval_dir.mkdir(parents=True, exist_ok=True)
                write_eval_results(eval_dir, result)
            prefix = "" if eval_task == task_name else f"{eval_task}/"
            results.update({prefix + key: value for key, value in result.items()})
    if args.do_train:
        release_output_dir(output_dir)  # finished: a rerun into this directory is refused from now on
    return results, history


if __name__ == "__main__":
    main()
