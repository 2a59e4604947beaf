"""examples/squad.py: SQuAD reading, windowed features, n-best post-processing and the official EM/F1 metrics.

Every expected value here is a worked example computed by hand (the arithmetic is in the comments), following
the rules of the reference scripts (pytorch-pretrained-bert 0.6.2 ``run_squad.py``, ``evaluate-v1.1.py``,
``evaluate-v2.0.py``), which are not installed and so cannot be run side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from script_loader import load_script


squad = load_script("examples/squad.py")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "denver", "broncos", "won", "super", "bowl", "50",
         "in", "santa", "clara", ",", "california", ".", "who", "where", "was", "it", "played", "?", "(", ")",
         "-", "1895", "1943", "born", "smith", "steve", "'", "s", "##s", "when", "team", "game", "what"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from jaxformers.tokenizers.bert import BertTokenizer

    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return BertTokenizer(str(path), do_lower_case=True)


# ------------------------------------------------------------------------------------------------------------
# Official metrics
# ------------------------------------------------------------------------------------------------------------


def test_normalize_answer_order_of_operations():
    # lower -> drop punctuation -> drop articles -> collapse spaces.
    assert squad.normalize_answer("The  Cat, sat!") == "cat sat"
    # Punctuation goes before articles are matched: "a-b" -> "ab" is not an article, "(the)" -> "the" is.
    assert squad.normalize_answer("a-b (the) An") == "ab"
    # Articles only as whole words.
    assert squad.normalize_answer("Theatre anthem") == "theatre anthem"
    # Non-ASCII punctuation is kept (string.punctuation is ASCII only).
    assert squad.normalize_answer("«Paris»") == "«paris»"


def test_v1_exact_and_f1_worked_examples():
    assert squad.exact_match_score("the Denver Broncos!", "Denver broncos")
    assert not squad.exact_match_score("Denver", "Denver Broncos")
    # pred tokens [cat, sat, on, mat], gold [cat, on, mat]: 3 shared; P = 3/4, R = 1, F1 = 1.5 / 1.75 = 6/7.
    assert squad.f1_score("the cat sat on the mat", "a cat on mat") == pytest.approx(6 / 7)
    # Shared counts are clipped: pred [red, red, red], gold [red, blue]: 1 shared; P = 1/3, R = 1/2, F1 = 0.4.
    assert squad.f1_score("red red red", "red blue") == pytest.approx(0.4)
    # v1.1 quirk: two empty answers share no token, so F1 is 0 (v2.0 says 1).
    assert squad.f1_score("", "") == 0
    assert squad.f1_score("the", "an") == 0


def _dataset(questions):
    """A SQuAD `data` list with one article and one paragraph holding `questions`."""
    return [{"title": "t", "paragraphs": [{"context": "unused", "qas": questions}]}]


def test_evaluate_v1_worked_example():
    dataset = _dataset([
        {"id": "q1", "question": "?", "answers": [{"text": "Denver Broncos"}, {"text": "the Denver Broncos"}]},
        {"id": "q2", "question": "?", "answers": [{"text": "Santa Clara, California"}, {"text": "Santa Clara"}]},
        {"id": "q3", "question": "?", "answers": [{"text": "Levi's Stadium"}]},
        {"id": "q4", "question": "?", "answers": [{"text": "February 7, 2016"}]},
    ])
    predictions = {
        "q1": "Broncos",  # EM 0; F1 vs "denver broncos": P 1, R 1/2 -> 2/3 (same against the other gold)
        "q2": "santa clara",  # EM 1 (second gold), F1 1
        "q3": "Levi's Stadium in Santa Clara",  # pred [levis, stadium, in, santa, clara] vs [levis, stadium]:
        # P = 2/5, R = 1 -> F1 = 0.8 / 1.4 = 4/7
        # q4 unanswered -> 0
    }
    result = squad.evaluate_v1(dataset, predictions)
    assert result["exact_match"] == pytest.approx(100 * 1 / 4)
    assert result["f1"] == pytest.approx(100 * (2 / 3 + 1 + 4 / 7 + 0) / 4)


def test_v2_exact_and_f1_no_answer_rules():
    assert squad.compute_exact("", "") == 1
    assert squad.compute_f1("", "") == 1.0
    assert squad.compute_f1("", "1999") == 0.0
    assert squad.compute_f1("1999", "") == 0.0
    # "the" normalizes to nothing, which counts as an empty answer for F1.
    assert squad.compute_f1("the", "") == 1.0
    # pred [santa, clara] vs gold [santa, clara, california]: P = 1, R = 2/3 -> F1 = 0.8.
    assert squad.compute_f1("Santa Clara, California", "Santa Clara") == pytest.approx(0.8)


V2_DATASET = _dataset([
    {"id": "q1", "question": "?", "answers": [{"text": "Denver Broncos"}, {"text": "the Denver Broncos"}]},
    {"id": "q2", "question": "?", "answers": [{"text": "Santa Clara, California"}]},
    {"id": "q3", "question": "?", "answers": [], "is_impossible": True},
    {"id": "q4", "question": "?", "answers": [], "is_impossible": True},
])
V2_PREDICTIONS = {"q1": "Denver Broncos", "q2": "Santa Clara", "q3": "", "q4": "1999"}
# Raw scores: q1 EM 1 F1 1; q2 EM 0 F1 0.8; q3 (no answer, predicted none) 1 / 1; q4 (no answer, answered) 0 / 0.
V2_NA_PROBS = {"q1": 0.1, "q2": -2.0, "q3": 3.0, "q4": 0.5}


def test_evaluate_v2_without_na_probs():
    result = squad.evaluate_v2(V2_DATASET, V2_PREDICTIONS)
    assert result["total"] == 4
    assert result["exact"] == pytest.approx(100 * (1 + 0 + 1 + 0) / 4)  # 50
    assert result["f1"] == pytest.approx(100 * (1 + 0.8 + 1 + 0) / 4)  # 70
    assert (result["HasAns_exact"], result["HasAns_f1"], result["HasAns_total"]) == pytest.approx((50, 90, 2))
    assert (result["NoAns_exact"], result["NoAns_f1"], result["NoAns_total"]) == pytest.approx((50, 50, 2))
    assert "best_f1" not in result


def test_evaluate_v2_best_threshold_worked_example():
    result = squad.evaluate_v2(V2_DATASET, V2_PREDICTIONS, V2_NA_PROBS)
    # na_prob_thresh = 1.0: only q3 (3.0) is forced to "no answer", which it already was: same as raw.
    assert result["exact"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(70.0)
    # Sweep in na order q2 (-2.0), q1 (0.1), q4 (0.5), q3 (3.0), starting from 2 (both no-answer questions right):
    #   exact: q2 +0 -> 2; q1 +1 -> 3 (best, thresh 0.1); q4 answered wrongly -1 -> 2; q3 +0 -> 2.
    #   f1:    q2 +0.8 -> 2.8 (best, thresh -2.0); q1 +1 -> 3.8 (best, thresh 0.1); q4 -1 -> 2.8; q3 -> 2.8.
    assert result["best_exact"] == pytest.approx(100 * 3 / 4)
    assert result["best_exact_thresh"] == pytest.approx(0.1)
    assert result["best_f1"] == pytest.approx(100 * 3.8 / 4)
    assert result["best_f1_thresh"] == pytest.approx(0.1)


def test_evaluate_v2_with_lower_na_threshold():
    # With threshold 0.2, q4 (0.5) also becomes "no answer", which is right: EM (1+0+1+1)/4, F1 (1+.8+1+1)/4.
    result = squad.evaluate_v2(V2_DATASET, V2_PREDICTIONS, V2_NA_PROBS, na_prob_thresh=0.2)
    assert result["exact"] == pytest.approx(75.0)
    assert result["f1"] == pytest.approx(95.0)
    assert result["NoAns_exact"] == pytest.approx(100.0)


def test_evaluate_v2_drops_golds_that_normalize_to_nothing():
    dataset = _dataset([{"id": "q", "question": "?", "answers": [{"text": "The"}]}])
    # The only gold answer normalizes to "", so the expected answer is "" (but the question still counts as HasAns).
    assert squad.evaluate_v2(dataset, {"q": ""})["exact"] == 100.0
    assert squad.evaluate_v2(dataset, {"q": "the end"})["f1"] == 0.0


def test_evaluate_files_reads_written_predictions(tmp_path):
    data_file = tmp_path / "dev.json"
    data_file.write_text(json.dumps({"version": "v2.0", "data": V2_DATASET}))
    (tmp_path / "predictions.json").write_text(json.dumps(V2_PREDICTIONS))
    (tmp_path / "null_odds.json").write_text(json.dumps(V2_NA_PROBS))
    result = squad.evaluate_files(data_file, tmp_path / "predictions.json", tmp_path / "null_odds.json",
                                  version_2_with_negative=True)
    assert result == squad.evaluate_v2(V2_DATASET, V2_PREDICTIONS, V2_NA_PROBS)
    # v2.0 data has questions without answers, which the v1.1 metric cannot score.
    with pytest.raises(ValueError, match="question 'q3' has no gold answer"):
        squad.evaluate_files(data_file, tmp_path / "predictions.json")


# ------------------------------------------------------------------------------------------------------------
# Reading and features
# ------------------------------------------------------------------------------------------------------------


def test_split_context_maps_characters_to_words():
    words, char_to_word = squad.split_context(" Hi  you\u202fthere\n")
    assert words == ["Hi", "you", "there"]
    # " H i _ _ y o u NNBSP t h e r e \n": whitespace maps to the word before it (-1 before any word).
    assert char_to_word == [-1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]


def _write_squad(path: Path, questions_by_context: dict[str, list[dict]], version: str = "1.1") -> Path:
    data = [{"title": "t", "paragraphs": [{"context": context, "qas": qas}
                                          for context, qas in questions_by_context.items()]}]
    path.write_text(json.dumps({"version": version, "data": data}), encoding="utf-8")
    return path


CONTEXT = "The Denver Broncos won Super Bowl 50 in Santa Clara, California."


def test_read_squad_examples_training_positions(tmp_path):
    start = CONTEXT.index("Santa")
    path = _write_squad(tmp_path / "train.json", {CONTEXT: [
        {"id": "a", "question": "Where was it played?", "answers": [{"text": "Santa Clara", "answer_start": start}]},
        # The answer is a part of the word "Clara,": it maps to the whole word.
        {"id": "b", "question": "Where?", "answers": [{"text": "Clara", "answer_start": CONTEXT.index("Clara")}]},
        {"id": "c", "question": "Who lost?", "answers": [], "is_impossible": True},
    ]}, version="v2.0")
    examples = squad.read_squad_examples(path, is_training=True, version_2_with_negative=True)
    assert [e.qas_id for e in examples] == ["a", "b", "c"]
    a, b, c = examples
    assert a.doc_tokens[8:10] == ["Santa", "Clara,"]
    assert (a.start_position, a.end_position, a.orig_answer_text, a.is_impossible) == (8, 9, "Santa Clara", False)
    assert (b.start_position, b.end_position) == (9, 9)
    assert (c.start_position, c.end_position, c.orig_answer_text, c.is_impossible) == (-1, -1, "", True)
    # For prediction no answers are read.
    for example in squad.read_squad_examples(path, is_training=False, version_2_with_negative=True):
        assert example.start_position is None and example.orig_answer_text is None and not example.is_impossible


def test_read_squad_examples_errors_and_skips(tmp_path, caplog):
    two_answers = _write_squad(tmp_path / "two.json", {CONTEXT: [
        {"id": "x", "question": "?", "answers": [{"text": "The", "answer_start": 0}, {"text": "The",
                                                                                       "answer_start": 0}]}]})
    with pytest.raises(ValueError, match=r"two\.json: question 'x'.*exactly 1 answer"):
        squad.read_squad_examples(two_answers, is_training=True)
    out_of_range = _write_squad(tmp_path / "range.json", {CONTEXT: [
        {"id": "y", "question": "?", "answers": [{"text": "zzz", "answer_start": 500}]}]})
    with pytest.raises(ValueError, match=r"range\.json: question 'y'.*answer_start=500"):
        squad.read_squad_examples(out_of_range, is_training=True)
    (tmp_path / "bad.json").write_text(json.dumps({"paragraphs": []}))
    with pytest.raises(ValueError, match=r"bad\.json: missing key 'data'"):
        squad.read_squad_examples(tmp_path / "bad.json", is_training=False)
    # An answer whose text is not what its offset points at is dropped with a warning, as the reference does.
    mismatch = _write_squad(tmp_path / "mismatch.json", {CONTEXT: [
        {"id": "z", "question": "?", "answers": [{"text": "Broncos", "answer_start": 0}]}]})
    assert squad.read_squad_examples(mismatch, is_training=True) == []
    assert "Could not find answer" in caplog.text


def test_document_spans_and_max_context():
    spans = squad.document_spans(10, 4, 3)
    assert spans == [squad.DocSpan(0, 4), squad.DocSpan(3, 4), squad.DocSpan(6, 4)]
    # Stride larger than the window: windows follow each other without overlap.
    assert squad.document_spans(5, 2, 10) == [squad.DocSpan(0, 2), squad.DocSpan(2, 2), squad.DocSpan(4, 1)]
    # Token 3: window 0 gives min(3, 0) + 0.04, window 1 gives min(0, 3) + 0.04: a tie, the first wins.
    assert squad.is_max_context(spans, 0, 3) and not squad.is_max_context(spans, 1, 3)
    # Token 5 lies in window 1 (3..6) only.
    assert squad.is_max_context(spans, 1, 5)
    # Token 7 lies in window 2 (6..9) only: window 1 ends at 6.
    assert squad.is_max_context(spans, 2, 7) and not squad.is_max_context(spans, 1, 7)
    # Unequal lengths: token 4 of [0..4] (len 5: min(4,0)+.05) vs [3..5] (len 3: min(1,1)+.03 = 1.03).
    uneven = [squad.DocSpan(0, 5), squad.DocSpan(3, 3)]
    assert squad.is_max_context(uneven, 1, 4)


def test_improve_answer_span(tokenizer):
    pieces = tokenizer.tokenize("(1895-1943).")
    assert pieces == ["(", "1895", "-", "1943", ")", "."]
    assert squad.improve_answer_span(pieces, 0, 5, tokenizer, "1895") == (1, 1)
    # No sub-span matches: the input span is kept.
    assert squad.improve_answer_span(pieces, 0, 5, tokenizer, "1900") == (0, 5)


def test_convert_examples_to_features_windows(tmp_path, tokenizer):
    # 12 context pieces: the denver broncos won super bowl 50 in santa clara , california .  (13 with ".")
    start = CONTEXT.index("Santa")
    path = _write_squad(tmp_path / "train.json", {CONTEXT: [
        {"id": "a", "question": "Where was it played?", "answers": [{"text": "Santa Clara", "answer_start": start}]},
        {"id": "c", "question": "Who?", "answers": [], "is_impossible": True},
    ]}, version="v2.0")
    examples = squad.read_squad_examples(path, is_training=True, version_2_with_negative=True)
    # Question "where was it played ?" = 5 pieces -> 16 - 5 - 3 = 8 context pieces per window, stride 4.
    features = squad.convert_examples_to_features(examples, tokenizer, max_seq_length=16, doc_stride=4,
                                                  max_query_length=8, is_training=True)
    first = [f for f in features if f.example_index == 0]
    # 13 context pieces, windows of 8 with stride 4: [0..7], [4..11], [8..12].
    assert [f.doc_span_index for f in first] == [0, 1, 2]
    assert first[0].tokens == ["[CLS]", "where", "was", "it", "played", "?", "[SEP]", "the", "denver", "broncos",
                               "won", "super", "bowl", "50", "in", "[SEP]"]
    assert first[0].segment_ids == [0] * 7 + [1] * 9
    assert first[0].input_mask == [1] * 16
    assert first[0].input_ids == [VOCAB.index(t) for t in first[0].tokens]
    assert first[0].token_to_orig_map == {7 + i: i for i in range(8)}
    # The answer "santa clara" is pieces 8..9 (word "Clara," gives "clara" and ","), improved from 8..10.
    assert [(f.start_position, f.end_position) for f in first] == [(0, 0), (7 + 4, 7 + 5), (7, 8)]
    assert first[1].tokens[11:13] == ["santa", "clara"]
    # Last window: 5 context pieces + [SEP], then padding.
    assert first[2].input_mask == [1] * 13 + [0] * 3 and first[2].input_ids[13:] == [0, 0, 0]
    # Max context: piece 8 ("santa") is in windows 1 (left 4, right 3) and 2 (left 0): window 1 owns it.
    assert first[1].token_is_max_context[11] and not first[2].token_is_max_context[7]
    assert first[2].token_to_orig_map[8] == 9 and first[2].token_to_orig_map[9] == 9  # "clara" and "," -> "Clara,"
    # The impossible question points at [CLS] in every window; unique ids run on across examples.
    impossible = [f for f in features if f.example_index == 1]
    assert all((f.start_position, f.end_position, f.is_impossible) == (0, 0, True) for f in impossible)
    assert [f.unique_id for f in features] == list(range(squad.FIRST_UNIQUE_ID,
                                                         squad.FIRST_UNIQUE_ID + len(features)))
    arrays = squad.features_to_arrays(features, is_training=True)
    assert arrays["input_ids"].shape == (len(features), 16)
    assert arrays["start_positions"].tolist() == [f.start_position for f in features]


def test_convert_examples_to_features_rejects_tiny_windows(tmp_path, tokenizer):
    path = _write_squad(tmp_path / "dev.json", {CONTEXT: [{"id": "a", "question": "Where was it played?",
                                                           "answers": []}]})
    examples = squad.read_squad_examples(path, is_training=False)
    with pytest.raises(ValueError, match="max_seq_length=8 leaves no room"):
        squad.convert_examples_to_features(examples, tokenizer, 8, 4, 64, is_training=False)


# ------------------------------------------------------------------------------------------------------------
# Post-processing
# ------------------------------------------------------------------------------------------------------------


def test_get_final_text_worked_examples():
    # The prediction "1895" inside the original word "(1895-1943).".
    assert squad.get_final_text("1895", "(1895-1943).", do_lower_case=True) == "1895"
    # Original casing comes back, and trailing "'s" is cut off.
    assert squad.get_final_text("steve smith", "Steve Smith's", do_lower_case=True) == "Steve Smith"
    # Not found in the normalized original: the whole original text.
    assert squad.get_final_text("jones", "Steve Smith's", do_lower_case=True) == "Steve Smith's"
    # Accents are stripped by lower-casing, so the lengths differ and the original is returned.
    assert squad.get_final_text("cafe", "Café", do_lower_case=True) == "Café"


def test_best_indexes_and_softmax():
    assert squad.best_indexes([0.5, 2.0, 2.0, -1.0, 3.0], 3) == [4, 1, 2]  # ties keep position order
    probabilities = squad.softmax([1.0, 0.0])
    assert probabilities == pytest.approx([1 / (1 + 1 / 2.718281828459045), 1 / (1 + 2.718281828459045)])
    assert squad.softmax([]) == []


def _logits(size: int, peaks: dict[int, float], base: float = -10.0) -> list[float]:
    values = [base] * size
    for position, value in peaks.items():
        values[position] = value
    return values


def _prediction_setup(tmp_path, tokenizer, version_2: bool):
    path = _write_squad(tmp_path / "dev.json", {CONTEXT: [
        {"id": "a", "question": "Where was it played?", "answers": [{"text": "Santa Clara", "answer_start": 40}]},
        {"id": "b", "question": "Who won?", "answers": []},
    ]}, version="v2.0" if version_2 else "1.1")
    examples = squad.read_squad_examples(path, is_training=False, version_2_with_negative=version_2)
    features = squad.convert_examples_to_features(examples, tokenizer, 16, 4, 8, is_training=False)
    return examples, features


def test_postprocess_picks_best_valid_span(tmp_path, tokenizer):
    examples, features = _prediction_setup(tmp_path, tokenizer, version_2=False)
    results = []
    for feature in features:
        start, end = _logits(16, {}), _logits(16, {})
        if feature.example_index == 0 and feature.doc_span_index == 1:
            # Window 1 holds pieces 4..11 (super bowl 50 in santa clara , california) at positions 7..14.
            # Best valid pair: santa (11) .. clara (12).
            start[11], end[12] = 5.0, 4.0
            # Higher-scoring but invalid pairs: california (14) .. bowl (8) ends before it starts, and so does
            # santa (11) .. bowl (8).
            start[14], end[8] = 9.0, 9.0
            # A pair inside the question: never valid.
            start[1], end[2] = 20.0, 20.0
        if feature.example_index == 1 and feature.doc_span_index == 0:
            # "the denver broncos" (positions 5..7 after "[CLS] who won ? [SEP]"), first window.
            start[5], end[7] = 3.0, 3.0
        results.append(squad.RawResult(feature.unique_id, start, end))
    out = squad.postprocess_predictions(examples, features, results, n_best_size=5, max_answer_length=30,
                                        do_lower_case=True)
    # Pieces "santa clara" map to the words "Santa Clara,": get_final_text trims the comma.
    assert out.predictions == {"a": "Santa Clara", "b": "The Denver Broncos"}
    best = out.nbest["a"][0]
    assert (best["text"], best["start_logit"], best["end_logit"]) == ("Santa Clara", 5.0, 4.0)
    assert sum(entry["probability"] for entry in out.nbest["a"]) == pytest.approx(1.0)
    assert len(out.nbest["a"]) <= 5 and len({e["text"] for e in out.nbest["a"]}) == len(out.nbest["a"])
    assert out.null_odds == {}

    # max_answer_length 1 rules out the two-token answers.
    short = squad.postprocess_predictions(examples, features, results, 5, 1, True)
    assert short.predictions["a"] != "Santa Clara"


def test_postprocess_version_2_null_answer(tmp_path, tokenizer):
    examples, features = _prediction_setup(tmp_path, tokenizer, version_2=True)
    results = []
    for feature in features:
        start, end = _logits(16, {0: 1.0}), _logits(16, {0: 1.0})
        if feature.example_index == 0 and feature.doc_span_index == 1:
            start[11], end[12] = 5.0, 4.0  # best non-null 9.0 vs null 2.0 (min over windows): answer
        if feature.example_index == 1:
            start[5], end[7] = 0.5, 0.5  # best non-null 1.0 vs null 2.0: no answer
            if feature.doc_span_index == 1:
                start[0] = 1.5  # this window's null score is 2.5 > 2.0: the minimum stays 2.0
        results.append(squad.RawResult(feature.unique_id, start, end))
    out = squad.postprocess_predictions(examples, features, results, 5, 30, True, version_2_with_negative=True)
    assert out.predictions == {"a": "Santa Clara", "b": ""}
    assert out.null_odds["a"] == pytest.approx(2.0 - 9.0)
    assert out.null_odds["b"] == pytest.approx(2.0 - 1.0)
    assert "" in [entry["text"] for entry in out.nbest["a"]]
    # The threshold moves the decision: with 1.5 the null-minus-best difference 1.0 no longer exceeds it.
    lenient = squad.postprocess_predictions(examples, features, results, 5, 30, True, True,
                                            null_score_diff_threshold=1.5)
    assert lenient.predictions["b"] == "The Denver Broncos"


def test_write_predictions_files(tmp_path, tokenizer):
    examples, features = _prediction_setup(tmp_path, tokenizer, version_2=True)
    results = [squad.RawResult(f.unique_id, _logits(16, {0: 1.0}), _logits(16, {0: 1.0})) for f in features]
    out = squad.write_predictions(examples, features, results, 3, 30, True, tmp_path / "predictions.json",
                                  tmp_path / "nbest_predictions.json", tmp_path / "null_odds.json",
                                  version_2_with_negative=True)
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    nbest = json.loads((tmp_path / "nbest_predictions.json").read_text())
    null_odds = json.loads((tmp_path / "null_odds.json").read_text())
    assert list(predictions) == ["a", "b"] == list(nbest) == list(null_odds)
    assert predictions == out.predictions
    assert all(set(entry) == {"text", "probability", "start_logit", "end_logit"} for entry in nbest["a"])
    assert len(nbest["a"]) <= 3 + 1  # n-best plus the appended null answer
    # All logits but [CLS]'s are tied at -10, so the 3 best starts/ends are positions 0..2 ([CLS] and the
    # question): no valid span. The n-best holds only the null answer, so the reference's "empty" placeholder
    # (logits 0) is put in front of it and serves as the best non-null answer: odds 2.0 - 0.0.
    assert [entry["text"] for entry in nbest["a"]] == ["empty", ""]
    assert predictions == {"a": "", "b": ""}
    assert null_odds == {"a": 2.0, "b": 2.0}
