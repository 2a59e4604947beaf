#!/usr/bin/env python3
"""Fine-tune BERT on SQuAD v1.1 or v2.0 and predict answers: the pytorch-pretrained-bert 0.6.2
``examples/run_squad.py`` on jaxformers' jit-compiled training engine.

Training reads ``--train_file``, cuts every question/paragraph pair into ``--max_seq_length`` windows sliding by
``--doc_stride`` (see ``examples/squad.py``) and trains ``BertForQuestionAnswering`` with BertAdam (linear warmup
over ``--warmup_proportion``, weight decay 0.01 except biases and LayerNorm, the unused pooler frozen, as the
reference). The model, its config and vocabulary are saved to ``--output_dir``. Prediction on ``--predict_file``
writes ``predictions.json``, ``nbest_predictions.json`` and, with ``--version_2_with_negative``, ``null_odds.json``;
when the file has gold answers, the official SQuAD EM/F1 (v1.1 or v2.0 script) are computed in-process and written
to ``eval_results.txt``.

    python examples/run_squad.py --bert_model bert-base-uncased --do_lower_case --do_train --do_predict \\
        --train_file train-v1.1.json --predict_file dev-v1.1.json --train_batch_size 12 --learning_rate 3e-5 \\
        --num_train_epochs 2.0 --max_seq_length 384 --doc_stride 128 --output_dir /tmp/debug_squad/

Besides the reference's flags: ``--bf16``, ``--fsdp``, ``--remat``, ``--scan_layers``, ``--checkpoint_every`` (resume
after interruption) and the multi-host flags. Differences from the reference: the learning-rate schedule's
length is the real number of optimizer steps (the reference counted questions rather than windows, so its
schedule could reach zero early); a last, partial batch is padded with rows that carry no weight in the loss;
features are not cached to a pickle next to the training file; each batch is padded to its length bucket rather
than to ``--max_seq_length`` (``--pad_to max_seq_length`` restores that; ``--group_by_length`` batches similar
lengths), and so that the loss does not depend on how far a batch is padded, the start/end softmax leaves out the
padding positions (the reference's includes them).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import squad  # examples/squad.py, next to this script

logger = logging.getLogger("run_squad")

# The reference's optimizer groups: names containing these get no weight decay.
NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")


def build_parser() -> argparse.ArgumentParser:
    from jaxformers.training import add_training_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bert_model", default=None, type=str, required=True,
                        help="Shortcut name (bert-base-uncased, ...) or a directory written by save_pretrained.")
    parser.add_argument("--train_file", default=None, type=str, help="SQuAD json for training, e.g. train-v1.1.json")
    parser.add_argument("--predict_file", default=None, type=str,
                        help="SQuAD json for predictions, e.g. dev-v1.1.json or test-v1.1.json")
    add_training_arguments(parser)
    from jaxformers.training.bucketing import add_bucketing_arguments

    add_bucketing_arguments(parser)
    parser.set_defaults(max_seq_length=384)
    group = parser.add_argument_group("SQuAD")
    group.add_argument("--doc_stride", default=128, type=int,
                       help="When splitting up a long document into chunks, how much stride to take between chunks.")
    group.add_argument("--max_query_length", default=64, type=int,
                       help="The maximum number of tokens for the question; longer questions are truncated.")
    group.add_argument("--do_predict", action="store_true", help="Run prediction on --predict_file.")
    group.add_argument("--predict_batch_size", default=None, type=int,
                       help="Total batch size for predictions (default: --eval_batch_size, 8).")
    group.add_argument("--n_best_size", default=20, type=int,
                       help="The total number of n-best predictions to generate in nbest_predictions.json.")
    group.add_argument("--max_answer_length", default=30, type=int,
                       help="The maximum length of an answer that can be generated (in WordPieces).")
    group.add_argument("--verbose_logging", action="store_true",
                       help="Log the alignment problems met while mapping predictions back to the original text.")
    group.add_argument("--version_2_with_negative", action="store_true",
                       help="SQuAD v2.0: some questions have no answer.")
    group.add_argument("--null_score_diff_threshold", type=float, default=0.0,
                       help="v2.0: predict no answer when null score - best non-null score > this.")
    group.add_argument("--no_cuda", action="store_true", help="Run on the CPU even if an accelerator is present.")
    return parser


def check_args(args: argparse.Namespace) -> None:
    if args.do_eval:  # the common training flags call it --do_eval; this script's reference name is --do_predict
        args.do_predict = True
    if args.predict_batch_size is None:
        args.predict_batch_size = args.eval_batch_size
    if not args.do_train and not args.do_predict:
        raise SystemExit("At least one of `do_train` or `do_predict` must be True.")
    if args.do_train and not args.train_file:
        raise SystemExit("If `do_train` is True, then `train_file` must be specified.")
    if args.do_predict and not args.predict_file:
        raise SystemExit("If `do_predict` is True, then `predict_file` must be specified.")
    if not args.output_dir:
        raise SystemExit("--output_dir is required")
    if args.max_seq_length < 8 or args.doc_stride < 1 or args.max_query_length < 1:
        raise SystemExit("--max_seq_length must be >= 8, --doc_stride and --max_query_length >= 1")
    if args.do_train:
        from jaxformers.training.checkpoint import check_output_dir

        try:  # before anything loads; main() claims the directory once the devices are set up
            check_output_dir(args.output_dir)
        except ValueError as error:
            raise SystemExit(str(error)) from None


# ------------------------------------------------------------------------------------------------------------
# Batches, loss and optimizer
# ------------------------------------------------------------------------------------------------------------


def pad_rows(batch: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """Pad every array to ``rows`` rows with zeros; ``example_weight`` (1 for real rows) marks the padding."""
    size = len(next(iter(batch.values())))
    out = {name: np.concatenate([value, np.zeros((rows - size, *value.shape[1:]), value.dtype)])
           for name, value in batch.items()}
    out["example_weight"] = (np.arange(rows) < size).astype(np.float32)
    return out


def train_batches(arrays: dict[str, np.ndarray], batch_size: int, epochs: int, seed: int,
                  group_by_length: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Shuffled global batches of ``batch_size`` rows, epoch after epoch (same order for the same seed, which
    checkpoint resumption relies on); the last batch of an epoch is padded with zero-weight rows. With
    ``group_by_length``, each batch holds rows of similar length (``input_mask``)."""
    from jaxformers.training.bucketing import example_lengths, length_grouped_order

    rows = len(next(iter(arrays.values())))
    shuffler = np.random.default_rng(seed)
    lengths = example_lengths(arrays["input_mask"]) if group_by_length else None
    for _ in range(epochs):
        order = shuffler.permutation(rows) if lengths is None else length_grouped_order(lengths, batch_size, shuffler)
        for start in range(0, rows, batch_size):
            chosen = order[start:start + batch_size]
            yield pad_rows({name: value[chosen] for name, value in arrays.items()}, batch_size)


