"""GPT weight interop: OpenAI's numpy checkpoint and GPT-2's TensorFlow checkpoint (written here in the original
layouts, read by the 0.6.2 loaders too), the conversion scripts, PyTorch export accepted strictly by
pytorch_pretrained_bert, and shortcut names through a model hub on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_pretrained_bert import modeling_gpt2 as ppg
from pytorch_pretrained_bert import modeling_openai as ppo

from jaxformers.models import gpt2 as jxg
from jaxformers.models import openai_gpt as jxo
from local_hub import LocalHub
from parity_utils import assert_close, torch_state_numpy
from script_loader import load_script

REPO = Path(__file__).resolve().parents[1]
GPT2_TINY = dict(n_positions=16, n_ctx=16, n_embd=32, n_layer=2, n_head=4)
OPENAI_TINY = dict(n_positions=16, n_ctx=16, n_embd=32, n_layer=2, n_head=4)
VOCAB = 99
LAYER_PARAMS = ("attn/c_attn/w", "attn/c_attn/b", "attn/c_proj/w", "attn/c_proj/b", "ln_1/g", "ln_1/b",
                "mlp/c_fc/w", "mlp/c_fc/b", "mlp/c_proj/w", "mlp/c_proj/b", "ln_2/g", "ln_2/b")


def torch_key_of(layer: int, param: str) -> str:
    """``attn/c_attn/w`` of layer 1 -> ``h.1.attn.c_attn.weight`` (written independently of the code under test)."""
    *path, leaf = param.split("/")
    return ".".join(["h", str(layer), *path, {"w": "weight", "g": "weight", "b": "bias"}[leaf]])


def original_layout(array: np.ndarray, param: str) -> np.ndarray:
    # OpenAI stored conv1d kernels as [1, in, out].
    return array[None] if param.endswith("/w") else array


def ids(seed: int, shape, high: int = VOCAB) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, high, shape)


# ------------------------------------------------------------------------------------- OpenAI numpy checkpoint


def write_openai_checkpoint(reference: ppo.OpenAIGPTModel, directory: Path) -> None:
    """OpenAI's release layout: every array flattened, concatenated and cut into 10 shards."""
    state = torch_state_numpy(reference)
    arrays = [state["positions_embed.weight"], state["tokens_embed.weight"]]
    names = ["model/we:0"]
    for layer in range(OPENAI_TINY["n_layer"]):
        for param in LAYER_PARAMS:
            arrays.append(original_layout(state[torch_key_of(layer, param)], param))
            names.append(f"model/h{layer}/{param}:0")
    directory.mkdir(parents=True)
    (directory / "params_shapes.json").write_text(json.dumps([list(a.shape) for a in arrays]))
    (directory / "parameters_names.json").write_text(json.dumps(names))
    flat = np.concatenate([a.reshape(-1) for a in arrays])
    for index, shard in enumerate(np.array_split(flat, 10)):
        np.save(directory / f"params_{index}.npy", shard)


