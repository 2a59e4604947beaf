"""GLUE data: the nine tasks' TSV readers, feature conversion for BERT, and their metrics (numpy only).

The readers follow the layout that ``run_classifier.py`` of pytorch-pretrained-bert 0.6.2 expects from the
GLUE download script: which columns hold the texts and the label, whether the first row is a header, and the
label list of each task (whose order fixes the label ids, so a model fine-tuned with the reference predicts the
same ids here). STS-B is a regression task (one output, MSE loss); the others are classification.

Metrics, as in the reference: Matthews correlation for CoLA, accuracy and F1 for MRPC and QQP, Pearson and
Spearman correlations for STS-B, accuracy for the rest. They are written with numpy so the library needs neither
scikit-learn nor scipy; they agree with ``sklearn.metrics`` / ``scipy.stats`` (see tests/test_glue_metrics.py).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "NUM_LABELS",
    "OUTPUT_MODES",
    "PROCESSORS",
    "DataProcessor",
    "InputExample",
    "InputFeatures",
    "acc_and_f1",
    "compute_metrics",
    "convert_examples_to_features",
    "f1_score",
    "features_to_arrays",
    "get_processor",
    "matthews_corrcoef",
    "pearson_and_spearman",
    "pearson_correlation",
    "read_tsv",
    "simple_accuracy",
    "spearman_correlation",
    "truncate_seq_pair",
]


# ------------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class InputExample:
    """One labelled text or text pair. ``label`` is the raw string from the file (a number string for STS-B)."""

    guid: str
    text_a: str
    text_b: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class InputFeatures:
    """One example as BERT inputs, each list ``max_seq_length`` long."""

    input_ids: list[int]
    input_mask: list[int]
    segment_ids: list[int]
    label_id: int | float


# ---------------------------------------------------------------------------------------------------- reading


def read_tsv(path: str | os.PathLike) -> list[list[str]]:
    """Rows of a tab-separated file, split on tabs only.

    Quote characters are ordinary text (GLUE sentences contain unbalanced quotes), as with the reference's
    ``csv.reader(..., quotechar=None)``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GLUE data file not found: {os.fspath(path)!r}")
    with open(path, encoding="utf-8", newline="") as handle:
        return [row for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]


class DataProcessor:
    """Reads one GLUE task. Subclasses set the class attributes that describe the task's files and columns.

    Column indices may be negative (counted from the row's end, e.g. MNLI's label is the last column whatever the
    number of annotator columns). ``guid_column=None`` numbers examples by their row in the file instead.
    """

    labels: tuple[str | None, ...] = ()
    output_mode: str = "classification"
    has_header: bool = True
    text_a_column: int = 0
    text_b_column: int | None = None
    label_column: int = -1
    guid_column: int | None = 0
    train_file: str = "train.tsv"
    dev_file: str = "dev.tsv"
    dev_set_name: str = "dev"
    # QQP's GLUE files contain a few rows with missing fields; the reference skips them instead of failing.
    skip_short_rows: bool = False

    def get_train_examples(self, data_dir: str | os.PathLike) -> list[InputExample]:
        return self._create_examples(os.path.join(data_dir, self.train_file), "train")

    def get_dev_examples(self, data_dir: str | os.PathLike) -> list[InputExample]:
        return self._create_examples(os.path.join(data_dir, self.dev_file), self.dev_set_name)

    def get_labels(self) -> list[str | None]:
        return list(self.labels)

    def _create_examples(self, path: str, set_type: str) -> list[InputExample]:
        columns = [self.text_a_column, self.label_column]
        if self.text_b_column is not None:
            columns.append(self.text_b_column)
        if self.guid_column is not None:
            columns.append(self.guid_column)
        # A row must reach the furthest column counted from either end.
        needed = max(max((c + 1 for c in columns if c >= 0), default=0), max((-c for c in columns if c < 0), default=0))

        examples = []
        skipped = 0
        for index, row in enumerate(read_tsv(path)):
            if index == 0 and self.has_header:
                continue
            if len(row) < needed:
                if self.skip_short_rows:
                    skipped += 1
                    continue
                raise ValueError(
                    f"{path}, line {index + 1}: expected at least {needed} tab-separated columns for "
                    f"{type(self).__name__}, found {len(row)}: {row!r}"
                )
            guid_part = index if self.guid_column is None else row[self.guid_column]
            examples.append(
                InputExample(
                    guid=f"{set_type}-{guid_part}",
                    text_a=row[self.text_a_column],
                    text_b=None if self.text_b_column is None else row[self.text_b_column],
                    label=row[self.label_column],
                )
            )
        if skipped:
            logger.info("%s: skipped %d rows with missing columns", path, skipped)
        return examples


