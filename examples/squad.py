"""SQuAD v1.1 / v2.0 data handling for BERT, importable on its own (no JAX needed).

* :func:`read_squad_examples` reads the official JSON into :class:`SquadExample` objects: the context is split on
  whitespace and every answer's character offset is mapped to word indices.
* :func:`convert_examples_to_features` WordPiece-tokenizes them into fixed-length ``[CLS] question [SEP] context
  [SEP]`` windows, sliding over long contexts with ``doc_stride``, and finds the answer's token span in each.
* :func:`postprocess_predictions` / :func:`write_predictions` turn start/end logits into answer texts (n-best
  search over all windows, the v2.0 no-answer rule, mapping WordPieces back to the original text) and write
  ``predictions.json``, ``nbest_predictions.json`` and, for v2.0, ``null_odds.json``.
* :func:`evaluate_v1` and :func:`evaluate_v2` compute the official EM/F1 scores of ``evaluate-v1.1.py`` and
  ``evaluate-v2.0.py`` (HasAns/NoAns splits, best no-answer threshold) in-process.

Everything follows ``examples/run_squad.py`` of pytorch-pretrained-bert 0.6.2, so features and predictions are
the ones the reference produces for the same model outputs.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import math
import os
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger("squad")

# Unique ids of features start here, as in the reference (handy when comparing logs).
FIRST_UNIQUE_ID = 1_000_000_000


class Tokenizer(Protocol):
    def tokenize(self, text: str) -> list[str]: ...

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]: ...


# ------------------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------------------


@dataclass
class SquadExample:
    """One question on one paragraph. Positions are word indices into ``doc_tokens`` (-1 when impossible);
    the answer fields are only filled when reading training data."""

    qas_id: str
    question_text: str
    doc_tokens: list[str]
    orig_answer_text: str | None = None
    start_position: int | None = None
    end_position: int | None = None
    is_impossible: bool = False


def _is_squad_whitespace(char: str) -> bool:
    # The reference's own definition: ASCII whitespace plus U+202F (narrow no-break space), not str.isspace.
    return char in " \t\r\n" or ord(char) == 0x202F


def split_context(text: str) -> tuple[list[str], list[int]]:
    """Whitespace-split ``text``; also return, for every character, the index of the word it belongs to
    (whitespace maps to the preceding word, or -1 before the first one)."""
    words: list[str] = []
    char_to_word: list[int] = []
    after_space = True
    for char in text:
        if _is_squad_whitespace(char):
            after_space = True
        else:
            if after_space:
                words.append(char)
            else:
                words[-1] += char
            after_space = False
        char_to_word.append(len(words) - 1)
    return words, char_to_word


def _field(record: Mapping[str, Any], key: str, where: str) -> Any:
    try:
        return record[key]
    except (KeyError, TypeError):
        raise ValueError(f"{where}: missing key {key!r}") from None


def load_squad_dataset(input_file: str | os.PathLike) -> list[dict[str, Any]]:
    """The ``data`` list of a SQuAD JSON file, with a clear error for files in another format."""
    path = os.fspath(input_file)
    try:
        with open(path, encoding="utf-8") as reader:
            document = json.load(reader)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    data = _field(document, "data", path)
    if not isinstance(data, list):
        # A ValueError like every other problem with the file's content (not a wrong argument type).
        raise ValueError(f"{path}: 'data' should be a list of articles, got {type(data).__name__}")  # noqa: TRY004
    return data


def read_squad_examples(input_file: str | os.PathLike, is_training: bool,
                        version_2_with_negative: bool = False) -> list[SquadExample]:
    """Read a SQuAD JSON file into examples.

    For training, every answerable question must have exactly one answer; answers whose text cannot be found
    in the whitespace-split context (odd Unicode) are skipped with a warning, as in the reference. With
    ``version_2_with_negative``, questions marked ``is_impossible`` get positions -1 and an empty answer.
    """
    path = os.fspath(input_file)
    examples: list[SquadExample] = []
    for article in load_squad_dataset(path):
        for paragraph in _field(article, "paragraphs", path):
            doc_tokens, char_to_word = split_context(_field(paragraph, "context", f"{path}: a paragraph"))
            for qa in _field(paragraph, "qas", f"{path}: a paragraph"):
                qas_id = _field(qa, "id", f"{path}: a question")
                where = f"{path}: question {qas_id!r}"
                example = SquadExample(qas_id=qas_id, question_text=_field(qa, "question", where),
                                       doc_tokens=doc_tokens)
                if is_training:
                    if version_2_with_negative:
                        example.is_impossible = bool(qa.get("is_impossible", False))
                    answers = _field(qa, "answers", where)
                    if not example.is_impossible and len(answers) != 1:
                        raise ValueError(f"{where}: for training, each question should have exactly 1 answer, "
                                         f"found {len(answers)}")
                    if example.is_impossible:
                        example.start_position = example.end_position = -1
                        example.orig_answer_text = ""
                    else:
                        answer = answers[0]
                        text = _field(answer, "text", where)
                        offset = _field(answer, "answer_start", where)
                        if not text or not 0 <= offset <= offset + len(text) - 1 < len(char_to_word):
                            raise ValueError(f"{where}: answer {text!r} at answer_start={offset} does not fit in "
                                             f"its context of {len(char_to_word)} characters")
                        example.orig_answer_text = text
                        example.start_position = char_to_word[offset]
                        example.end_position = char_to_word[offset + len(text) - 1]
                        # The annotation must be recoverable from the words it spans; when it is not (Unicode
                        # oddities), the reference drops the question from training.
                        span_text = " ".join(doc_tokens[example.start_position:example.end_position + 1])
                        wanted = " ".join(text.split())
                        if wanted not in span_text:
                            logger.warning("Could not find answer: %r vs. %r", span_text, wanted)
                            continue
                examples.append(example)
    return examples


# ------------------------------------------------------------------------------------------------------------
# Features
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DocSpan:
    start: int
    length: int


@dataclass
class SquadFeatures:
    """One ``[CLS] question [SEP] context-window [SEP]`` input (lists padded to ``max_seq_length``).

    token_to_orig_map: input position -> word index in the example's ``doc_tokens`` (context positions only).
    token_is_max_context: input position -> whether this window gives that token its best context.
    start_position / end_position: the answer's input positions for training (0 = [CLS] when the answer is
    not in this window or there is none).
    """

    unique_id: int
    example_index: int
    doc_span_index: int
    tokens: list[str]
    token_to_orig_map: dict[int, int]
    token_is_max_context: dict[int, bool]
    input_ids: list[int]
    input_mask: list[int]
    segment_ids: list[int]
    start_position: int | None = None
    end_position: int | None = None
    is_impossible: bool = False


def improve_answer_span(doc_tokens: Sequence[str], start: int, end: int, tokenizer: Tokenizer,
                        answer_text: str) -> tuple[int, int]:
    """The sub-span of ``[start, end]`` whose WordPieces spell the tokenized answer exactly, if any.

    Character annotations mapped to whole words can be too wide (answer "1895" inside the word "(1895-1943)."),
    and WordPiece splitting lets us narrow them. Tries the widest candidates first, leftmost start first.
    """
    target = " ".join(tokenizer.tokenize(answer_text))
    for new_start in range(start, end + 1):
        for new_end in range(end, new_start - 1, -1):
            if " ".join(doc_tokens[new_start:new_end + 1]) == target:
                return new_start, new_end
    return start, end


def document_spans(num_tokens: int, max_tokens: int, doc_stride: int) -> list[DocSpan]:
    """Windows of at most ``max_tokens`` over ``num_tokens`` context tokens, each starting ``doc_stride``
    (or the window length, if shorter) after the previous one; the last one reaches the end."""
    spans: list[DocSpan] = []
    start = 0
    while start < num_tokens:
        length = min(num_tokens - start, max_tokens)
        spans.append(DocSpan(start, length))
        if start + length == num_tokens:
            break
        start += min(length, doc_stride)
    return spans


def is_max_context(doc_spans: Sequence[DocSpan], span_index: int, position: int) -> bool:
    """Whether ``doc_spans[span_index]`` is the window where the token at ``position`` has the most context.

    A token's context in a window is the smaller of its left and right context, plus a small bonus for longer
    windows; the first window wins ties.
    """
    best_score = None
    best_index = None
    for index, span in enumerate(doc_spans):
        end = span.start + span.length - 1
        if not span.start <= position <= end:
            continue
        score = min(position - span.start, end - position) + 0.01 * span.length
        if best_score is None or score > best_score:
            best_score, best_index = score, index
    return best_index == span_index


def convert_examples_to_features(examples: Sequence[SquadExample], tokenizer: Tokenizer, max_seq_length: int,
                                 doc_stride: int, max_query_length: int, is_training: bool,
                                 log_first: int = 20) -> list[SquadFeatures]:
    """WordPiece features for every window of every example (see :class:`SquadFeatures`).

    The question is cut to ``max_query_length`` tokens; the context is cut into windows of
    ``max_seq_length - len(question) - 3`` tokens (room for [CLS] and two [SEP]). The first ``log_first``
    examples' features are logged at INFO level, as the reference does.
    """
    if doc_stride < 1:
        raise ValueError(f"doc_stride must be >= 1, got {doc_stride}")
    features: list[SquadFeatures] = []
    unique_id = FIRST_UNIQUE_ID
    for example_index, example in enumerate(examples):
        query_tokens = tokenizer.tokenize(example.question_text)[:max_query_length]

        # Every whitespace word's WordPieces, with maps both ways between words and pieces.
        piece_to_word: list[int] = []
        word_to_first_piece: list[int] = []
        pieces: list[str] = []
        for word_index, word in enumerate(example.doc_tokens):
            word_to_first_piece.append(len(pieces))
            for piece in tokenizer.tokenize(word):
                piece_to_word.append(word_index)
                pieces.append(piece)

        answer_start = answer_end = None
        if is_training and example.is_impossible:
            answer_start = answer_end = -1
        elif is_training:
            answer_start = word_to_first_piece[example.start_position]
            if example.end_position < len(example.doc_tokens) - 1:
                answer_end = word_to_first_piece[example.end_position + 1] - 1
            else:
                answer_end = len(pieces) - 1
            answer_start, answer_end = improve_answer_span(pieces, answer_start, answer_end, tokenizer,
                                                           example.orig_answer_text)

        max_tokens_for_doc = max_seq_length - len(query_tokens) - 3
        if max_tokens_for_doc < 1:
            raise ValueError(f"max_seq_length={max_seq_length} leaves no room for the context after a question "
                             f"of {len(query_tokens)} tokens: raise it or lower max_query_length")
        doc_spans = document_spans(len(pieces), max_tokens_for_doc, doc_stride)
        doc_offset = len(query_tokens) + 2  # [CLS] question [SEP]

        for span_index, span in enumerate(doc_spans):
            tokens = ["[CLS]", *query_tokens, "[SEP]"]
            segment_ids = [0] * len(tokens)
            token_to_orig_map: dict[int, int] = {}
            token_is_max_context: dict[int, bool] = {}
            for i in range(span.length):
                piece_index = span.start + i
                token_to_orig_map[len(tokens)] = piece_to_word[piece_index]
                token_is_max_context[len(tokens)] = is_max_context(doc_spans, span_index, piece_index)
                tokens.append(pieces[piece_index])
            tokens.append("[SEP]")
            segment_ids += [1] * (span.length + 1)

            input_ids = tokenizer.convert_tokens_to_ids(tokens)
            input_mask = [1] * len(input_ids)
            padding = max_seq_length - len(input_ids)
            input_ids += [0] * padding
            input_mask += [0] * padding
            segment_ids += [0] * padding

            start_position = end_position = None
            if is_training:
                # An answer outside this window (or no answer) points at [CLS].
                span_end = span.start + span.length - 1
                if example.is_impossible or not (answer_start >= span.start and answer_end <= span_end):
                    start_position = end_position = 0
                else:
                    start_position = answer_start - span.start + doc_offset
                    end_position = answer_end - span.start + doc_offset

            feature = SquadFeatures(
                unique_id=unique_id, example_index=example_index, doc_span_index=span_index, tokens=tokens,
                token_to_orig_map=token_to_orig_map, token_is_max_context=token_is_max_context,
                input_ids=input_ids, input_mask=input_mask, segment_ids=segment_ids,
                start_position=start_position, end_position=end_position, is_impossible=example.is_impossible,
            )
            if example_index < log_first:
                _log_feature(feature, is_training)
            features.append(feature)
            unique_id += 1
    return features


def _log_feature(feature: SquadFeatures, is_training: bool) -> None:
    logger.info("*** Example ***")
    logger.info("unique_id: %s  example_index: %s  doc_span_index: %s", feature.unique_id, feature.example_index,
                feature.doc_span_index)
    logger.info("tokens: %s", " ".join(feature.tokens))
    logger.info("token_to_orig_map: %s", " ".join(f"{k}:{v}" for k, v in feature.token_to_orig_map.items()))
    logger.info("token_is_max_context: %s", " ".join(f"{k}:{v}" for k, v in feature.token_is_max_context.items()))
    logger.info("input_ids: %s", " ".join(map(str, feature.input_ids)))
    if is_training:
        if feature.is_impossible:
            logger.info("impossible example")
        else:
            answer = " ".join(feature.tokens[feature.start_position:feature.end_position + 1])
            logger.info("start_position: %d  end_position: %d  answer: %s", feature.start_position,
                        feature.end_position, answer)


def features_to_arrays(features: Sequence[SquadFeatures], is_training: bool) -> dict[str, np.ndarray]:
    """Stack features into int32 arrays: ``input_ids``, ``input_mask``, ``segment_ids`` ``[n, seq]`` and, for
    training, ``start_positions``, ``end_positions`` ``[n]``."""
    arrays = {
        "input_ids": np.asarray([f.input_ids for f in features], np.int32).reshape(len(features), -1),
        "input_mask": np.asarray([f.input_mask for f in features], np.int32).reshape(len(features), -1),
        "segment_ids": np.asarray([f.segment_ids for f in features], np.int32).reshape(len(features), -1),
    }
    if is_training:
        arrays["start_positions"] = np.asarray([f.start_position for f in features], np.int32)
        arrays["end_positions"] = np.asarray([f.end_position for f in features], np.int32)
    return arrays


# ------------------------------------------------------------------------------------------------------------
# Predictions
# ------------------------------------------------------------------------------------------------------------


@dataclass
class RawResult:
    """The model's logits for one feature: ``start_logits`` / ``end_logits`` over its ``max_seq_length``
    positions (Python floats)."""

    unique_id: int
    start_logits: list[float]
    end_logits: list[float]


def best_indexes(logits: Sequence[float], n_best_size: int) -> list[int]:
    """Positions of the ``n_best_size`` largest logits, largest first (earlier position first on ties)."""
    order = np.argsort(-np.asarray(logits, np.float64), kind="stable")
    return order[:n_best_size].tolist()


def softmax(scores: Sequence[float]) -> list[float]:
    """Softmax in Python floats (float64), as the reference computes the n-best probabilities."""
    if not scores:
        return []
    top = max(scores)
    exps = [math.exp(score - top) for score in scores]
    total = sum(exps)
    return [value / total for value in exps]


def _without_spaces(text: str) -> tuple[str, dict[int, int]]:
    """``text`` with spaces removed, and a map from each kept character's new index to its old one."""
    kept: list[str] = []
    new_to_old: dict[int, int] = {}
    for index, char in enumerate(text):
        if char == " ":
            continue
        new_to_old[len(kept)] = index
        kept.append(char)
    return "".join(kept), new_to_old


