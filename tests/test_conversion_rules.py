"""The checkpoint-name rule engine (jaxformers/conversion/rules.py) and the four format tables (tables.py).

Each table is run over the variable names and layouts the format tests write (built by those tests' own
independent helpers or the reference library's TF map) and must give the reference model's state dict.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jaxformers.conversion.rules import OPTIMIZER_SLOTS, Rule, RuleTable, apply_rules, is_optimizer_slot, transpose
from jaxformers.conversion.tables import BERT_TF, GPT2_TF, TABLES, TRANSFO_XL_TF
from parity_utils import torch_state_numpy


def assert_same_arrays(converted: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(converted) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(converted[key], value, err_msg=key)


# ------------------------------------------------------------------------------------------------- the engine


def test_a_name_no_rule_matches_is_an_error_naming_it_and_the_file():
    arrays = {"bert/embeddings/word_embeddings": np.zeros((4, 2)), "bert/encoder/layer_0/mystery/kernel": np.zeros(2)}
    with pytest.raises(ValueError, match=r"^ckpt/bert_model\.ckpt: 'bert/encoder/layer_0/mystery/kernel' is not a "
                                         r"BERT weight \(no rule of the BERT TensorFlow table"):
        apply_rules(BERT_TF, arrays, source="ckpt/bert_model.ckpt")
    # every unknown name is listed, not just the first
    arrays["cls/squad/output_weights"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"'bert/encoder/layer_0/mystery/kernel', 'cls/squad/output_weights' are not"):
        apply_rules(BERT_TF, arrays)


@pytest.mark.parametrize("format_name", sorted(TABLES))
def test_optimizer_slots_are_skipped_and_nothing_else(format_name):
    slots = {f"some/weight/{slot}": np.zeros(2) for slot in OPTIMIZER_SLOTS} | {"global_step": np.array(3)}
    assert all(is_optimizer_slot(name) for name in slots)
    assert apply_rules(TABLES[format_name], slots) == {}
    # a weight whose name merely contains a slot's letters is not a slot
    assert not is_optimizer_slot("model/adam_momentum_table") and not is_optimizer_slot("transformer/Adamw")
    with pytest.raises(ValueError, match="'model/adam_momentum_table'"):
        apply_rules(TABLES[format_name], {"model/adam_momentum_table": np.zeros(2)})


def test_two_names_on_one_key_are_an_error_naming_both():
    table = RuleTable("toy", "toy", (Rule(r"a/(x|y)", "a.weight"),))
    with pytest.raises(ValueError, match=r"src: 'a/x' and 'a/y' both map to 'a\.weight'"):
        apply_rules(table, {"a/x": np.zeros(1), "a/y": np.zeros(1)}, source="src")


def test_templates_split_merge_and_apply_conditions():
    table = RuleTable("toy", "toy", (
        Rule(r"bias", "layers.{n}.bias", ndim=2),  # stacked per layer
        Rule(r"bias", "bias"),
        Rule(r"piece_(\d+)", "table", merge=True, if_present="whole"),
        Rule(r"piece_(\d+)", "tables.{1}"),
        Rule(r"whole", ("embed.weight", "out.weight"), transpose),
        Rule(r"deep/(a/b)/w", "{1}.weight"),
    ))
    stacked = np.arange(6.0).reshape(2, 3)
    pieces = {"piece_10": np.array([3.0]), "piece_2": np.array([1.0, 2.0])}  # numeric, not text, order
    whole = np.arange(4.0).reshape(2, 2)
    out = apply_rules(table, {"bias": stacked, **pieces, "whole": whole, "deep/a/b/w": np.ones(1)})
    assert sorted(out) == ["a.b.weight", "embed.weight", "layers.0.bias", "layers.1.bias", "out.weight", "table"]
    np.testing.assert_array_equal(out["layers.1.bias"], stacked[1])
    np.testing.assert_array_equal(out["table"], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(out["out.weight"], whole.T)
    out = apply_rules(table, {"bias": np.ones(3), **pieces})
    assert sorted(out) == ["bias", "tables.10", "tables.2"]


# ------------------------------------------------------------------------------------- each table, real names


def test_bert_table_maps_googles_names():
    from pytorch_pretrained_bert import modeling as ppb

    from test_bert_loading import TINY, VOCAB, tf_variable_name

    torch.manual_seed(0)
    state = torch_state_numpy(ppb.BertForPreTraining(ppb.BertConfig(VOCAB, **TINY)))
    del state["cls.predictions.decoder.weight"]  # tied to the word embeddings: not in Google's checkpoint
    arrays = {}
    for key, value in state.items():  # as test_bert_loading.write_tf_checkpoint writes them
        name, transposed = tf_variable_name(key)
        arrays[name] = value.T if transposed else value
    arrays["bert/encoder/layer_0/attention/self/query/kernel/adam_m"] = np.zeros((32, 32))
    assert_same_arrays(apply_rules(BERT_TF, arrays), state)


def test_gpt2_and_openai_tables_map_openais_names(tmp_path):
    from pytorch_pretrained_bert import modeling_gpt2 as ppg
    from pytorch_pretrained_bert import modeling_openai as ppo

    from jaxformers.models import gpt2 as jxg
    from jaxformers.models import openai_gpt as jxo
    from test_gpt_conversion import GPT2_TINY, LAYER_PARAMS, OPENAI_TINY, VOCAB, original_layout, torch_key_of
    from test_gpt_conversion import write_openai_checkpoint

    torch.manual_seed(0)
    state = torch_state_numpy(ppg.GPT2Model(ppg.GPT2Config(VOCAB, **GPT2_TINY)))
    named = {"model/wte": state["wte.weight"], "model/wpe": state["wpe.weight"],
             "model/ln_f/g": state["ln_f.weight"], "model/ln_f/b": state["ln_f.bias"]}
    for layer in range(GPT2_TINY["n_layer"]):  # as test_gpt_conversion.write_gpt2_tf_checkpoint names them
        for param in LAYER_PARAMS:
            named[f"model/h{layer}/{param}"] = original_layout(state[torch_key_of(layer, param)], param)
    weights = {key: value for key, value in state.items() if not key.endswith(".attn.bias")}  # causal-mask buffers
    assert_same_arrays(apply_rules(GPT2_TF, named), weights)
    assert_same_arrays(jxg.GPT2Model.torch_keys_from_tf(named), weights)
    with pytest.raises(ValueError, match=r"m\.ckpt: 'model/h0/attn/c_extra/w' is not a GPT weight"):
        jxg.GPT2Model.torch_keys_from_tf({**named, "model/h0/attn/c_extra/w": np.zeros(3)}, source="m.ckpt")

    reference = ppo.OpenAIGPTModel(ppo.OpenAIGPTConfig(VOCAB, **OPENAI_TINY))
    write_openai_checkpoint(reference, tmp_path / "openai")
    weights = {key: value for key, value in torch_state_numpy(reference).items() if not key.endswith(".attn.bias")}
    assert_same_arrays(jxo.OpenAIGPTModel.torch_keys_from_openai_numpy(tmp_path / "openai"), weights)


def test_transfo_xl_table_maps_the_references_tf_names_and_is_strict():
    import test_transfo_xl_conversion as xl
    from pytorch_transformers import modeling_transfo_xl as ref

    torch.manual_seed(0)
    source = ref.TransfoXLLMHeadModel(ref.TransfoXLConfig(xl.N_TOKEN, **xl.DIV2))  # 3 clusters, untie_r
    state = torch_state_numpy(source)
    # The reference's own TF map names the checkpoint (its loader inverts it); it has no entry for the output
    # layers' weights (tied to the embedding tables), the tied projections or the inv_freq buffer.
    arrays = xl.tf_arrays_from_reference_map(source, source.config)
    converted = apply_rules(TRANSFO_XL_TF, {**arrays, "transformer/layer_0/ff/layer_1/kernel/Adam_1": np.zeros(2)})
    for key, value in converted.items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    assert sorted(set(state) - set(converted)) == [
        "crit.out_layers.0.weight", "crit.out_layers.1.weight", "crit.out_layers.2.weight", "crit.out_projs.1",
        "crit.out_projs.2", "transformer.pos_emb.inv_freq"]
    assert "transformer.layers.1.pos_ff.CoreNet.3.weight" in converted and "crit.cluster_weight" in converted
    # Unknown names used to pass through to the load; now the table refuses them by name.
    with pytest.raises(ValueError, match=r"model\.ckpt-0: 'transformer/layer_0/rel_attn/k/kernel' is not a "
                                         r"Transformer-XL weight"):
        apply_rules(TRANSFO_XL_TF, {**arrays, "transformer/layer_0/rel_attn/k/kernel": np.zeros((2, 2))},
                    source="model.ckpt-0")
