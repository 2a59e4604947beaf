"""Configs: the 0.6.x constructors, JSON files of both eras, round trips, validation naming key and file, frozen
dataclasses, kept metadata, refused overrides, runtime switches, labels from Hugging Face configs."""

import dataclasses
import json
import logging

import numpy as np
import pytest
from pytorch_pretrained_bert import modeling as ppb

from jaxformers.models.bert import BertConfig, BertForSequenceClassification, BertModel
from jaxformers.models.gpt2 import GPT2Config
from jaxformers.models.openai_gpt import OpenAIGPTConfig
from jaxformers.models.transfo_xl import TransfoXLConfig


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


# ---------------------------------------------------------------------------------------- frozen dataclass configs

TINY_BERT = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20,
                 max_position_embeddings=16)


@pytest.mark.parametrize("key,value,expected", [
    ("hidden_size", "32", "expected an integer"),
    ("num_hidden_layers", 0, "expected a value >= 1"),
    ("num_attention_heads", 0, "expected a value >= 1"),
    ("hidden_size", 30, "not divisible by num_attention_heads=12"),
    ("layer_norm_eps", "abc", "expected a number"),
    ("hidden_dropout_prob", 1.5, "expected a value <= 1.0"),
    ("hidden_act", "gelu_11", "expected one of"),
    ("num_labels", True, "expected an integer"),
])
def test_bad_values_name_the_key_and_file_on_every_path(tmp_path, key, value, expected):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"vocab_size": 99, key: value}))
    where = rf"BertConfig: {key}={value!r} in '.*config.json': {expected}"
    with pytest.raises(ValueError, match=where):
        BertConfig.from_json_file(path)
    with pytest.raises(ValueError, match=where):
        BertConfig(str(path))
    with pytest.raises(ValueError, match=rf"BertConfig: {key}={value!r}: {expected}"):
        BertConfig.from_dict({"vocab_size": 99, key: value})
    with pytest.raises(ValueError, match=rf"BertConfig: {key}={value!r}: {expected}"):
        BertConfig(99, **{key: value})


def test_every_constructor_path_gives_the_same_config(tmp_path):
    hparams = {"n_vocab": 50, "n_ctx": 32, "n_embd": 16, "n_head": 2, "n_layer": 3}
    path = tmp_path / "hparams.json"
    path.write_text(json.dumps(hparams))
    configs = [GPT2Config(str(path)), GPT2Config(path), GPT2Config.from_json_file(path), GPT2Config.from_dict(hparams),
               GPT2Config(vocab_size_or_config_json_file=str(path))]
    for config in configs:
        assert config == configs[0]
        assert (config.vocab_size, config.n_positions, config.n_ctx) == (50, 32, 32)
    # 0.6.x positional form: vocab, n_positions, n_ctx, n_embd, n_layer, n_head
    positional = GPT2Config(50, 32, 32, 16, 3, 2)
    assert positional == configs[0]
    # HF's newer names land on ours; today's files have n_positions only, which is also the context
    hf = GPT2Config.from_dict({"vocab_size": 50, "n_positions": 32, "hidden_size": 16, "num_attention_heads": 2,
                               "num_hidden_layers": 3})
    assert hf == configs[0]


def test_transfo_xl_and_openai_paths_agree(tmp_path):
    path = tmp_path / "config.json"
    TransfoXLConfig(100, cutoffs=[10, 50], d_model=16, d_embed=16, n_head=2, d_head=8, d_inner=32,
                    n_layer=2).to_json_file(path)
    assert TransfoXLConfig(str(path)) == TransfoXLConfig.from_json_file(path)
    assert TransfoXLConfig(str(path)).tie_projs == [False, True, True]
    assert TransfoXLConfig(100, [10, 50], proj_share_all_but_first=False).tie_projs == [False, False, False]
    assert TransfoXLConfig.from_dict({"vocab_size": 100, "cutoffs": [10]}).n_token == 100
    openai = OpenAIGPTConfig.from_dict({"vocab_size": 40, "n_positions": 64, "n_embd": 16, "n_head": 2})
    assert openai.n_ctx == 64 and openai.afn == "gelu"