@functools.lru_cache(maxsize=2)
def _basic_tokenizer(do_lower_case: bool) -> Any:
    """One shared BasicTokenizer per casing (the reference built one per n-best candidate)."""
    from jaxformers.tokenizers.bert import BasicTokenizer

    return BasicTokenizer(do_lower_case=do_lower_case)


def get_final_text(pred_text: str, orig_text: str, do_lower_case: bool, verbose_logging: bool = False) -> str:
    """Project a prediction made on normalized tokens back onto the original text.

    ``pred_text`` is de-WordPieced text of the predicted tokens (lower-cased, accents stripped, punctuation
    split off); ``orig_text`` is the original words it came from, which may hold more (e.g. "Steve Smith's" for
    a prediction "steve smith"). We basic-tokenize ``orig_text`` the same way, find the prediction in it, and
    map its first and last characters back through the space-free versions of both strings, which line up
    character for character. When anything fails to line up, the whole ``orig_text`` is returned.
    """
    tok_text = " ".join(_basic_tokenizer(do_lower_case).tokenize(orig_text))
    start = tok_text.find(pred_text)
    if start == -1:
        if verbose_logging:
            logger.info("Unable to find text: %r in %r", pred_text, orig_text)
        return orig_text
    end = start + len(pred_text) - 1

    orig_compact, orig_compact_to_full = _without_spaces(orig_text)
    tok_compact, tok_compact_to_full = _without_spaces(tok_text)
    if len(orig_compact) != len(tok_compact):
        if verbose_logging:
            logger.info("Length not equal after stripping spaces: %r vs %r", orig_compact, tok_compact)
        return orig_text
    tok_full_to_compact = {full: compact for compact, full in tok_compact_to_full.items()}

    def to_orig(tok_position: int) -> int | None:
        compact = tok_full_to_compact.get(tok_position)
        return None if compact is None else orig_compact_to_full.get(compact)

    orig_start = to_orig(start)
    if orig_start is None:
        if verbose_logging:
            logger.info("Couldn't map start position")
        return orig_text
    orig_end = to_orig(end)
    if orig_end is None:
        if verbose_logging:
            logger.info("Couldn't map end position")
        return orig_text
    return orig_text[orig_start:orig_end + 1]


