#!/usr/bin/env python3
"""BERTology: look inside a fine-tuned BERT classifier (the pytorch-pretrained-bert ``examples/bertology.py``,
with the pytorch-transformers 1.2 head-mask formulation, compiled by JAX).

1. Attention entropy of every head, averaged over the real (non-padding) tokens of a GLUE dev set.
2. Head importance (Michel et al. 2019, http://arxiv.org/abs/1905.10650): the absolute gradient of the loss with
   respect to a ``[layers, heads]`` head mask of ones, summed over batches and divided by the token count, then
   normalised per layer (L2) and globally to [0, 1] (``--dont_normalize_importance_by_layer``,
   ``--dont_normalize_global_importance`` turn these off).
3. With ``--try_masking``: repeatedly mask the ``--masking_amount`` fraction of heads with the lowest
   importance, recomputing importance under the current mask, while the metric stays at or above
   ``--masking_threshold`` times its original value; then prune the masked heads for real (the attention
   weights are sliced away, see :func:`prune_heads`) and compare score, size and speed.

Outputs in ``--output_dir``: ``attn_entropy.npy``, ``head_importance.npy``, ``head_mask.npy`` (with masking) and
``bertology_results.json`` (scores, parameter counts, timings).

Differences from the reference: the gradient is taken per batch (the reference never clears ``head_mask.grad``,
so from the second batch on it adds up stale gradients; with one batch the two agree), and the masking loop also
stops once every head is masked (the reference loops forever when the metric cannot drop).

    python examples/bertology.py --model_name_or_path bert-base-cased-finetuned-mrpc --task_name mrpc \\
        --data_dir glue/MRPC --output_dir out --try_masking --batch_size 32
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

logger = logging.getLogger("bertology")


# ---------------------------------------------------------------------------------------------------- GLUE dev


@dataclasses.dataclass(frozen=True)
class GlueTask:
    dev_file: str
    text_a: int  # column indexes in the TSV
    text_b: int | None
    label: int
    labels: tuple[str, ...] | None  # None: regression
    header: bool = True


GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask("dev.tsv", 3, None, 1, ("0", "1"), header=False),
    "sst-2": GlueTask("dev.tsv", 0, None, 1, ("0", "1")),
    "mrpc": GlueTask("dev.tsv", 3, 4, 0, ("0", "1")),
    "sts-b": GlueTask("dev.tsv", 7, 8, -1, None),
    "qqp": GlueTask("dev.tsv", 3, 4, 5, ("0", "1")),
    "mnli": GlueTask("dev_matched.tsv", 8, 9, -1, ("contradiction", "entailment", "neutral")),
    "mnli-mm": GlueTask("dev_mismatched.tsv", 8, 9, -1, ("contradiction", "entailment", "neutral")),
    "qnli": GlueTask("dev.tsv", 1, 2, -1, ("entailment", "not_entailment")),
    "rte": GlueTask("dev.tsv", 1, 2, -1, ("entailment", "not_entailment")),
    "wnli": GlueTask("dev.tsv", 1, 2, -1, ("0", "1")),
}


def read_glue_dev(task_name: str, data_dir: str) -> tuple[list[tuple[str, str | None]], np.ndarray, GlueTask]:
    """Texts and labels (class indexes, or floats for STS-B) of a task's dev TSV."""
    if task_name not in GLUE_TASKS:
        raise ValueError(f"unknown --task_name {task_name!r}; expected one of {sorted(GLUE_TASKS)}")
    task = GLUE_TASKS[task_name]
    path = os.path.join(data_dir, task.dev_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{task_name} dev set not found: expected {path!r}")
    texts, labels = [], []
    with open(path, encoding="utf-8-sig") as reader:
        rows = list(csv.reader(reader, delimiter="\t", quotechar=None))
    for line_number, row in enumerate(rows[1:] if task.header else rows, start=2 if task.header else 1):
        try:
            text_b = None if task.text_b is None else row[task.text_b]
            texts.append((row[task.text_a], text_b))
            raw_label = row[task.label]
        except IndexError:
            raise ValueError(f"{path}:{line_number}: too few columns ({len(row)}) for task {task_name}") from None
        if task.labels is None:
            labels.append(float(raw_label))
        elif raw_label in task.labels:
            labels.append(task.labels.index(raw_label))
        else:
            raise ValueError(f"{path}:{line_number}: label {raw_label!r} is not one of {task.labels}")
    return texts, np.asarray(labels, np.float32 if task.labels is None else np.int32), task


def encode_pairs(texts: Sequence[tuple[str, str | None]], tokenizer, max_seq_length: int) -> dict[str, np.ndarray]:
    """``[CLS] a [SEP] (b [SEP])``, longest-first truncation, zero padding: ids, mask and segment ids."""
    count = len(texts)
    input_ids = np.zeros((count, max_seq_length), np.int32)
    input_mask = np.zeros_like(input_ids)
    segment_ids = np.zeros_like(input_ids)
    for row, (text_a, text_b) in enumerate(texts):
        tokens_a = tokenizer.tokenize(text_a)
        tokens_b = tokenizer.tokenize(text_b) if text_b else []
        budget = max_seq_length - (3 if tokens_b else 2)
        while len(tokens_a) + len(tokens_b) > budget:
            (tokens_a if len(tokens_a) > len(tokens_b) else tokens_b).pop()
        tokens = ["[CLS]", *tokens_a, "[SEP]"]
        segments = [0] * len(tokens)
        if tokens_b:
            tokens += [*tokens_b, "[SEP]"]
            segments += [1] * (len(tokens_b) + 1)
        ids = tokenizer.convert_tokens_to_ids(tokens)
        input_ids[row, :len(ids)] = ids
        input_mask[row, :len(ids)] = 1
        segment_ids[row, :len(ids)] = segments
    return {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids}


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, tied values sharing their mean rank (Spearman's convention)."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    unique, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks, minlength=len(unique))
    return (sums / np.bincount(inverse, minlength=len(unique)))[inverse]


def compute_metrics(task_name: str, preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The GLUE metrics under the reference's names (acc, f1, acc_and_f1, mcc, pearson, spearmanr, corr)."""
    if task_name == "sts-b":
        pearson = float(np.corrcoef(preds, labels)[0, 1])
        spearman = float(np.corrcoef(average_ranks(preds), average_ranks(labels))[0, 1])
        return {"pearson": pearson, "spearmanr": spearman, "corr": (pearson + spearman) / 2}
    acc = float(np.mean(preds == labels))
    if task_name == "cola":
        tp, tn = np.sum((preds == 1) & (labels == 1)), np.sum((preds == 0) & (labels == 0))
        fp, fn = np.sum((preds == 1) & (labels == 0)), np.sum((preds == 0) & (labels == 1))
        denominator = np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
        return {"mcc": float((tp * tn - fp * fn) / denominator) if denominator else 0.0, "acc": acc}
    if task_name in ("mrpc", "qqp"):
        tp = np.sum((preds == 1) & (labels == 1))
        predicted, actual = np.sum(preds == 1), np.sum(labels == 1)
        f1 = float(2 * tp / (predicted + actual)) if predicted + actual else 0.0
        return {"acc": acc, "f1": f1, "acc_and_f1": (acc + f1) / 2}
    return {"acc": acc}


# --------------------------------------------------------------------------------------- entropy and importance


def entropy(probs):
    """Entropy of the last axis, with 0 log 0 = 0."""
    import jax.numpy as jnp

    positive = probs > 0
    return -jnp.sum(jnp.where(positive, probs * jnp.log(jnp.where(positive, probs, 1.0)), 0.0), axis=-1)


def classification_loss(logits, labels, num_labels: int):
    """Cross-entropy for classifiers, mean squared error when ``num_labels == 1`` (regression, e.g. STS-B)."""
    import jax.numpy as jnp

    from jaxformers.layers import cross_entropy

    if num_labels == 1:
        return jnp.mean(jnp.square(logits.reshape(-1) - labels.reshape(-1).astype(logits.dtype)))
    return cross_entropy(logits.reshape(-1, num_labels), labels.reshape(-1))


def make_head_step(model, num_labels: int) -> Callable:
    """Jitted ``(head_mask, batch) -> (logits, entropy_sum [L, H], |d loss / d head_mask| [L, H])``.

    The model must be built with ``output_attentions=True``. ``head_mask`` may be None (pruned models, no
    importance); the entropy sums are then per layer lists, as head counts may differ between layers.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    model.eval()
    graphdef, state = nnx.split(model)

    def forward(head_mask, batch):
        attentions, logits = nnx.merge(graphdef, state)(
            batch["input_ids"], batch["segment_ids"], batch["input_mask"], head_mask=head_mask)
        loss = classification_loss(logits, batch["labels"], num_labels)
        return loss, (logits, attentions)

    def layer_entropies(attentions, input_mask):
        token_weights = input_mask.astype(jnp.float32)[:, None, :]  # [batch, 1, seq]
        # [batch, heads, seq] masked by real query tokens, summed over queries and batch -> [heads]
        return [jnp.sum(entropy(probs.astype(jnp.float32)) * token_weights, axis=(0, 2)) for probs in attentions]

    @jax.jit
    def with_importance(head_mask, batch):
        grad_fn = jax.grad(forward, has_aux=True)
        grads, (logits, attentions) = grad_fn(head_mask, batch)
        return logits, jnp.stack(layer_entropies(attentions, batch["input_mask"])), jnp.abs(grads)

    @jax.jit
    def without_importance(batch):
        _, (logits, attentions) = forward(None, batch)
        return logits, layer_entropies(attentions, batch["input_mask"]), None

    def step(head_mask, batch):
        batch = {key: jnp.asarray(value) for key, value in batch.items()}
        if head_mask is None:
            return without_importance(batch)
        return with_importance(jnp.asarray(head_mask, jnp.float32), batch)

    return step


@dataclasses.dataclass
class HeadStats:
    attn_entropy: np.ndarray  # [layers, heads] (or a list of per-layer arrays for pruned models)
    head_importance: np.ndarray | None  # [layers, heads], normalised as requested
    preds: np.ndarray  # logits, [examples, num_labels]
    labels: np.ndarray


def iterate_batches(data: dict[str, np.ndarray], batch_size: int) -> Iterable[dict[str, np.ndarray]]:
    count = len(data["input_ids"])
    for start in range(0, count, batch_size):
        yield {key: value[start:start + batch_size] for key, value in data.items()}


def normalize_importance(importance: np.ndarray, by_layer: bool = True, globally: bool = True) -> np.ndarray:
    if by_layer:
        norm = np.power(np.power(importance, 2).sum(-1), 0.5)
        importance = importance / (norm[:, None] + 1e-20)
    if globally:
        importance = (importance - importance.min()) / (importance.max() - importance.min())
    return importance


def compute_heads_importance(step: Callable, data: dict[str, np.ndarray], batch_size: int, *,
                             head_mask: np.ndarray | None, num_layers: int, num_heads: int,
                             normalize_by_layer: bool = True, normalize_globally: bool = True) -> HeadStats:
    """Entropy and importance over the whole data set (``head_mask=None``: no importance, for pruned models)."""
    if head_mask is None:
        importance = None
        entropies: Any = None
    else:
        importance = np.zeros((num_layers, num_heads), np.float64)
        entropies = np.zeros((num_layers, num_heads), np.float64)
    logits_parts = []
    total_tokens = 0.0
    for batch in iterate_batches(data, batch_size):
        logits, entropy_sum, grads = step(head_mask, batch)
        if head_mask is None:
            sums = [np.asarray(layer, np.float64) for layer in entropy_sum]
            entropies = sums if entropies is None else [a + b for a, b in zip(entropies, sums)]
        else:
            entropies += np.asarray(entropy_sum, np.float64)
            importance += np.asarray(grads, np.float64)
        logits_parts.append(np.asarray(logits))
        total_tokens += float(batch["input_mask"].sum())
    if head_mask is None:
        entropies = [layer / total_tokens for layer in entropies]
    else:
        entropies = entropies / total_tokens
        importance = normalize_importance(importance / total_tokens, normalize_by_layer, normalize_globally)
    return HeadStats(entropies, importance, np.concatenate(logits_parts), data["labels"])


def predictions(stats: HeadStats, num_labels: int) -> np.ndarray:
    return np.argmax(stats.preds, axis=1) if num_labels > 1 else np.squeeze(stats.preds, -1)


def log_2d(name: str, table: np.ndarray) -> None:
    lines = [name, "lv, h >\t" + "\t".join(str(h + 1) for h in range(table.shape[1]))]
    for layer, row in enumerate(table):
        cells = (f"{x:d}" for x in row) if np.issubdtype(table.dtype, np.integer) else (f"{x:.5f}" for x in row)
        lines.append(f"layer {layer + 1}:\t" + "\t".join(cells))
    logger.info("\n".join(lines))


def head_ranks(importance: np.ndarray) -> np.ndarray:
    """Rank of each head, 0 = most important."""
    order = np.argsort(-importance.reshape(-1), kind="stable")
    ranks = np.empty(order.size, np.int64)
    ranks[order] = np.arange(order.size)
    return ranks.reshape(importance.shape)


def mask_heads(score_and_importance: Callable[[np.ndarray], tuple[float, np.ndarray]], num_layers: int,
               num_heads: int, masking_threshold: float, masking_amount: float) -> tuple[np.ndarray, list[dict]]:
    """Mask the least important heads ``masking_amount`` at a time while the score stays above threshold.

    ``score_and_importance(head_mask) -> (score, importance [layers, heads])``. Returns the last head mask whose
    score passed, and the history of ``{"heads": flat indexes masked, "score": score after}`` steps.
    """
    original_score, importance = score_and_importance(np.ones((num_layers, num_heads), np.float32))
    logger.info("Masking: original score: %f, threshold: %f", original_score, original_score * masking_threshold)
    new_mask = np.ones((num_layers, num_heads), np.float32)
    num_to_mask = max(1, int(new_mask.size * masking_amount))
    history: list[dict] = []
    current_score = original_score
    while current_score >= original_score * masking_threshold:
        head_mask = new_mask.copy()
        if head_mask.size <= num_to_mask or not head_mask.any():
            break
        # least important first, already-masked heads last
        importance = np.where(head_mask == 0.0, np.inf, importance)
        to_mask = np.argsort(importance.reshape(-1), kind="stable")[:num_to_mask]
        logger.info("Heads to mask: %s", to_mask.tolist())
        new_mask = head_mask.reshape(-1).copy()
        new_mask[to_mask] = 0.0
        new_mask = new_mask.reshape(head_mask.shape)
        current_score, importance = score_and_importance(new_mask)
        history.append({"heads": to_mask.tolist(), "score": float(current_score)})
        logger.info("Masking: current score: %f, remaining heads %d (%.1f percent)", current_score, new_mask.sum(),
                    100 * new_mask.sum() / new_mask.size)
    return head_mask, history


# -------------------------------------------------------------------------------------------------- pruning


def prune_heads(model, heads_to_prune: dict[int, Sequence[int]]):
    """A copy of a BERT model (any head model, unrolled layers) without the given heads of each layer.

    Uses the model's own ``prune_heads`` (original head indexes, recorded in ``config.pruned_heads`` so the
    saved copy reloads); the pruned model computes what the original does with those heads masked to 0.
    """
    import copy

    from flax import nnx

    pruned = nnx.clone(model)
    bert = getattr(pruned, "bert", pruned)
    # The clone shares its config object with the original; pruning records heads in it.
    bert.config = copy.deepcopy(bert.config)
    if pruned is not bert:
        pruned.config = bert.config
    pruned.prune_heads(heads_to_prune)
    return pruned


def count_params(model) -> int:
    import jax
    from flax import nnx

    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))


# ------------------------------------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", type=str, default="bert-base-cased-finetuned-mrpc",
                        help="a fine-tuned BertForSequenceClassification: shortcut name or directory")
    parser.add_argument("--task_name", type=str, default="mrpc", help=f"one of {', '.join(GLUE_TASKS)}")
    parser.add_argument("--data_dir", type=str, required=True, help="directory holding the task's dev TSV")
    parser.add_argument("--output_dir", type=str, required=True, help="where the .npy matrices are written")
    parser.add_argument("--data_subset", type=int, default=-1, help="if > 0: use only the first N examples")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="allow a non-empty --output_dir")
    parser.add_argument("--do_lower_case", action="store_true", help="lower-case the input (uncased models)")
    parser.add_argument("--dont_normalize_importance_by_layer", action="store_true",
                        help="don't normalise importance scores per layer")
    parser.add_argument("--dont_normalize_global_importance", action="store_true",
                        help="don't rescale all importance scores to [0, 1]")
    parser.add_argument("--try_masking", action="store_true", help="mask heads down to the score threshold")
    parser.add_argument("--masking_threshold", type=float, default=0.9,
                        help="stop masking when the metric falls below threshold * original metric")
    parser.add_argument("--masking_amount", type=float, default=0.1, help="fraction of heads masked per step")
    parser.add_argument("--metric_name", type=str, default="acc", help="metric used for masking (acc, f1, mcc...)")
    parser.add_argument("--max_seq_length", type=int, default=128,
                        help="sequence length after WordPiece tokenization (truncated / padded)")
    parser.add_argument("--batch_size", type=int, default=1, help="batch size")
    parser.add_argument("--seed", type=int, default=42, help="seed (the computations here are deterministic)")
    parser.add_argument("--model_parallel", type=int, default=1,
                        help="split the model over N devices (tensor parallelism: heads, MLP columns, vocabulary)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    # Before any model loads or any file is written: a typo must cost nothing and leave nothing behind.
    from jaxformers.arguments import check_paths

    check_paths(None, dirs=[("--data_dir", args.data_dir)], output_dirs=[("--output_dir", args.output_dir)],
                models=[("--model_name_or_path", args.model_name_or_path)])
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s -   %(message)s",
                        datefmt="%m/%d/%Y %H:%M:%S", level=logging.INFO)
    task_name = args.task_name.lower()
    if os.path.isdir(args.output_dir) and os.listdir(args.output_dir) and not args.overwrite_output_dir:
        raise ValueError(f"output directory {args.output_dir!r} already exists and is not empty "
                         "(use --overwrite_output_dir)")
    if not 0.0 < args.masking_amount <= 1.0:
        raise ValueError(f"--masking_amount must be in (0, 1], got {args.masking_amount}")
    os.makedirs(args.output_dir, exist_ok=True)

    from jaxformers.models.bert import BertForSequenceClassification
    from jaxformers.tokenizers.bert import BertTokenizer
    from jaxformers.training import place_model

    texts, labels, task = read_glue_dev(task_name, args.data_dir)
    if args.data_subset > 0:
        texts, labels = texts[:args.data_subset], labels[:args.data_subset]
    num_labels = 1 if task.labels is None else len(task.labels)
    tokenizer = BertTokenizer.from_pretrained(args.model_name_or_path, do_lower_case=args.do_lower_case)
    model = BertForSequenceClassification.from_pretrained(args.model_name_or_path, num_labels=num_labels,
                                                          output_attentions=True)
    place_model(model, args)
    num_layers, num_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    data = encode_pairs(texts, tokenizer, args.max_seq_length)
    data["labels"] = labels
    with open(os.path.join(args.output_dir, "run_args.json"), "w", encoding="utf-8") as writer:
        json.dump(vars(args), writer, indent=2, sort_keys=True)

    step = make_head_step(model, num_labels)

    def stats_for(head_mask: np.ndarray | None, the_step: Callable = step) -> HeadStats:
        return compute_heads_importance(
            the_step, data, args.batch_size, head_mask=head_mask, num_layers=num_layers, num_heads=num_heads,
            normalize_by_layer=not args.dont_normalize_importance_by_layer,
            normalize_globally=not args.dont_normalize_global_importance)

    def score(stats: HeadStats) -> float:
        metrics = compute_metrics(task_name, predictions(stats, num_labels), stats.labels)
        if args.metric_name not in metrics:
            raise ValueError(f"--metric_name {args.metric_name!r} is not computed for {task_name}: {sorted(metrics)}")
        return metrics[args.metric_name]

    stats = stats_for(np.ones((num_layers, num_heads), np.float32))
    np.save(os.path.join(args.output_dir, "attn_entropy.npy"), stats.attn_entropy.astype(np.float32))
    np.save(os.path.join(args.output_dir, "head_importance.npy"), stats.head_importance.astype(np.float32))
    log_2d("Attention entropies", stats.attn_entropy)
    log_2d("Head importance scores", stats.head_importance)
    log_2d("Heads ranked by importance scores", head_ranks(stats.head_importance))
    results: dict[str, Any] = {"original_score": score(stats)}

    if args.try_masking and 0.0 < args.masking_threshold < 1.0:
        def score_and_importance(head_mask):
            masked = stats_for(head_mask)
            return score(masked), masked.head_importance

        head_mask, history = mask_heads(score_and_importance, num_layers, num_heads, args.masking_threshold,
                                        args.masking_amount)
        log_2d("Final head mask", head_mask)
        np.save(os.path.join(args.output_dir, "head_mask.npy"), head_mask)
        results.update(masking_steps=history, final_head_mask=head_mask.tolist())

        # Pruning removes the masked heads' weights: same outputs, fewer parameters, less compute.
        start = time.perf_counter()
        results["score_masking"] = score(stats_for(head_mask))
        masked_time = time.perf_counter() - start
        heads_to_prune = {layer: np.flatnonzero(head_mask[layer] == 0).tolist() for layer in range(num_layers)}
        pruned = prune_heads(model, heads_to_prune)
        pruned_step = make_head_step(pruned, num_labels)
        start = time.perf_counter()
        results["score_pruning"] = score(stats_for(None, pruned_step))
        pruned_time = time.perf_counter() - start
        results.update(original_num_params=count_params(model), pruned_num_params=count_params(pruned),
                       masked_time_s=masked_time, pruned_time_s=pruned_time)
        logger.info("Pruning: original num of params: %.2e, after pruning %.2e (%.1f percent)",
                    results["original_num_params"], results["pruned_num_params"],
                    100 * results["pruned_num_params"] / results["original_num_params"])
        logger.info("Pruning: score with masking: %f score with pruning: %f", results["score_masking"],
                    results["score_pruning"])
        logger.info("Pruning: time with masking %.3fs, with pruning %.3fs (both include compilation)",
                    masked_time, pruned_time)
    with open(os.path.join(args.output_dir, "bertology_results.json"), "w", encoding="utf-8") as writer:
        json.dump(results, writer, indent=2)
    return results


if __name__ == "__main__":
    main()