def test_openai_numpy_checkpoint_loads_like_the_reference_and_converts(tmp_path):
    torch.manual_seed(0)
    reference = ppo.OpenAIGPTModel(ppo.OpenAIGPTConfig(VOCAB, **OPENAI_TINY)).eval()
    checkpoint = tmp_path / "openai"
    write_openai_checkpoint(reference, checkpoint)
    (checkpoint / "config.json").write_text(reference.config.to_json_string())

    # The reference's own loader reads the files back to the same weights.
    check = ppo.OpenAIGPTModel(ppo.OpenAIGPTConfig(VOCAB, **OPENAI_TINY))
    ppo.load_tf_weights_in_openai_gpt(check, str(checkpoint))
    for key, value in reference.state_dict().items():
        assert torch.equal(check.state_dict()[key], value), key

    model, info = jxo.OpenAIGPTLMHeadModel.from_pretrained(checkpoint, from_tf=True, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    input_ids = ids(1, (2, 7))
    with torch.no_grad():
        expected = reference(torch.tensor(input_ids)).numpy()
    hidden = model.transformer(input_ids)
    assert_close(hidden, expected, 1e-5, "hidden states from the numpy checkpoint")

    out = tmp_path / "converted"
    load_script("conversion/convert_openai_checkpoint.py").main([
        "--openai_checkpoint_folder_path", str(checkpoint), "--openai_config_file", str(checkpoint / "config.json"),
        "--output_dir", str(out), "--pytorch",
    ])
    exported = torch.load(out / "pytorch_model.bin", weights_only=True)
    fresh = ppo.OpenAIGPTModel(ppo.OpenAIGPTConfig(VOCAB, **OPENAI_TINY))
    fresh.load_state_dict(exported, strict=True)
    for key, value in reference.state_dict().items():
        assert torch.equal(exported[key], value), key
    # the converted directory loads into a head model, with special tokens added on the way
    grown = jxo.OpenAIGPTDoubleHeadsModel.from_pretrained(out, num_special_tokens=2)
    assert grown.transformer.tokens_embed.weight.shape == (VOCAB + 2, OPENAI_TINY["n_embd"])
    assert grown.config.n_special == 2
    np.testing.assert_array_equal(np.asarray(grown.transformer.tokens_embed.weight[...])[:VOCAB],
                                  reference.tokens_embed.weight.detach().numpy())


def test_openai_numpy_checkpoint_errors_name_the_file(tmp_path):
    torch.manual_seed(1)
    reference = ppo.OpenAIGPTModel(ppo.OpenAIGPTConfig(VOCAB, **OPENAI_TINY))
    checkpoint = tmp_path / "openai"
    write_openai_checkpoint(reference, checkpoint)
    (checkpoint / "params_9.npy").unlink()
    with pytest.raises(FileNotFoundError, match="params_9.npy"):
        jxo.OpenAIGPTModel.torch_keys_from_openai_numpy(checkpoint)
    np.save(checkpoint / "params_9.npy", np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="params_shapes.json.*describes"):
        jxo.OpenAIGPTModel.torch_keys_from_openai_numpy(checkpoint)
    with pytest.raises(FileNotFoundError, match="no params_shapes.json"):
        jxo.OpenAIGPTModel.torch_keys_from_openai_numpy(tmp_path)


# --------------------------------------------------------------------------------------- GPT-2 TF checkpoint


def write_gpt2_tf_checkpoint(reference: ppg.GPT2Model, prefix: Path) -> None:
    """The released GPT-2 variable names and layouts (``model/h0/attn/c_attn/w`` is ``[1, in, out]``)."""
    tf = pytest.importorskip("tensorflow")
    state = torch_state_numpy(reference)
    named = {"model/wte": state["wte.weight"], "model/wpe": state["wpe.weight"],
             "model/ln_f/g": state["ln_f.weight"], "model/ln_f/b": state["ln_f.bias"]}
    for layer in range(GPT2_TINY["n_layer"]):
        for param in LAYER_PARAMS:
            named[f"model/h{layer}/{param}"] = original_layout(state[torch_key_of(layer, param)], param)
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in named.items()]
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(variables).save(session, str(prefix))