class ColaProcessor(DataProcessor):
    """CoLA: no header; columns source, label, original mark, sentence."""

    labels = ("0", "1")
    has_header = False
    text_a_column, label_column, guid_column = 3, 1, None


class Sst2Processor(DataProcessor):
    """SST-2: header ``sentence  label``."""

    labels = ("0", "1")
    text_a_column, label_column, guid_column = 0, 1, None


class MrpcProcessor(DataProcessor):
    """MRPC: header ``Quality  #1 ID  #2 ID  #1 String  #2 String``; the label comes first."""

    labels = ("0", "1")
    text_a_column, text_b_column, label_column, guid_column = 3, 4, 0, None


class StsbProcessor(DataProcessor):
    """STS-B: ten columns, the sentences in 7 and 8 and the similarity score (0-5) last."""

    labels = (None,)
    output_mode = "regression"
    text_a_column, text_b_column = 7, 8


class QqpProcessor(DataProcessor):
    """QQP: ``id  qid1  qid2  question1  question2  is_duplicate``."""

    labels = ("0", "1")
    text_a_column, text_b_column, label_column = 3, 4, 5
    skip_short_rows = True


class MnliProcessor(DataProcessor):
    """MultiNLI: the sentences in columns 8 and 9, the gold label last; dev is the matched set."""

    labels = ("contradiction", "entailment", "neutral")
    text_a_column, text_b_column = 8, 9
    dev_file, dev_set_name = "dev_matched.tsv", "dev_matched"


class MnliMismatchedProcessor(MnliProcessor):
    """MultiNLI evaluated on the mismatched genres (the reference keeps the ``dev_matched`` guid prefix)."""

    dev_file = "dev_mismatched.tsv"


class QnliProcessor(DataProcessor):
    """QNLI: ``index  question  sentence  label``. The reference names its dev examples ``dev_matched-*``."""

    labels = ("entailment", "not_entailment")
    text_a_column, text_b_column = 1, 2
    dev_set_name = "dev_matched"


class RteProcessor(DataProcessor):
    """RTE: ``index  sentence1  sentence2  label``."""

    labels = ("entailment", "not_entailment")
    text_a_column, text_b_column = 1, 2


class WnliProcessor(DataProcessor):
    """WNLI: ``index  sentence1  sentence2  label``."""

    labels = ("0", "1")
    text_a_column, text_b_column = 1, 2


PROCESSORS: dict[str, type[DataProcessor]] = {
    "cola": ColaProcessor,
    "mnli": MnliProcessor,
    "mnli-mm": MnliMismatchedProcessor,
    "mrpc": MrpcProcessor,
    "sst-2": Sst2Processor,
    "sts-b": StsbProcessor,
    "qqp": QqpProcessor,
    "qnli": QnliProcessor,
    "rte": RteProcessor,
    "wnli": WnliProcessor,
}
OUTPUT_MODES: dict[str, str] = {name: processor.output_mode for name, processor in PROCESSORS.items()}
NUM_LABELS: dict[str, int] = {
    name: 1 if processor.output_mode == "regression" else len(processor.labels)
    for name, processor in PROCESSORS.items()
}


def get_processor(task_name: str) -> DataProcessor:
    """The processor of a task name (case-insensitive, e.g. ``MRPC``, ``SST-2``)."""
    key = task_name.lower()
    if key not in PROCESSORS:
        raise ValueError(f"unknown GLUE task {task_name!r}; choose one of {sorted(PROCESSORS)}")
    return PROCESSORS[key]()


# --------------------------------------------------------------------------------------------------- features


