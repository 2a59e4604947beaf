"""BertConfig: the 0.6.x constructor, JSON files of both eras, round trips and clear errors."""

import json

import pytest
from pytorch_pretrained_bert import modeling as ppb

from jaxformers.models.bert import BertConfig


def test_06x_constructor_and_defaults_match_reference():
    ours = BertConfig(30522)
    reference = ppb.BertConfig(30522)
    for key, value in reference.to_dict().items():
        assert getattr(ours, key) == value, key
    assert ours.layer_norm_eps == 1e-12
    assert ours.scan_layers is False and ours.remat is False


def test_json_path_as_first_argument_and_reference_reads_ours(tmp_path):
    path = tmp_path / "bert_config.json"
    ppb.BertConfig(1000, hidden_size=64, num_hidden_layers=3, num_attention_heads=4).to_json_file(str(path))
    ours = BertConfig(str(path))
    assert ours.vocab_size == 1000 and ours.hidden_size == 64
    assert BertConfig.from_json_file(path) == ours
    out = tmp_path / "ours.json"
    ours.to_json_file(out)
    back = ppb.BertConfig(str(out))
    assert back.vocab_size == 1000 and back.hidden_size == 64


def test_hf_style_config_keeps_extra_keys(tmp_path):
    hf = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": 30522, "hidden_size": 384,
          "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu",
          "layer_norm_eps": 1e-12, "pad_token_id": 0, "position_embedding_type": "absolute",
          "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512,
          "type_vocab_size": 2, "initializer_range": 0.02}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(hf))
    config = BertConfig.from_json_file(path)
    assert config.hidden_size == 384 and config.pad_token_id == 0 and config.model_type == "bert"
    written = json.loads(config.to_json_string())
    for key, value in hf.items():
        assert written[key] == value, key
    assert BertConfig.from_dict(written) == config


def test_bad_config_inputs_are_clear(tmp_path):
    with pytest.raises(ValueError, match="vocabulary size .* or the path"):
        BertConfig(3.5)
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json.* not valid JSON"):
        BertConfig.from_json_file(bad)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        BertConfig.from_json_file(listed)
