"""Every weights format a hub snapshot holds, read correctly or refused loudly.

* models that transformers saves (BERT with each head, GPT-2, OpenAI GPT; one file and sharded) load with
  strict=True and give transformers' outputs within 1e-5;
* old-style ``pytorch_model.bin`` (tied ``lm_head.weight`` included) and sharded ``.bin`` indexes;
* Hugging Face's Flax ``flax_model.msgpack`` (kernel/scale/embedding names, transposed kernels), built here from a
  PyTorch state dict by the documented Hugging Face PyTorch->Flax naming rules;
* safetensors preferred when several formats are present, jaxformers' own msgpack told apart by its marker;
* a file matching under half of the model is an error naming the file and the layout it seems to hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jaxformers  # noqa: E402
from jaxformers.modeling_utils import MSGPACK_MARKER_KEY, per_layer_params, unflatten_keys  # noqa: E402

BERT = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
GPT2 = dict(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2)
OPENAI = dict(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2, afn="gelu")
BATCH, CHOICES, SEQ = 2, 3, 7


def randomized(model, seed: int):
    """Every parameter random (transformers initialises biases and LayerNorms to constants, which would hide a
    bias or LayerNorm mix-up); tied parameters stay tied, being one tensor."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def hf_model(class_name: str, seed: int = 0, **config_overrides):
    if class_name.startswith("Bert"):
        config = transformers.BertConfig(**BERT, **config_overrides)
    elif class_name.startswith("GPT2"):
        config = transformers.GPT2Config(**GPT2, **config_overrides)
    else:
        config = transformers.OpenAIGPTConfig(**OPENAI, **config_overrides)
    return randomized(getattr(transformers, class_name)(config), seed)


def ids(shape, high, seed=0):
    return np.random.default_rng(seed).integers(0, high, shape).astype(np.int64)


def bert_run(ours, theirs, multiple_choice=False):
    shape = (BATCH, CHOICES, SEQ) if multiple_choice else (BATCH, SEQ)
    input_ids, types = ids(shape, 40), ids(shape, 2, seed=1)
    mask = np.ones(shape, np.int64)
    mask[..., -2:] = 0
    with torch.no_grad():
        out = theirs(input_ids=torch.tensor(input_ids), token_type_ids=torch.tensor(types),
                     attention_mask=torch.tensor(mask))
    return ours(input_ids, types, mask), out


def gpt_run(ours, theirs, double_heads=False):
    shape = (BATCH, CHOICES, SEQ) if double_heads else (BATCH, SEQ)
    input_ids, extra = ids(shape, 50), {}
    if double_heads:
        mc = np.full((BATCH, CHOICES), SEQ - 1, np.int64)
        extra = {"mc_token_ids": torch.tensor(mc)}
        mine = ours(input_ids, mc)
    else:
        mine = ours(input_ids)
    with torch.no_grad():
        return mine, theirs(input_ids=torch.tensor(input_ids), **extra)


# (transformers class, jaxformers kwargs, run, ours -> tuple, theirs -> tuple)
CASES = {
    "BertModel": ({}, bert_run, lambda o: (o[0][-1], o[1]), lambda t: (t.last_hidden_state, t.pooler_output)),
    "BertForPreTraining": ({}, bert_run, tuple, lambda t: (t.prediction_logits, t.seq_relationship_logits)),
    "BertForMaskedLM": ({}, bert_run, lambda o: (o,), lambda t: (t.logits,)),
    "BertForNextSentencePrediction": ({}, bert_run, lambda o: (o,), lambda t: (t.logits,)),
    "BertForSequenceClassification": ({}, bert_run, lambda o: (o,), lambda t: (t.logits,)),
    "BertForMultipleChoice": ({"num_choices": CHOICES}, lambda o, t: bert_run(o, t, True), lambda o: (o,),
                              lambda t: (t.logits,)),
    "BertForTokenClassification": ({}, bert_run, lambda o: (o,), lambda t: (t.logits,)),
    "BertForQuestionAnswering": ({}, bert_run, tuple, lambda t: (t.start_logits, t.end_logits)),
    "GPT2Model": ({}, gpt_run, lambda o: (o[0],), lambda t: (t.last_hidden_state,)),
    "GPT2LMHeadModel": ({}, gpt_run, lambda o: (o[0],), lambda t: (t.logits,)),
    "GPT2DoubleHeadsModel": ({}, lambda o, t: gpt_run(o, t, True), lambda o: tuple(o[:2]),
                             lambda t: (t.logits, t.mc_logits)),
    "OpenAIGPTModel": ({}, gpt_run, lambda o: (o,), lambda t: (t.last_hidden_state,)),
    "OpenAIGPTLMHeadModel": ({}, gpt_run, lambda o: (o,), lambda t: (t.logits,)),
    "OpenAIGPTDoubleHeadsModel": ({}, lambda o, t: gpt_run(o, t, True), tuple, lambda t: (t.logits, t.mc_logits)),
}
LABELS = {"BertForSequenceClassification": 3, "BertForTokenClassification": 5}