def test_configs_are_frozen_and_replace_revalidates():
    config = BertConfig(99, **TINY_BERT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden_size = 32
    changed = dataclasses.replace(config, hidden_dropout_prob=0.0)
    assert changed.hidden_dropout_prob == 0.0 and config.hidden_dropout_prob == 0.1
    with pytest.raises(ValueError, match="num_hidden_layers=0"):
        dataclasses.replace(config, num_hidden_layers=0)
    assert hash(changed) == hash(dataclasses.replace(config, hidden_dropout_prob=0.0))


def test_metadata_kept_unknown_keys_kept_and_reported_once(tmp_path, caplog):
    values = {"vocab_size": 99, **TINY_BERT, "architectures": ["BertForMaskedLM"], "torch_dtype": "float32",
              "transformers_version": "5.24.0", "model_type": "bert", "my_note": "hello", "gradient_checkpointing": False}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    with caplog.at_level(logging.WARNING, logger="jaxformers.configuration"):
        config = BertConfig.from_json_file(path)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "my_note" in warnings[0] and "config.json" in warnings[0]
    assert "architectures" not in warnings[0] and "torch_dtype" not in warnings[0]
    assert config.architectures == ["BertForMaskedLM"] and config.my_note == "hello"
    written = json.loads(config.to_json_string())
    for key, value in values.items():
        assert written[key] == value, key
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jaxformers.configuration"):
        replaced = dataclasses.replace(config, hidden_dropout_prob=0.0)
    assert not caplog.records and replaced.my_note == "hello"
    with pytest.raises(AttributeError, match="did you mean 'hidden_size'"):
        config.hiden_size  # noqa: B018


def test_unknown_overrides_are_errors_with_a_did_you_mean(tmp_path):
    with pytest.raises(ValueError, match="unknown keyword argument 'hiden_size' .*did you mean 'hidden_size'"):
        BertConfig(99, hiden_size=16)
    config = BertConfig(99, **TINY_BERT)
    with pytest.raises(ValueError, match="'scan_layer' .*did you mean 'scan_layers'"):
        config.with_overrides({"scan_layer": True})
    model = BertModel(config)
    model.save_pretrained(tmp_path / "saved")
    with pytest.raises(ValueError, match="'scan_layer' for BertModel.from_pretrained .*did you mean 'scan_layers'"):
        BertModel.from_pretrained(tmp_path / "saved", scan_layer=True)
    with pytest.raises(ValueError, match="'scan_layer' .*did you mean 'scan_layers'"):
        BertModel.from_pretrained(tmp_path / "saved", config_overrides={"scan_layer": True})
    scanned = BertModel.from_pretrained(tmp_path / "saved", scan_layers=True)
    assert scanned.config.scan_layers is True


def test_runtime_switches_are_not_saved(tmp_path):
    config = BertConfig(99, **TINY_BERT, scan_layers=True, remat=True)
    assert config.runtime_options() == {"scan_layers": True, "remat": True, "remat_policy": "nothing_saveable"}
    written = json.loads(config.to_json_string())
    assert "scan_layers" not in written and "remat" not in written
    BertModel(config).save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert "scan_layers" not in saved and "remat" not in saved
    assert BertConfig.from_json_file(tmp_path / "saved" / "config.json").scan_layers is False


def test_num_labels_and_id2label_from_a_hugging_face_config(tmp_path):
    labels = {"0": "negative", "1": "neutral", "2": "positive"}
    values = {"vocab_size": 99, **TINY_BERT, "id2label": labels,
              "label2id": {name: int(index) for index, name in labels.items()}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    config = BertConfig.from_json_file(path)
    assert config.num_labels == 3 and config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert config.label2id["positive"] == 2
    assert json.loads(config.to_json_string())["id2label"] == labels
    BertForSequenceClassification(config, num_labels=3).save_pretrained(tmp_path / "classifier")
    (tmp_path / "classifier" / "config.json").write_text(json.dumps(values))
    model = BertForSequenceClassification.from_pretrained(tmp_path / "classifier")
    assert model.num_labels == 3
    logits = model(np.array([[1, 2, 3]]))
    assert logits.shape == (1, 3)
    # the caller's num_labels still wins
    assert BertForSequenceClassification.from_pretrained(tmp_path / "classifier", num_labels=3).num_labels == 3
    with pytest.raises(ValueError, match="num_labels=2 but id2label has 3 entries"):
        BertConfig.from_dict({**values, "num_labels": 2})


@pytest.mark.slow
def test_gpt2_converter_takes_a_config_file_with_any_n_ctx(tmp_path):
    """``jaxformers convert gpt2-tf --gpt2_config_file hparams.json``: n_ctx != 1024 sets n_positions (it used to
    fail with 'wpe.weight: expected shape (1024, 32)' when the file was not beside the checkpoint)."""
    pytest.importorskip("tensorflow")
    import torch
    from pytorch_pretrained_bert import modeling_gpt2 as ppg
    from test_gpt_conversion import GPT2_TINY, VOCAB, write_gpt2_tf_checkpoint

    from jaxformers.cli import main

    torch.manual_seed(0)
    reference = ppg.GPT2Model(ppg.GPT2Config(VOCAB, **GPT2_TINY)).eval()
    (tmp_path / "ckpt").mkdir()
    write_gpt2_tf_checkpoint(reference, tmp_path / "ckpt" / "model.ckpt")
    hparams = tmp_path / "elsewhere" / "hparams.json"
    hparams.parent.mkdir()
    hparams.write_text(json.dumps({"n_vocab": VOCAB, "n_ctx": GPT2_TINY["n_ctx"], "n_embd": GPT2_TINY["n_embd"],
                                   "n_head": GPT2_TINY["n_head"], "n_layer": GPT2_TINY["n_layer"]}))
    out = tmp_path / "converted"
    status = main(["convert", "gpt2-tf", "--gpt2_checkpoint_path", str(tmp_path / "ckpt" / "model.ckpt"),
                   "--gpt2_config_file", str(hparams), "--output_dir", str(out)])
    assert status in (0, None)
    saved = GPT2Config.from_json_file(out / "config.json")
    assert saved.n_positions == GPT2_TINY["n_ctx"] != 1024 and saved.vocab_size == VOCAB


def test_a_config_of_another_family_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "gpt2", "vocab_size": 50, "n_embd": 16, "n_head": 2}))
    with pytest.raises(ValueError, match=r"model_type='gpt2' in '.*config.json': this is not a 'bert' config"):
        BertConfig.from_json_file(path)
    assert GPT2Config.from_json_file(path).n_embd == 16
