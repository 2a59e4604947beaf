"""Exports that transformers loads: every jaxformers class of a family transformers still ships (BERT, GPT-2,
OpenAI GPT), saved by ``save_pretrained`` (one safetensors file, and sharded with an index), is loaded by the
matching ``transformers.AutoModel*`` class with no missing or unexpected keys and gives the same outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

import jaxformers  # noqa: E402
from jaxformers.saving import HF_ARCHITECTURES, SAFETENSORS_INDEX_NAME, SAFETENSORS_NAME  # noqa: E402

BERT = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
GPT = dict(n_positions=16, n_ctx=16, n_embd=16, n_layer=2, n_head=2)
BATCH, CHOICES, SEQ = 2, 3, 7


def _ids(shape, high, seed=0):
    return np.random.default_rng(seed).integers(0, high, shape).astype(np.int64)


def _bert_inputs(multiple_choice=False):
    shape = (BATCH, CHOICES, SEQ) if multiple_choice else (BATCH, SEQ)
    ids, types = _ids(shape, 40), _ids(shape, 2, seed=1)
    mask = np.ones(shape, np.int64)
    mask[..., -2:] = 0  # padding positions: the attention mask must carry over too
    return ids, types, mask


def bert_case(name, auto, kwargs, ours_fn, theirs_fn, multiple_choice=False):
    def build():
        config = jaxformers.BertConfig(40, **BERT)
        return getattr(jaxformers, name)(config, seed=3, **kwargs)

    def run(ours, theirs):
        ids, types, mask = _bert_inputs(multiple_choice)
        with torch.no_grad():
            out = theirs(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
                         attention_mask=torch.tensor(mask))
        return ours_fn(ours(ids, types, mask)), theirs_fn(out)

    return pytest.param(build, auto, run, id=name)


def gpt_case(family, name, auto, ours_fn, theirs_fn, double_heads=False):
    def build():
        if family == "gpt2":
            config = jaxformers.GPT2Config(50, **GPT)
        else:  # with special tokens: transformers' vocab_size must count them
            config = jaxformers.OpenAIGPTConfig(45, n_special=5, afn="gelu", **GPT)
        return getattr(jaxformers, name)(config, seed=4)

    def run(ours, theirs):
        shape = (BATCH, CHOICES, SEQ) if double_heads else (BATCH, SEQ)
        ids = _ids(shape, 50)
        kwargs = {}
        if double_heads:
            mc = np.full((BATCH, CHOICES), SEQ - 1, np.int64)
            kwargs = {"mc_token_ids": torch.tensor(mc)}
            mine = ours(ids, mc)
        else:
            mine = ours(ids)
        with torch.no_grad():
            out = theirs(input_ids=torch.tensor(ids), **kwargs)
        return ours_fn(mine), theirs_fn(out)

    return pytest.param(build, auto, run, id=name)


CASES = [
    bert_case("BertModel", "AutoModel", {},
              lambda out: (out[0][-1], out[1]), lambda out: (out.last_hidden_state, out.pooler_output)),
    bert_case("BertForPreTraining", "AutoModelForPreTraining", {}, lambda out: out,
              lambda out: (out.prediction_logits, out.seq_relationship_logits)),
    bert_case("BertForMaskedLM", "AutoModelForMaskedLM", {}, lambda out: (out,), lambda out: (out.logits,)),
    bert_case("BertForNextSentencePrediction", "AutoModelForNextSentencePrediction", {}, lambda out: (out,),
              lambda out: (out.logits,)),
    bert_case("BertForSequenceClassification", "AutoModelForSequenceClassification", {"num_labels": 3},
              lambda out: (out,), lambda out: (out.logits,)),
    bert_case("BertForMultipleChoice", "AutoModelForMultipleChoice", {"num_choices": CHOICES}, lambda out: (out,),
              lambda out: (out.logits,), multiple_choice=True),
    bert_case("BertForTokenClassification", "AutoModelForTokenClassification", {"num_labels": 5},
              lambda out: (out,), lambda out: (out.logits,)),
    bert_case("BertForQuestionAnswering", "AutoModelForQuestionAnswering", {}, lambda out: out,
              lambda out: (out.start_logits, out.end_logits)),
    gpt_case("gpt2", "GPT2Model", "AutoModel", lambda out: (out[0],), lambda out: (out.last_hidden_state,)),
    gpt_case("gpt2", "GPT2LMHeadModel", "AutoModelForCausalLM", lambda out: (out[0],), lambda out: (out.logits,)),
    gpt_case("gpt2", "GPT2DoubleHeadsModel", "GPT2DoubleHeadsModel", lambda out: out[:2],
             lambda out: (out.logits, out.mc_logits), double_heads=True),
    gpt_case("openai", "OpenAIGPTModel", "AutoModel", lambda out: (out,), lambda out: (out.last_hidden_state,)),
    gpt_case("openai", "OpenAIGPTLMHeadModel", "AutoModelForCausalLM", lambda out: (out,),
             lambda out: (out.logits,)),
    gpt_case("openai", "OpenAIGPTDoubleHeadsModel", "OpenAIGPTDoubleHeadsModel", lambda out: out,
             lambda out: (out.logits, out.mc_logits), double_heads=True),
]


# Sharded: one class per family (with the renamed and dropped keys); the layout code is shared by all classes.
SHARDED = {"BertForPreTraining", "BertForMaskedLM", "GPT2DoubleHeadsModel", "OpenAIGPTDoubleHeadsModel"}
MATRIX = [pytest.param(*case.values, None, id=f"{case.id}-single-file") for case in CASES] + [
    pytest.param(*case.values, "4kB", id=f"{case.id}-sharded") for case in CASES if case.id in SHARDED]


@pytest.mark.parametrize("build, auto, run, max_shard_size", MATRIX)
def test_transformers_loads_the_export(tmp_path, build, auto, run, max_shard_size):
    model = build()
    model.save_pretrained(tmp_path, safetensors=True, max_shard_size=max_shard_size)
    names = {path.name for path in tmp_path.iterdir()}
    if max_shard_size is None:
        assert SAFETENSORS_NAME in names and SAFETENSORS_INDEX_NAME not in names
    else:
        index = json.loads((tmp_path / SAFETENSORS_INDEX_NAME).read_text())
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) > 1 and SAFETENSORS_NAME not in names and set(shards) <= names

    theirs, info = getattr(transformers, auto).from_pretrained(str(tmp_path), output_loading_info=True)
    assert type(theirs).__name__ == HF_ARCHITECTURES[type(model).__name__].name
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    assert not info.get("mismatched_keys"), info
    theirs.eval()
    ours_out, theirs_out = run(model, theirs)

    # And jaxformers reads its own export back strictly (an absent unused pooler is not a missing weight).
    (tmp_path / "flax_model.msgpack").unlink()
    again = type(model).from_pretrained(tmp_path, strict=True)
    mine, back = model.torch_state_dict(), again.torch_state_dict()
    for key in mine:
        if not model._is_unused(key):
            np.testing.assert_array_equal(back[key], mine[key], err_msg=key)
    assert len(ours_out) == len(theirs_out)
    for mine, reference in zip(ours_out, theirs_out):
        np.testing.assert_allclose(np.asarray(mine), reference.numpy(), atol=1e-5, rtol=1e-5)


def test_tied_weights_are_stored_once(tmp_path):
    from safetensors import safe_open

    model = jaxformers.GPT2LMHeadModel(jaxformers.GPT2Config(50, **GPT))
    model.save_pretrained(tmp_path, safetensors=True)
    with safe_open(str(tmp_path / SAFETENSORS_NAME), framework="numpy") as reader:
        keys = set(reader.keys())
        assert reader.metadata() == {"format": "pt"}
    assert "transformer.wte.weight" in keys
    assert not {key for key in keys if key.startswith("lm_head")}  # tied to wte: transformers re-ties it
    assert not {key for key in keys if key.endswith(".attn.bias")}  # the causal-mask buffers are not weights

    bert = jaxformers.BertForPreTraining(jaxformers.BertConfig(40, **BERT))
    bert.save_pretrained(tmp_path / "bert", safetensors=True)
    with safe_open(str(tmp_path / "bert" / SAFETENSORS_NAME), framework="numpy") as reader:
        keys = set(reader.keys())
    assert "cls.predictions.bias" in keys and "cls.predictions.decoder.weight" not in keys


def test_config_is_complete_for_transformers(tmp_path):
    model = jaxformers.BertForSequenceClassification(jaxformers.BertConfig(40, **BERT), num_labels=3)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertForSequenceClassification"]
    assert config["num_labels"] == 3
    assert config["id2label"] == {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    assert config["label2id"] == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}
    assert config["dtype"] == "float32"
    assert config["hidden_size"] == 16 and config["vocab_size"] == 40  # the 0.6.x fields stay
    # transformers' own config class reads it as the same classifier, without num_labels passed by hand.
    hf_config = transformers.AutoConfig.from_pretrained(str(tmp_path))
    assert hf_config.num_labels == 3 and hf_config.architectures == ["BertForSequenceClassification"]


def test_openai_special_tokens_count_in_the_exported_vocab_size(tmp_path):
    model = jaxformers.OpenAIGPTLMHeadModel(jaxformers.OpenAIGPTConfig(45, n_special=5, **GPT))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["vocab_size"], config["n_special"]) == (50, 0)
    # pytorch-pretrained-bert and jaxformers build the same 50-row table from it.
    reloaded = jaxformers.OpenAIGPTLMHeadModel.from_pretrained(tmp_path)
    assert reloaded.config.total_tokens_embeddings == 50


def test_shard_size_parsing():
    from jaxformers.saving import parse_shard_size, shard_arrays

    assert parse_shard_size("5GB") == 5 * 10**9 and parse_shard_size("2MiB") == 2 * 2**20
    assert parse_shard_size(1000) == 1000 and parse_shard_size("10kB") == 10_000
    for bad in ("lots", "0", -1, "5 parsecs"):
        with pytest.raises(ValueError, match="max_shard_size"):
            parse_shard_size(bad)
    arrays = {"a": np.zeros(100, np.float32), "b": np.zeros(10, np.float32), "c": np.zeros(300, np.float32)}
    # 400 + 40 bytes fit in 500; "c" (1200 bytes) is over the limit alone and gets its own shard.
    assert [list(shard) for shard in shard_arrays(arrays, 500)] == [["a", "b"], ["c"]]