def assert_same(name: str, ours, theirs):
    kwargs, run, ours_fn, theirs_fn = CASES[name]
    mine, reference = run(ours, theirs)
    mine, reference = ours_fn(mine), theirs_fn(reference)
    assert len(mine) == len(reference)
    for got, expected in zip(mine, reference):
        np.testing.assert_allclose(np.asarray(got), expected.numpy(), atol=1e-5, rtol=1e-5, err_msg=name)


def load_ours(name: str, directory, **kwargs):
    return getattr(jaxformers, name).from_pretrained(directory, strict=True, **CASES[name][0], **kwargs)


@pytest.mark.parametrize("name", list(CASES))
def test_transformers_save_loads_strictly_with_equal_outputs(tmp_path, name):
    theirs = hf_model(name, num_labels=LABELS.get(name, 2))
    theirs.save_pretrained(tmp_path)  # transformers 5: model.safetensors, tied weights stored once
    assert (tmp_path / "model.safetensors").is_file()
    assert_same(name, load_ours(name, tmp_path), theirs)  # num_labels comes from the config


@pytest.mark.parametrize("name", ["BertForPreTraining", "GPT2DoubleHeadsModel", "OpenAIGPTLMHeadModel"])
def test_sharded_safetensors_from_transformers(tmp_path, name):
    theirs = hf_model(name)
    theirs.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and not (tmp_path / "model.safetensors").exists()
    assert_same(name, load_ours(name, tmp_path), theirs)


def write_sharded_bin(state: dict, directory: Path, shards: int = 3) -> None:
    """pytorch_model-0000i-of-0000n.bin files plus pytorch_model.bin.index.json, as older transformers wrote."""
    keys = list(state)
    weight_map = {}
    for index in range(shards):
        name = f"pytorch_model-{index + 1:05d}-of-{shards:05d}.bin"
        part = {key: state[key].clone() for key in keys[index::shards]}
        torch.save(part, directory / name)
        weight_map.update({key: name for key in part})
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("name", ["BertForMaskedLM", "GPT2LMHeadModel", "OpenAIGPTDoubleHeadsModel"])
def test_pytorch_bin_with_tied_lm_head_and_sharded_bin(tmp_path, name):
    theirs = hf_model(name)
    state = theirs.state_dict()  # holds the tied copy (lm_head.weight / cls.predictions.decoder.*) too
    theirs.config.to_json_file(tmp_path / "single" / "config.json") if (tmp_path / "single").mkdir() is None else None
    torch.save(state, tmp_path / "single" / "pytorch_model.bin")
    assert_same(name, load_ours(name, tmp_path / "single"), theirs)

    (tmp_path / "sharded").mkdir()
    theirs.config.to_json_file(tmp_path / "sharded" / "config.json")
    write_sharded_bin(state, tmp_path / "sharded")
    assert_same(name, load_ours(name, tmp_path / "sharded"), theirs)


def test_untied_lm_head_is_refused_not_dropped(tmp_path):
    theirs = hf_model("GPT2LMHeadModel")
    state = {key: value.clone() for key, value in theirs.state_dict().items()}
    state["lm_head.weight"] += 1.0  # trained untied: this model cannot hold it
    theirs.config.to_json_file(tmp_path / "config.json")
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="lm_head.weight differs from transformer.wte.weight"):
        jaxformers.GPT2LMHeadModel.from_pretrained(tmp_path)


def test_shard_index_errors_name_the_files(tmp_path):
    theirs = hf_model("BertModel")
    theirs.config.to_json_file(tmp_path / "config.json")
    write_sharded_bin(theirs.state_dict(), tmp_path)
    (tmp_path / "pytorch_model-00002-of-00003.bin").unlink()
    with pytest.raises(FileNotFoundError, match="pytorch_model-00002-of-00003.bin.*pytorch_model.bin.index.json"):
        jaxformers.BertModel.from_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"a": "../escape.bin"}}))
    with pytest.raises(ValueError, match="not a file beside the index"):
        jaxformers.BertModel.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------------ HF Flax layout