@dataclass
class _Candidate:
    feature_index: int
    start_index: int
    end_index: int
    start_logit: float
    end_logit: float


@dataclass
class SquadPredictions:
    """What :func:`postprocess_predictions` returns: per question id, the answer text, the n-best list (dicts
    with ``text``, ``probability``, ``start_logit``, ``end_logit``) and, for v2.0, the no-answer score minus
    the best answer's score."""

    predictions: dict[str, str] = field(default_factory=dict)
    nbest: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    null_odds: dict[str, float] = field(default_factory=dict)


def postprocess_predictions(
    examples: Sequence[SquadExample],
    features: Sequence[SquadFeatures],
    results: Iterable[RawResult],
    n_best_size: int,
    max_answer_length: int,
    do_lower_case: bool,
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
    verbose_logging: bool = False,
) -> SquadPredictions:
    """Answer texts from per-feature logits, exactly as the reference's ``write_predictions`` picks them.

    For each question, the ``n_best_size`` best starts and ends of each window are paired; a pair is kept when
    both lie in the window's context, the start has its max context there, ``start <= end`` and the span is at
    most ``max_answer_length`` tokens. Candidates are ranked by ``start_logit + end_logit``. With v2.0, the
    no-answer candidate (position 0 of the window where it scores lowest) competes too, and the answer is ""
    when ``null score - best non-null score > null_score_diff_threshold``.
    """
    features_by_example: dict[int, list[SquadFeatures]] = collections.defaultdict(list)
    for feature in features:
        features_by_example[feature.example_index].append(feature)
    result_by_id = {result.unique_id: result for result in results}

    out = SquadPredictions()
    for example_index, example in enumerate(examples):
        example_features = features_by_example[example_index]
        candidates: list[_Candidate] = []
        # The no-answer score is the smallest [CLS] score over the windows: the most confident "no answer" from
        # a window that sees the question's context. Starts large (not inf, which JSON cannot hold) like the
        # reference, which matters only for an empty context, where there is no window at all.
        null_score = 1_000_000.0
        null_feature_index = 0
        null_start_logit = null_end_logit = 0.0
        for feature_index, feature in enumerate(example_features):
            try:
                result = result_by_id[feature.unique_id]
            except KeyError:
                raise ValueError(f"no model output for feature {feature.unique_id} of question "
                                 f"{example.qas_id!r}") from None
            starts = best_indexes(result.start_logits, n_best_size)
            ends = best_indexes(result.end_logits, n_best_size)
            if version_2_with_negative:
                feature_null_score = result.start_logits[0] + result.end_logits[0]
                if feature_null_score < null_score:
                    null_score = feature_null_score
                    null_feature_index = feature_index
                    null_start_logit, null_end_logit = result.start_logits[0], result.end_logits[0]
            num_tokens = len(feature.tokens)
            for start in starts:
                for end in ends:
                    if start >= num_tokens or end >= num_tokens:
                        continue
                    if start not in feature.token_to_orig_map or end not in feature.token_to_orig_map:
                        continue
                    if not feature.token_is_max_context.get(start, False):
                        continue
                    if end < start or end - start + 1 > max_answer_length:
                        continue
                    candidates.append(_Candidate(feature_index, start, end, result.start_logits[start],
                                                 result.end_logits[end]))
        if version_2_with_negative:
            candidates.append(_Candidate(null_feature_index, 0, 0, null_start_logit, null_end_logit))
        candidates.sort(key=lambda c: c.start_logit + c.end_logit, reverse=True)

        nbest: list[tuple[str, float, float]] = []  # (text, start_logit, end_logit)
        seen: set[str] = set()
        for candidate in candidates:
            if len(nbest) >= n_best_size:
                break
            if candidate.start_index > 0:
                feature = example_features[candidate.feature_index]
                piece_text = " ".join(feature.tokens[candidate.start_index:candidate.end_index + 1])
                piece_text = piece_text.replace(" ##", "").replace("##", "")  # undo WordPiece splits
                piece_text = " ".join(piece_text.strip().split())
                first_word = feature.token_to_orig_map[candidate.start_index]
                last_word = feature.token_to_orig_map[candidate.end_index]
                orig_text = " ".join(example.doc_tokens[first_word:last_word + 1])
                text = get_final_text(piece_text, orig_text, do_lower_case, verbose_logging)
                if text in seen:
                    continue
            else:
                text = ""
            seen.add(text)
            nbest.append((text, candidate.start_logit, candidate.end_logit))

        if version_2_with_negative:
            if "" not in seen:
                nbest.append(("", null_start_logit, null_end_logit))
            # With only the null answer there would be no best non-null entry: add a placeholder.
            if len(nbest) == 1:
                nbest.insert(0, ("empty", 0.0, 0.0))
        if not nbest:
            nbest.append(("empty", 0.0, 0.0))

        probabilities = softmax([start + end for _, start, end in nbest])
        out.nbest[example.qas_id] = [
            {"text": text, "probability": probability, "start_logit": start, "end_logit": end}
            for (text, start, end), probability in zip(nbest, probabilities)
        ]
        if not version_2_with_negative:
            out.predictions[example.qas_id] = nbest[0][0]
        else:
            best_text, best_start, best_end = next(entry for entry in nbest if entry[0])
            score_diff = null_score - best_start - best_end
            out.null_odds[example.qas_id] = score_diff
            out.predictions[example.qas_id] = "" if score_diff > null_score_diff_threshold else best_text
    return out