class Tokenizer(Protocol):
    def tokenize(self, text: str) -> list[str]: ...

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]: ...


def truncate_seq_pair(tokens_a: list[str], tokens_b: list[str], max_length: int) -> None:
    """Shorten the pair in place until it fits ``max_length``, always cutting the end of the longer one
    (the second when they are equal): a short sequence loses less information per token removed."""
    while len(tokens_a) + len(tokens_b) > max_length:
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()


def convert_examples_to_features(
    examples: Sequence[InputExample],
    label_list: Sequence[str | None],
    max_seq_length: int,
    tokenizer: Tokenizer,
    output_mode: str,
) -> list[InputFeatures]:
    """``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` token ids, zero-padded to ``max_seq_length``.

    Segment ids are 0 up to and including the first ``[SEP]`` and 1 after it; the mask is 1 on real tokens.
    Classification labels become their index in ``label_list``; regression labels become floats.
    """
    if output_mode not in ("classification", "regression"):
        raise ValueError(f"output_mode must be 'classification' or 'regression', got {output_mode!r}")
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length must be at least 3 ([CLS] a [SEP]), got {max_seq_length}")
    label_ids = {label: index for index, label in enumerate(label_list)}

    features = []
    for example in examples:
        tokens_a = tokenizer.tokenize(example.text_a)
        tokens_b: list[str] = []
        # As in the reference: an empty second text counts as no second text.
        if example.text_b:
            tokens_b = tokenizer.tokenize(example.text_b)
            truncate_seq_pair(tokens_a, tokens_b, max_seq_length - 3)
        else:
            tokens_a = tokens_a[: max_seq_length - 2]

        tokens = ["[CLS]", *tokens_a, "[SEP]"]
        segment_ids = [0] * len(tokens)
        if tokens_b:
            tokens += [*tokens_b, "[SEP]"]
            segment_ids += [1] * (len(tokens_b) + 1)
        input_ids = tokenizer.convert_tokens_to_ids(tokens)
        padding = [0] * (max_seq_length - len(input_ids))

        if output_mode == "classification":
            if example.label not in label_ids:
                raise ValueError(
                    f"example {example.guid!r}: label {example.label!r} is not one of the task's labels "
                    f"{list(label_list)}"
                )
            label_id: int | float = label_ids[example.label]
        else:
            try:
                label_id = float(example.label)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ValueError(
                    f"example {example.guid!r}: regression label {example.label!r} is not a number"
                ) from None

        features.append(
            InputFeatures(
                input_ids=input_ids + padding,
                input_mask=[1] * len(input_ids) + padding,
                segment_ids=segment_ids + padding,
                label_id=label_id,
            )
        )
    if features:
        logger.info("*** first example: %s -> %s", examples[0].guid, features[0])
    return features


def features_to_arrays(features: Sequence[InputFeatures], output_mode: str) -> dict[str, np.ndarray]:
    """Stack features into arrays: ``input_ids``, ``input_mask``, ``segment_ids`` [n, seq] int32 and
    ``label_ids`` [n] (int32, or float32 for regression)."""
    label_dtype = np.float32 if output_mode == "regression" else np.int32
    return {
        "input_ids": np.array([f.input_ids for f in features], dtype=np.int32).reshape(len(features), -1),
        "input_mask": np.array([f.input_mask for f in features], dtype=np.int32).reshape(len(features), -1),
        "segment_ids": np.array([f.segment_ids for f in features], dtype=np.int32).reshape(len(features), -1),
        "label_ids": np.array([f.label_id for f in features], dtype=label_dtype),
    }


# ---------------------------------------------------------------------------------------------------- metrics


