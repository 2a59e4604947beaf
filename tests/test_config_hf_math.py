"""Hugging Face config fields that change the math: each is implemented with parity against transformers 5.x on a
tiny random model (weights copied through the state dict), or refused by name with its value and file."""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from jaxformers.layers import ACTIVATIONS  # noqa: E402
from jaxformers.models.bert import BertConfig, BertModel  # noqa: E402
from jaxformers.models.gpt2 import GPT2Config, GPT2LMHeadModel, GPT2Model  # noqa: E402

from parity_utils import assert_close, torch_state_numpy  # noqa: E402

GPT2_TINY = dict(vocab_size=61, n_positions=16, n_embd=16, n_layer=3, n_head=2)
BERT_TINY = dict(vocab_size=53, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                 max_position_embeddings=16)


def hf_gpt2(tmp_path, **fields):
    """A random transformers GPT2Model and the path of the config.json it would save."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(**GPT2_TINY, **fields)
    model = transformers.GPT2Model(config).eval()
    with torch.no_grad():  # HF initialises biases and LayerNorms to constants: make them random too
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    config.save_pretrained(tmp_path)
    return model, tmp_path / "config.json"


def hf_gpt2_hidden(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(ids)).last_hidden_state.numpy()


IDS = np.array([[3, 14, 15, 9, 2, 6, 5, 35, 8, 9], [27, 1, 8, 28, 18, 2, 8, 4, 5, 9]], np.int64)


@pytest.mark.parametrize("fields", [
    {"activation_function": "relu"},
    {"activation_function": "silu"},
    {"activation_function": "gelu"},
    {"activation_function": "gelu_pytorch_tanh"},
    {"activation_function": "quick_gelu"},
    {"scale_attn_by_inverse_layer_idx": True},
    {"scale_attn_weights": False},
    {"reorder_and_upcast_attn": True},
    {"scale_attn_by_inverse_layer_idx": True, "scale_attn_weights": False, "activation_function": "gelu"},
], ids=lambda fields: "-".join(f"{k}={v}" for k, v in fields.items()))
def test_gpt2_math_fields_match_transformers(tmp_path, fields):
    reference, config_path = hf_gpt2(tmp_path, **fields)
    expected = hf_gpt2_hidden(reference, IDS)
    config = GPT2Config.from_json_file(config_path)
    for key, value in fields.items():
        assert getattr(config, key) == value, key
    # Under scan the layer index is a traced scalar: check it where the math depends on it.
    for scan in (False, True) if fields.get("scale_attn_by_inverse_layer_idx") else (False,):
        model = GPT2Model(dataclasses.replace(config, scan_layers=scan))
        model.load_state_dict(torch_state_numpy(reference), strict=True)
        hidden, _ = model(jnp.asarray(IDS))
        assert_close(hidden, expected, 1e-5, f"{fields} scan={scan}")


def test_gpt2_inverse_layer_scale_in_cached_decoding(tmp_path):
    reference, config_path = hf_gpt2(tmp_path, scale_attn_by_inverse_layer_idx=True, scale_attn_weights=False)
    lm_reference = transformers.GPT2LMHeadModel(reference.config).eval()
    lm_reference.transformer.load_state_dict(reference.state_dict())
    with torch.no_grad():
        expected = lm_reference(torch.from_numpy(IDS)).logits.numpy()
    model = GPT2LMHeadModel(GPT2Config.from_json_file(config_path))
    model.load_state_dict(torch_state_numpy(lm_reference), strict=True)
    cache = model.init_cache(IDS.shape[0], IDS.shape[1])
    logits, cache = model.decode_step(jnp.asarray(IDS[:, :6]), cache)
    last, _ = model.decode_step(jnp.asarray(IDS[:, 6:]), cache)
    assert_close(np.concatenate([np.asarray(logits), np.asarray(last)], axis=1), expected, 1e-4, "decode")


@pytest.mark.parametrize("hidden_act", ["relu", "gelu_new", "silu", "gelu"])
def test_bert_hidden_act_matches_transformers(tmp_path, hidden_act):
    torch.manual_seed(0)
    hf_config = transformers.BertConfig(**BERT_TINY, hidden_act=hidden_act)
    reference = transformers.BertModel(hf_config, add_pooling_layer=True).eval()
    hf_config.save_pretrained(tmp_path)
    model = BertModel(BertConfig.from_json_file(tmp_path / "config.json"))
    model.load_state_dict(torch_state_numpy(reference), strict=True)
    ids = IDS % BERT_TINY["vocab_size"]
    with torch.no_grad():
        out = reference(torch.from_numpy(ids))
    sequence, pooled = model(jnp.asarray(ids), output_all_encoded_layers=False)
    assert_close(sequence, out.last_hidden_state.numpy(), 1e-5, hidden_act)
    assert_close(pooled, out.pooler_output.numpy(), 1e-5, hidden_act)


def test_every_activation_name_matches_transformers():
    from transformers.activations import ACT2FN

    x = torch.linspace(-12.0, 12.0, 481)
    for name, ours in ACTIVATIONS.items():
        reference_name = "gelu_new" if name == "gelu_tanh" else name
        with torch.no_grad():
            expected = ACT2FN[reference_name](x).numpy()
        assert_close(ours(jnp.asarray(x.numpy())), expected, 1e-5, name)


@pytest.mark.parametrize("key,value,family", [
    ("position_embedding_type", "relative_key", "bert"),
    ("position_embedding_type", "relative_key_query", "bert"),
    ("is_decoder", True, "bert"),
    ("n_inner", 40, "gpt2"),
    ("tie_word_embeddings", False, "gpt2"),
    ("summary_activation", "tanh", "gpt2"),
])
def test_math_we_do_not_implement_is_refused_by_name(tmp_path, key, value, family):
    base = ({"model_type": "bert", "vocab_size": 53} if family == "bert" else {"model_type": "gpt2", "vocab_size": 61})
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**base, key: value}))
    config_class = BertConfig if family == "bert" else GPT2Config
    with pytest.raises(ValueError, match=rf"{key}={value!r} in .*config.json.*changes the model's math"):
        config_class.from_json_file(path)


@pytest.mark.parametrize("name", ["prelu", "xielu", "gelu_11"])
def test_activations_with_parameters_or_unknown_are_refused(tmp_path, name):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"activation_function": name}))
    with pytest.raises(ValueError, match=rf"activation_function='{name}' in .*config.json.*expected one of"):
        GPT2Config.from_json_file(path)