def _write_json(path: str | os.PathLike, payload: Any) -> None:
    with open(path, "w", encoding="utf-8") as writer:
        writer.write(json.dumps(payload, indent=4) + "\n")


def write_predictions(
    examples: Sequence[SquadExample],
    features: Sequence[SquadFeatures],
    results: Iterable[RawResult],
    n_best_size: int,
    max_answer_length: int,
    do_lower_case: bool,
    output_prediction_file: str | os.PathLike,
    output_nbest_file: str | os.PathLike,
    output_null_log_odds_file: str | os.PathLike | None,
    verbose_logging: bool = False,
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> SquadPredictions:
    """:func:`postprocess_predictions`, then write ``predictions.json`` (id -> text), ``nbest_predictions.json``
    (id -> n-best list) and, for v2.0, ``null_odds.json`` (id -> score difference), in the reference's layout."""
    logger.info("Writing predictions to: %s", output_prediction_file)
    logger.info("Writing nbest to: %s", output_nbest_file)
    out = postprocess_predictions(examples, features, results, n_best_size, max_answer_length, do_lower_case,
                                  version_2_with_negative, null_score_diff_threshold, verbose_logging)
    _write_json(output_prediction_file, out.predictions)
    _write_json(output_nbest_file, out.nbest)
    if version_2_with_negative:
        if output_null_log_odds_file is None:
            raise ValueError("version_2_with_negative needs output_null_log_odds_file")
        _write_json(output_null_log_odds_file, out.null_odds)
    return out


# ------------------------------------------------------------------------------------------------------------
# Official evaluation (evaluate-v1.1.py and evaluate-v2.0.py, reimplemented)
# ------------------------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace (in that order)."""
    text = text.lower()
    text = "".join(char for char in text if char not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _token_f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    common = collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    """v1.1: normalized strings are equal."""
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
    """v1.1: bag-of-tokens F1 of the normalized strings (0 when nothing is shared, also when both are empty)."""
    return _token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def _questions(dataset: Sequence[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for article in dataset:
        for paragraph in article["paragraphs"]:
            yield from paragraph["qas"]


def evaluate_v1(dataset: Sequence[Mapping[str, Any]], predictions: Mapping[str, str]) -> dict[str, float]:
    """``evaluate-v1.1.py``: mean over all questions of the best EM / F1 against any gold answer, in percent.

    ``dataset`` is the file's ``data`` list. Questions without a prediction score 0 (with a warning).
    """
    exact = f1 = 0.0
    total = 0
    for qa in _questions(dataset):
        total += 1
        if qa["id"] not in predictions:
            logger.warning("Unanswered question %s will receive score 0.", qa["id"])
            continue
        golds = [answer["text"] for answer in qa["answers"]]
        if not golds:
            raise ValueError(f"question {qa['id']!r} has no gold answer: SQuAD v2.0 data needs evaluate_v2 "
                             "(--version_2_with_negative)")
        prediction = predictions[qa["id"]]
        exact += max(float(exact_match_score(prediction, gold)) for gold in golds)
        f1 += max(f1_score(prediction, gold) for gold in golds)
    if total == 0:
        raise ValueError("the dataset has no questions")
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}


def _answer_tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def compute_exact(gold: str, prediction: str) -> int:
    """v2.0: 1 if the normalized strings are equal (so "" matches only "")."""
    return int(normalize_answer(gold) == normalize_answer(prediction))


def compute_f1(gold: str, prediction: str) -> float:
    """v2.0: token F1, except that when either side has no tokens (no answer) it is 1 if both have none."""
    gold_tokens, prediction_tokens = _answer_tokens(gold), _answer_tokens(prediction)
    if not gold_tokens or not prediction_tokens:
        return float(gold_tokens == prediction_tokens)
    return _token_f1(prediction_tokens, gold_tokens)


def _mean_scores(exact: Mapping[str, float], f1: Mapping[str, float], ids: Sequence[str]) -> dict[str, float]:
    return {"exact": 100.0 * sum(exact[k] for k in ids) / len(ids), "f1": 100.0 * sum(f1[k] for k in ids) / len(ids),
            "total": len(ids)}


def _best_threshold(predictions: Mapping[str, str], scores: Mapping[str, float], na_probs: Mapping[str, float],
                    has_answer: Mapping[str, bool]) -> tuple[float, float]:
    """Sweep the no-answer threshold over the questions' ``na_probs`` in increasing order; return the best score
    (percent) and the threshold reaching it. Starting from "answer nothing" (every no-answer question right),
    each step lets one more question keep its prediction."""
    score = best = sum(1 for qid in has_answer if not has_answer[qid])
    best_threshold = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            score += scores[qid]
        elif predictions[qid]:
            score -= 1
        if score > best:
            best, best_threshold = score, na_probs[qid]
    return 100.0 * best / len(scores), best_threshold


def evaluate_v2(dataset: Sequence[Mapping[str, Any]], predictions: Mapping[str, str],
                na_probs: Mapping[str, float] | None = None, na_prob_thresh: float = 1.0) -> dict[str, float]:
    """``evaluate-v2.0.py``: EM/F1 (percent) over all questions and over the HasAns / NoAns subsets.

    Gold answers that normalize to nothing are dropped; a question with none left expects "". When
    ``na_probs`` (per-question no-answer scores, e.g. ``null_odds.json``) is given, a question whose score
    exceeds ``na_prob_thresh`` counts as answered "no answer", and ``best_exact`` / ``best_f1`` with their
    thresholds report the best cut-off. Questions without a prediction are left out (with a warning).
    """
    has_answer = {qa["id"]: bool(qa["answers"]) for qa in _questions(dataset)}
    exact_raw: dict[str, float] = {}
    f1_raw: dict[str, float] = {}
    for qa in _questions(dataset):
        qid = qa["id"]
        golds = [answer["text"] for answer in qa["answers"] if normalize_answer(answer["text"])] or [""]
        if qid not in predictions:
            logger.warning("Missing prediction for %s", qid)
            continue
        exact_raw[qid] = max(compute_exact(gold, predictions[qid]) for gold in golds)
        f1_raw[qid] = max(compute_f1(gold, predictions[qid]) for gold in golds)
    if not exact_raw:
        raise ValueError("no question of the dataset has a prediction")
    given_na_probs = na_probs is not None
    if na_probs is None:
        na_probs = {qid: 0.0 for qid in predictions}
    missing = [qid for qid in exact_raw if qid not in na_probs]
    if missing:
        raise ValueError(f"no no-answer score for questions {missing[:5]}")

    def thresholded(raw: Mapping[str, float]) -> dict[str, float]:
        return {qid: float(not has_answer[qid]) if na_probs[qid] > na_prob_thresh else score
                for qid, score in raw.items()}

    exact, f1 = thresholded(exact_raw), thresholded(f1_raw)
    results: dict[str, float] = dict(_mean_scores(exact, f1, list(exact)))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        ids = [qid for qid in exact if has_answer[qid] == wanted]
        if ids:
            results.update({f"{prefix}_{key}": value for key, value in _mean_scores(exact, f1, ids).items()})
    if given_na_probs:
        results["best_exact"], results["best_exact_thresh"] = _best_threshold(predictions, exact_raw, na_probs,
                                                                              has_answer)
        results["best_f1"], results["best_f1_thresh"] = _best_threshold(predictions, f1_raw, na_probs, has_answer)
    return results


def evaluate_files(data_file: str | os.PathLike, prediction_file: str | os.PathLike,
                   na_prob_file: str | os.PathLike | None = None,
                   version_2_with_negative: bool = False) -> dict[str, float]:
    """Evaluate a written ``predictions.json`` (and ``null_odds.json`` for v2.0) against a SQuAD file."""
    dataset = load_squad_dataset(data_file)
    with open(prediction_file, encoding="utf-8") as reader:
        predictions = json.load(reader)
    if not version_2_with_negative:
        return evaluate_v1(dataset, predictions)
    na_probs = None
    if na_prob_file is not None:
        with open(na_prob_file, encoding="utf-8") as reader:
            na_probs = json.load(reader)
    return evaluate_v2(dataset, predictions, na_probs)


__all__ = [
    "DocSpan",
    "RawResult",
    "SquadExample",
    "SquadFeatures",
    "SquadPredictions",
    "best_indexes",
    "compute_exact",
    "compute_f1",
    "convert_examples_to_features",
    "document_spans",
    "evaluate_files",
    "evaluate_v1",
    "evaluate_v2",
    "exact_match_score",
    "f1_score",
    "features_to_arrays",
    "get_final_text",
    "improve_answer_span",
    "is_max_context",
    "load_squad_dataset",
    "normalize_answer",
    "postprocess_predictions",
    "read_squad_examples",
    "softmax",
    "split_context",
    "write_predictions",
]