def _as_vectors(preds: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    preds, labels = np.asarray(preds).reshape(-1), np.asarray(labels).reshape(-1)
    if preds.shape != labels.shape:
        raise ValueError(f"{preds.shape[0]} predictions for {labels.shape[0]} labels")
    if preds.size == 0:
        raise ValueError("metrics need at least one prediction")
    return preds, labels


def simple_accuracy(preds: Any, labels: Any) -> float:
    preds, labels = _as_vectors(preds, labels)
    return float(np.mean(preds == labels))


def f1_score(preds: Any, labels: Any, positive: int = 1) -> float:
    """Binary F1 of class ``positive``; 0.0 when it is neither predicted nor present (as scikit-learn)."""
    preds, labels = _as_vectors(preds, labels)
    true_pos = np.sum((preds == positive) & (labels == positive))
    false_pos = np.sum((preds == positive) & (labels != positive))
    false_neg = np.sum((preds != positive) & (labels == positive))
    denominator = 2 * true_pos + false_pos + false_neg
    return float(2 * true_pos / denominator) if denominator else 0.0


def matthews_corrcoef(preds: Any, labels: Any) -> float:
    """Matthews correlation (multi-class form, from the confusion matrix); 0.0 when either side is constant."""
    preds, labels = _as_vectors(preds, labels)
    classes, encoded = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    true_ids, pred_ids = encoded[: labels.size], encoded[labels.size:]
    confusion = np.zeros((classes.size, classes.size), dtype=np.float64)  # [true, predicted]
    np.add.at(confusion, (true_ids, pred_ids), 1.0)
    true_counts, pred_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    correct, total = np.trace(confusion), confusion.sum()
    covariance = correct * total - true_counts @ pred_counts
    spread_pred = total**2 - pred_counts @ pred_counts
    spread_true = total**2 - true_counts @ true_counts
    if spread_pred * spread_true == 0:
        return 0.0
    return float(covariance / np.sqrt(spread_true * spread_pred))


def pearson_correlation(x: Any, y: Any) -> float:
    """Pearson's r (nan if either input is constant, as scipy)."""
    x, y = (v.astype(np.float64) for v in _as_vectors(x, y))
    x, y = x - x.mean(), y - y.mean()
    scale_x, scale_y = np.abs(x).max(), np.abs(y).max()
    if scale_x == 0 or scale_y == 0:
        return float("nan")
    # Rescaling first keeps the sums of squares away from under/overflow for tiny or huge values.
    x, y = x / scale_x, y / scale_y
    return float(np.clip((x @ y) / np.sqrt((x @ x) * (y @ y)), -1.0, 1.0))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values, and the run each sorted position belongs to.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    run_of = np.cumsum(np.r_[True, sorted_values[1:] != sorted_values[:-1]]) - 1
    ends = np.r_[starts[1:], values.size]  # exclusive
    average = (starts + 1 + ends) / 2.0  # mean of 1-based positions starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = average[run_of]
    return ranks


def spearman_correlation(x: Any, y: Any) -> float:
    """Spearman's rho: Pearson's r of the average ranks."""
    x, y = _as_vectors(x, y)
    return pearson_correlation(_average_ranks(x), _average_ranks(y))


def acc_and_f1(preds: Any, labels: Any) -> dict[str, float]:
    acc, f1 = simple_accuracy(preds, labels), f1_score(preds, labels)
    return {"acc": acc, "f1": f1, "acc_and_f1": (acc + f1) / 2}


def pearson_and_spearman(preds: Any, labels: Any) -> dict[str, float]:
    pearson, spearman = pearson_correlation(preds, labels), spearman_correlation(preds, labels)
    return {"pearson": pearson, "spearmanr": spearman, "corr": (pearson + spearman) / 2}


def compute_metrics(task_name: str, preds: Any, labels: Any) -> dict[str, float]:
    """The reference's metric dict for a task: ``mcc``; ``acc``; ``acc``, ``f1``, ``acc_and_f1``; or
    ``pearson``, ``spearmanr``, ``corr``. ``preds`` are label ids (classification) or scores (STS-B)."""
    task = task_name.lower()
    if task == "cola":
        return {"mcc": matthews_corrcoef(preds, labels)}
    if task in ("mrpc", "qqp"):
        return acc_and_f1(preds, labels)
    if task == "sts-b":
        return pearson_and_spearman(preds, labels)
    if task in ("sst-2", "mnli", "mnli-mm", "qnli", "rte", "wnli"):
        return {"acc": simple_accuracy(preds, labels)}
    raise KeyError(f"unknown GLUE task {task_name!r}; choose one of {sorted(PROCESSORS)}")