def weighted_nll(logits: Any, targets: Any, weights: Any) -> Any:
    """Weighted mean of ``-log softmax(logits)[target]`` over rows; 0 when every weight is 0 (a padding-only
    micro-batch), where the plain mean would be NaN."""
    import jax
    import jax.numpy as jnp

    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [batch, classes]
    picked = jnp.take_along_axis(log_probs, targets[:, None].astype(jnp.int32), axis=-1)[:, 0]  # [batch]
    return -jnp.sum(picked * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def squad_loss(model: Any, batch: dict[str, Any], dropout_rng: Any) -> Any:
    """The reference's loss, (start CE + end CE) / 2 with positions clamped to ``[0, seq]`` and ``seq``
    ignored, averaged over the batch's real rows only."""
    import jax.numpy as jnp

    start_logits, end_logits = model(batch["input_ids"], batch["segment_ids"], batch["input_mask"],
                                     dropout_rng=dropout_rng)  # [batch, seq] each
    # Padding positions take no part in the softmax, so the loss is the same at any padded length.
    real = batch["input_mask"] > 0
    start_logits, end_logits = (jnp.where(real, x.astype(jnp.float32), -1e30) for x in (start_logits, end_logits))
    seq = start_logits.shape[1]
    weight = batch["example_weight"]
    losses = []
    for logits, name in ((start_logits, "start_positions"), (end_logits, "end_positions")):
        positions = jnp.clip(batch[name], 0, seq)
        losses.append(weighted_nll(logits, jnp.minimum(positions, seq - 1), weight * (positions < seq)))
    return (losses[0] + losses[1]) / 2


def squad_logits(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    import jax.numpy as jnp

    start_logits, end_logits = model(batch["input_ids"], batch["segment_ids"], batch["input_mask"])
    return start_logits.astype(jnp.float32), end_logits.astype(jnp.float32)


def bert_adam_without_pooler(learning_rate: float, warmup: float, t_total: float) -> Any:
    """BertAdam over every parameter but the pooler's, which stays exactly as loaded: the reference leaves
    the (unused) pooler out of its optimizer. Biases and LayerNorm get no weight decay."""
    import jax
    import optax

    from jaxformers.optimization import BertAdam, parameter_name, weight_decay_mask

    def labels(tree: Any) -> Any:
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "frozen" if "pooler" in parameter_name(path) else "train", tree)

    adam = BertAdam(learning_rate, warmup=warmup, t_total=t_total,
                    weight_decay_mask=lambda tree: weight_decay_mask(tree, no_decay=NO_DECAY))
    return optax.multi_transform({"train": adam, "frozen": optax.set_to_zero()}, labels)


# ------------------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------------------


def predict_raw_results(eval_step: Any, state: Any, context: Any, features: Sequence[squad.SquadFeatures],
                        batch_size: int, bucketer: Any = None) -> list[squad.RawResult]:
    """Start/end logits for every feature, in batches of ``batch_size`` (the last one padded)."""
    from tqdm.auto import tqdm

    from jaxformers.training import host_share

    arrays = squad.features_to_arrays(features, is_training=False)
    results: list[squad.RawResult] = []
    for start in tqdm(range(0, len(features), batch_size), desc="Evaluating", unit="batch"):
        chunk = {name: value[start:start + batch_size] for name, value in arrays.items()}
        real = len(chunk["input_ids"])
        padded = pad_rows(chunk, batch_size)
        del padded["example_weight"]
        if bucketer is not None:
            padded = bucketer.trim(padded)
        start_logits, end_logits = eval_step(state, context.shard_batch(host_share(padded)))
        start_logits = np.asarray(start_logits)[:real]
        end_logits = np.asarray(end_logits)[:real]
        for offset in range(real):
            results.append(squad.RawResult(features[start + offset].unique_id, start_logits[offset].tolist(),
                                           end_logits[offset].tolist()))
    return results


def has_gold_answers(dataset: Sequence[dict[str, Any]]) -> bool:
    return all("answers" in qa for article in dataset for paragraph in article["paragraphs"]
               for qa in paragraph["qas"])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the script; returns what it computed (``train_history``, ``eval_results``, ``predictions``) for
    callers that import it."""
    args = build_parser().parse_args(argv)
    # Before any model loads or any file is written: a typo must cost nothing and leave nothing behind.
    from jaxformers.arguments import check_paths

    check_paths(None, files=[("--train_file", args.train_file), ("--predict_file", args.predict_file)],
                output_dirs=[("--output_dir", args.output_dir)], models=[("--bert_model", args.bert_model)])
    check_args(args)

    from jaxformers.models.bert import BertForQuestionAnswering
    from jaxformers.optimization import WarmupLinearSchedule
    from jaxformers.tokenizers.bert import BertTokenizer
    from jaxformers.training import (
        claim_output_dir,
        create_train_state,
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
    precision, mesh, is_main = setup.precision, setup.mesh, setup.is_main
    if args.do_train:
        # Results of another run are never overwritten; what an interrupted run of ours left (checkpoints, a
        # save killed half-way) is resumed.
        try:
            claim_output_dir(args.output_dir, "run_squad")
        except ValueError as error:
            raise SystemExit(str(error)) from None
    predict_batch_size = setup.round_up(args.predict_batch_size)
    os.makedirs(args.output_dir, exist_ok=True)

    tokenizer = BertTokenizer.from_pretrained(args.bert_model, do_lower_case=args.do_lower_case)
    model = BertForQuestionAnswering.from_pretrained(args.bert_model, config_overrides=model_overrides(args))
    outputs: dict[str, Any] = {}

    context = state = None
    if args.do_train:
        train_examples = squad.read_squad_examples(args.train_file, is_training=True,
                                                   version_2_with_negative=args.version_2_with_negative)
        train_features = squad.convert_examples_to_features(
            train_examples, tokenizer, args.max_seq_length, args.doc_stride, args.max_query_length, is_training=True)
        if not train_features:
            raise SystemExit(f"{args.train_file}: no training features (no usable question)")
        epochs = int(args.num_train_epochs)
        steps_per_epoch = math.ceil(len(train_features) / args.train_batch_size)
        num_steps = steps_per_epoch * epochs
        logger.info("***** Running training *****")
        logger.info("  Num orig examples = %d", len(train_examples))
        logger.info("  Num split examples = %d", len(train_features))
        logger.info("  Batch size = %d", args.train_batch_size)
        logger.info("  Num steps = %d", num_steps)

        schedule = WarmupLinearSchedule(warmup=args.warmup_proportion, t_total=max(num_steps, 1))
        tx = bert_adam_without_pooler(args.learning_rate, args.warmup_proportion, max(num_steps, 1))
        context, state = create_train_state(model, tx, seed=args.seed, precision=precision, mesh=mesh,
                                            fsdp=args.fsdp, optimize_on_cpu=args.optimize_on_cpu)
        step = make_train_step(context, squad_loss, tx, precision=precision,
                               grad_accum_steps=args.gradient_accumulation_steps)
        from jaxformers.training.bucketing import Bucketer, CompileLog

        step = CompileLog(step, "train step")  # logs each length bucket's compilation
        batches = Bucketer.from_args(args).trim_all(train_batches(
            squad.features_to_arrays(train_features, is_training=True), args.train_batch_size, epochs, args.seed,
            args.group_by_length))
        checkpoint_dir = os.path.join(args.output_dir, "checkpoints") if args.checkpoint_every else None
        state, history = train_loop(step, state, batches, num_steps=num_steps, context=context,
                                    checkpoint_dir=checkpoint_dir, checkpoint_every=args.checkpoint_every,
                                    desc="Iteration", lr_fn=lambda s: args.learning_rate * schedule.get_lr(s))
        outputs["train_history"] = history

        trained = model_from_state(context, state)
        if is_main:
            trained.save_pretrained(args.output_dir)
            tokenizer.save_vocabulary(args.output_dir)
            logger.info("model, config and vocabulary saved to %s", args.output_dir)

    if args.do_predict:
        if state is None:
            import optax

            # Prediction only: a state without optimizer, for the same sharded eval step.
            context, state = create_train_state(model, optax.identity(), seed=args.seed, precision=precision,
                                                mesh=mesh, fsdp=args.fsdp)
        eval_examples = squad.read_squad_examples(args.predict_file, is_training=False,
                                                  version_2_with_negative=args.version_2_with_negative)
        eval_features = squad.convert_examples_to_features(
            eval_examples, tokenizer, args.max_seq_length, args.doc_stride, args.max_query_length, is_training=False)
        logger.info("***** Running predictions *****")
        logger.info("  Num orig examples = %d", len(eval_examples))
        logger.info("  Num split examples = %d", len(eval_features))
        logger.info("  Batch size = %d", predict_batch_size)
        eval_step = make_eval_step(context, squad_logits)
        from jaxformers.training.bucketing import Bucketer

        results = predict_raw_results(eval_step, state, context, eval_features, predict_batch_size,
                                      Bucketer.from_args(args))

        output = Path(args.output_dir)
        null_odds_file = output / "null_odds.json" if args.version_2_with_negative else None
        if is_main:
            predicted = squad.write_predictions(
                eval_examples, eval_features, results, args.n_best_size, args.max_answer_length,
                args.do_lower_case, output / "predictions.json", output / "nbest_predictions.json", null_odds_file,
                args.verbose_logging, args.version_2_with_negative, args.null_score_diff_threshold)
        else:
            predicted = squad.postprocess_predictions(
                eval_examples, eval_features, results, args.n_best_size, args.max_answer_length,
                args.do_lower_case, args.version_2_with_negative, args.null_score_diff_threshold)
        outputs["predictions"] = predicted.predictions

        dataset = squad.load_squad_dataset(args.predict_file)
        if has_gold_answers(dataset):
            if args.version_2_with_negative:
                metrics = squad.evaluate_v2(dataset, predicted.predictions, predicted.null_odds)
            else:
                metrics = squad.evaluate_v1(dataset, predicted.predictions)
            outputs["eval_results"] = metrics
            write_eval_results(args.output_dir, metrics)
        else:
            logger.info("%s has no gold answers: skipping the EM/F1 evaluation", args.predict_file)
    if args.do_train:
        release_output_dir(args.output_dir)
    return outputs


if __name__ == "__main__":
    main()