def hf_flax_tree(state: dict, base_prefix: str | None = None) -> dict:
    """The parameter tree Hugging Face's Flax model of the same class holds, from a PyTorch state dict, by
    transformers' documented PyTorch->Flax rules: a LayerNorm's ``weight`` is ``scale``; an embedding's ``weight``
    is ``embedding``; any other 2-d ``weight`` is a Dense ``kernel``, transposed; tied copies and buffers are not
    parameters. With `base_prefix`, that prefix is dropped (a Flax base model's tree has none)."""
    tree: dict = {}
    for key, tensor in state.items():
        if key.endswith((".attn.bias", ".attn.masked_bias", "position_ids")) or key in (
                "lm_head.weight", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
            continue
        *path, leaf = key.split(".")
        array = tensor.detach().numpy()
        if leaf == "weight":
            if "LayerNorm" in path[-1] or path[-1].startswith("ln_"):
                leaf = "scale"
            elif path[-1] in ("word_embeddings", "position_embeddings", "token_type_embeddings", "wte", "wpe"):
                leaf = "embedding"
            else:
                leaf, array = "kernel", array.T
        if base_prefix and path[0] == base_prefix:
            path = path[1:]
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = np.ascontiguousarray(array)
    return tree


def write_hf_flax(theirs, directory: Path, base_prefix: str | None = None) -> None:
    from flax import serialization

    directory.mkdir(parents=True, exist_ok=True)
    theirs.config.to_json_file(directory / "config.json")
    payload = serialization.msgpack_serialize(hf_flax_tree(theirs.state_dict(), base_prefix))
    (directory / "flax_model.msgpack").write_bytes(payload)


@pytest.mark.parametrize("name, base_prefix", [("BertForPreTraining", None), ("BertModel", None),
                                               ("GPT2LMHeadModel", None), ("GPT2Model", "transformer")])
def test_hf_flax_msgpack_loads_the_right_weights(tmp_path, name, base_prefix):
    theirs = hf_model(name)
    write_hf_flax(theirs, tmp_path, base_prefix)
    assert_same(name, load_ours(name, tmp_path), theirs)


def test_safetensors_is_preferred_over_other_formats(tmp_path):
    theirs, other = hf_model("BertForMaskedLM", seed=0), hf_model("BertForMaskedLM", seed=1)
    write_hf_flax(other, tmp_path)  # a different model in the Flax file and the pickle: must not be read
    torch.save(other.state_dict(), tmp_path / "pytorch_model.bin")
    theirs.save_pretrained(tmp_path)
    assert_same("BertForMaskedLM", load_ours("BertForMaskedLM", tmp_path), theirs)


def test_jaxformers_msgpack_is_marked_and_unmarked_files_still_load(tmp_path):
    from flax import serialization

    from jaxformers.modeling_utils import read_msgpack

    theirs = hf_model("BertForPreTraining")
    ours = load_ours("BertForPreTraining", theirs.save_pretrained(tmp_path / "hf") or tmp_path / "hf")
    ours.save_pretrained(tmp_path / "ours")
    assert MSGPACK_MARKER_KEY in read_msgpack(tmp_path / "ours" / "flax_model.msgpack")
    assert_same("BertForPreTraining", load_ours("BertForPreTraining", tmp_path / "ours"), theirs)
    # a file written before the marker existed is still ours
    flat = {key: np.asarray(value) for key, value in per_layer_params(ours).items()}
    (tmp_path / "ours" / "flax_model.msgpack").write_bytes(serialization.msgpack_serialize(unflatten_keys(flat)))
    assert_same("BertForPreTraining", load_ours("BertForPreTraining", tmp_path / "ours"), theirs)
    tree = {**unflatten_keys(flat), MSGPACK_MARKER_KEY: "jaxformers-msgpack-v99"}
    (tmp_path / "ours" / "flax_model.msgpack").write_bytes(serialization.msgpack_serialize(tree))
    with pytest.raises(ValueError, match="v99"):
        jaxformers.BertForPreTraining.from_pretrained(tmp_path / "ours")


def test_weights_of_another_layout_are_an_error_not_random_weights(tmp_path):
    gpt2 = hf_model("GPT2LMHeadModel")
    write_hf_flax(gpt2, tmp_path / "gpt2-flax")
    hf_model("BertModel").config.to_json_file(tmp_path / "gpt2-flax" / "config.json")  # BERT config, GPT-2 file
    with pytest.raises(ValueError, match=r"flax_model.msgpack.* matches only 0 of the \d+ weights of BertModel.*GPT-2"):
        jaxformers.BertModel.from_pretrained(tmp_path / "gpt2-flax")

    from safetensors.numpy import save_file

    bert = hf_model("BertModel")
    bert.config.to_json_file(tmp_path / "config.json")
    renamed = {f"encoder_v2.{key}": value.numpy() for key, value in bert.state_dict().items()}
    save_file(renamed, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"model.safetensors.* matches only 0 .*BERT PyTorch names \(encoder_v2\."):
        jaxformers.BertModel.from_pretrained(tmp_path)