@pytest.mark.slow
def test_gpt2_tf_checkpoint_loads_like_the_reference_and_converts(tmp_path):
    torch.manual_seed(2)
    reference = ppg.GPT2Model(ppg.GPT2Config(VOCAB, **GPT2_TINY)).eval()
    checkpoint = tmp_path / "117M"
    checkpoint.mkdir()
    write_gpt2_tf_checkpoint(reference, checkpoint / "model.ckpt")
    # the released hparams.json: n_vocab and n_ctx (which is also the number of positions)
    (checkpoint / "hparams.json").write_text(json.dumps(
        {"n_vocab": VOCAB, "n_ctx": 16, "n_embd": 32, "n_head": 4, "n_layer": 2}))

    check = ppg.GPT2Model(ppg.GPT2Config(VOCAB, **GPT2_TINY))
    ppg.load_tf_weights_in_gpt2(check, str(checkpoint / "model.ckpt"))
    for key, value in reference.state_dict().items():
        assert torch.equal(check.state_dict()[key], value), key

    model, info = jxg.GPT2LMHeadModel.from_pretrained(checkpoint, from_tf=True, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert model.config.vocab_size == VOCAB and model.config.n_positions == 16
    input_ids = ids(3, (2, 7))
    with torch.no_grad():
        expected_hidden, expected_presents = reference(torch.tensor(input_ids))
    hidden, presents = model.transformer(input_ids)
    assert_close(hidden, expected_hidden.numpy(), 1e-5, "hidden states from the TF checkpoint")

    out = tmp_path / "converted"
    load_script("conversion/convert_gpt2_checkpoint.py").main([
        "--gpt2_checkpoint_path", str(checkpoint / "model.ckpt"), "--output_dir", str(out), "--pytorch",
    ])
    exported = torch.load(out / "pytorch_model.bin", weights_only=True)
    fresh = ppg.GPT2Model(ppg.GPT2Config(VOCAB, **GPT2_TINY))
    fresh.load_state_dict(exported, strict=True)
    for key, value in reference.state_dict().items():
        assert torch.equal(exported[key], value), key
    with pytest.raises(ValueError, match="'other/thing' is not a GPT weight"):
        jxg.GPT2Model.torch_keys_from_tf({"other/thing": np.zeros(3)})


def test_conversion_script_runs_as_a_program(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "conversion" / "convert_openai_checkpoint.py"), "--help"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "--openai_checkpoint_folder_path" in result.stdout and "--pytorch" in result.stdout


# ------------------------------------------------------------------------------------------- PyTorch export


@pytest.mark.parametrize("family", ["gpt2", "openai"])
def test_pytorch_export_is_accepted_strictly_by_the_reference(tmp_path, family):
    torch.manual_seed(3)
    if family == "gpt2":
        reference = ppg.GPT2DoubleHeadsModel(ppg.GPT2Config(VOCAB, **GPT2_TINY)).eval()
        ours = jxg.GPT2DoubleHeadsModel(jxg.GPT2Config(VOCAB, **GPT2_TINY))
        fresh = ppg.GPT2DoubleHeadsModel(ppg.GPT2Config(VOCAB, **GPT2_TINY)).eval()
    else:
        reference = ppo.OpenAIGPTDoubleHeadsModel(ppo.OpenAIGPTConfig(VOCAB, n_special=2, **OPENAI_TINY)).eval()
        ours = jxo.OpenAIGPTDoubleHeadsModel(jxo.OpenAIGPTConfig(VOCAB, n_special=2, **OPENAI_TINY))
        fresh = ppo.OpenAIGPTDoubleHeadsModel(ppo.OpenAIGPTConfig(VOCAB, n_special=2, **OPENAI_TINY)).eval()
    # early dumps used OpenAI's .g/.b/.w names
    legacy = {key.replace("ln_1.weight", "ln_1.g").replace("ln_1.bias", "ln_1.b"): value
              for key, value in torch_state_numpy(reference).items()}
    ours.load_state_dict(legacy, strict=True)
    ours.save_pretrained(tmp_path / "model", pytorch=True)
    exported = torch.load(tmp_path / "model" / "pytorch_model.bin", weights_only=True)
    fresh.load_state_dict(exported, strict=True)
    input_ids = ids(4, (2, 3, 6))
    mc_token_ids = np.array([[5, 2, 0], [1, 5, 3]])
    with torch.no_grad():
        expected = reference(torch.tensor(input_ids), torch.tensor(mc_token_ids))
        again = fresh(torch.tensor(input_ids), torch.tensor(mc_token_ids))
    for e, a in zip(expected[:2], again[:2]):
        assert torch.equal(e, a)
    loaded = type(ours).from_pretrained(tmp_path / "model")
    got = loaded(input_ids, mc_token_ids)
    for index in range(2):
        assert_close(got[index], expected[index].numpy(), 1e-5, f"{family} output {index} after round trip")


# ------------------------------------------------------------------------------------------- shortcut names


@pytest.mark.parametrize("shortcut", ["gpt2", "gpt2-medium", "openai-gpt"])
def test_shortcut_names_download_from_the_hub(tmp_path, monkeypatch, shortcut):
    torch.manual_seed(4)
    repo = tmp_path / "hub" / "openai-community" / shortcut  # the shortcut's repository today
    repo.mkdir(parents=True)
    if shortcut.startswith("gpt2"):
        reference = ppg.GPT2LMHeadModel(ppg.GPT2Config(VOCAB, **GPT2_TINY)).eval()
        model_class = jxg.GPT2LMHeadModel
    else:
        reference = ppo.OpenAIGPTLMHeadModel(ppo.OpenAIGPTConfig(VOCAB, **OPENAI_TINY)).eval()
        model_class = jxo.OpenAIGPTLMHeadModel
    # the hub holds base-model weights (no "transformer." prefix) with the attn.bias buffers
    (repo / "config.json").write_text(reference.config.to_json_string())
    torch.save(reference.transformer.state_dict(), repo / "pytorch_model.bin")
    with LocalHub(tmp_path / "hub") as hub:
        monkeypatch.setenv("JAXFORMERS_ENDPOINT", hub.url)
        model, info = model_class.from_pretrained(shortcut, cache_dir=tmp_path / "cache", output_loading_info=True)
    assert f"/openai-community/{shortcut}/resolve/main/config.json" in hub.requests
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    input_ids = ids(5, (2, 6))
    with torch.no_grad():
        expected = reference(torch.tensor(input_ids))
    expected = expected[0] if isinstance(expected, tuple) else expected
    got = model(input_ids)
    got = got[0] if isinstance(got, tuple) else got
    assert_close(got, expected.numpy(), 1e-5, f"{shortcut} logits")
