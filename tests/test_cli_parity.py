"""``jaxformers parity`` end to end on tiny random checkpoints of every family, against each reference library,
and the CPU-platform default that keeps JAX from probing for a TPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxformers import (BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel, OpenAIGPTConfig,
                        OpenAIGPTLMHeadModel, TransfoXLConfig, TransfoXLLMHeadModel, cli)

TINY = {
    "bert": lambda: BertForSequenceClassification(
        BertConfig(99, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32),
        num_labels=3, seed=1),
    "gpt2": lambda: GPT2LMHeadModel(GPT2Config(99, n_positions=32, n_ctx=32, n_embd=16, n_layer=2, n_head=2), seed=1),
    "openai-gpt": lambda: OpenAIGPTLMHeadModel(
        OpenAIGPTConfig(99, n_special=3, n_positions=32, n_ctx=32, n_embd=16, n_layer=2, n_head=2), seed=1),
    "transfo-xl": lambda: TransfoXLLMHeadModel(
        TransfoXLConfig(n_token=99, cutoffs=[20, 50], d_model=16, d_embed=16, n_head=2, d_head=8, d_inner=32,
                        div_val=2, n_layer=2, tgt_len=8, mem_len=8, clamp_len=20), seed=1),
}
FIRST_OUTPUT = {"bert": "logits", "gpt2": "lm logits", "openai-gpt": "lm logits", "transfo-xl": "log probs"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parity")
    for family, build in TINY.items():
        build().save_pretrained(root / family, pytorch=True)
    return {family: root / family for family in TINY}


def run_parity(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["parity", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("family,reference", [
    ("bert", "pytorch-pretrained-bert"), ("gpt2", "pytorch-pretrained-bert"),
    ("openai-gpt", "pytorch-pretrained-bert"), ("transfo-xl", "pytorch-pretrained-bert"),
    pytest.param("bert", "transformers", marks=pytest.mark.slow),
    pytest.param("gpt2", "transformers", marks=pytest.mark.slow),
    pytest.param("openai-gpt", "transformers", marks=pytest.mark.slow),
])
def test_parity_passes_on_every_family(capsys, checkpoints, family, reference):
    code, out, err = run_parity(capsys, str(checkpoints[family]), "--reference", reference, "--max-length", "12")
    assert code == 0, out + err
    # The class comes from the config's "architectures" entry written by save_pretrained.
    assert f"model: {type(TINY[family]()).__name__}" in out
    assert f"reference: {reference}" in out and "PARITY OK" in out
    assert any(line.startswith(FIRST_OUTPUT[family]) for line in out.splitlines()), out


def test_parity_fails_when_outputs_differ(capsys, checkpoints):
    code, out, _ = run_parity(capsys, str(checkpoints["gpt2"]), "--atol", "1e-30", "--max-length", "12")
    assert code == 1 and "PARITY FAILED" in out


def test_parity_notices_a_checkpoint_file_it_did_not_load(capsys, checkpoints, tmp_path):
    # jaxformers loads flax_model.msgpack before pytorch_model.bin; a pytorch_model.bin beside it holding other
    # numbers must be caught by the independent check of the checkpoint's own PyTorch weights.
    import shutil

    import torch

    directory = tmp_path / "tampered"
    shutil.copytree(checkpoints["bert"], directory)
    assert not (directory / "model.safetensors").exists()
    state = torch.load(directory / "pytorch_model.bin", weights_only=True)
    state["classifier.weight"] = state["classifier.weight"] + 1.0
    torch.save(state, directory / "pytorch_model.bin")
    code, _, err = run_parity(capsys, str(directory), "--max-length", "12")
    assert code == 1 and "classifier.weight" in err, err


def _clean_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("JAX_", "TPU_", "XLA_"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def test_importing_jaxformers_keeps_jax_off_the_tpu_probe():
    code = ("import logging; logging.basicConfig(level=logging.INFO); import jaxformers, jax; "
            "print(jax.default_backend(), jax.config.jax_platforms)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_clean_env(),
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["cpu", "cpu"]
    assert "Unable to initialize backend" not in result.stderr and "libtpu" not in result.stderr.lower()
    assert "TPU_" not in result.stderr


def test_a_platform_the_user_chose_is_kept():
    env = {**_clean_env(), "JAX_PLATFORMS": ""}
    result = subprocess.run([sys.executable, "-c", "import jaxformers, jax; print(repr(jax.config.jax_platforms))"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() in ("''", "None"), result.stdout + result.stderr


def test_tpu_topologies_stay_reachable_on_a_cpu_machine():
    pytest.importorskip("libtpu")
    code = ("import jaxformers; from jax.experimental import topologies; "
            "t = topologies.get_topology_desc(platform='tpu', topology_name='v5e:2x2'); print(len(t.devices))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_clean_env(),
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "4"


def test_parity_takes_a_hub_id_and_reads_the_class_from_its_config(capsys, checkpoints, tmp_path, monkeypatch):
    import shutil

    from local_hub import LocalHub

    root = tmp_path / "hub"
    shutil.copytree(checkpoints["gpt2"], root / "some-org" / "tiny-gpt2")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("JAXFORMERS_CACHE", raising=False)
    with LocalHub(root) as hub:
        monkeypatch.setenv("JAXFORMERS_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        code, out, err = run_parity(capsys, "some-org/tiny-gpt2", "--max-length", "12")
    assert code == 0, out + err
    assert "model: GPT2LMHeadModel" in out and "PARITY OK" in out


def test_an_installed_accelerator_plugin_leaves_jax_to_choose(tmp_path):
    # A jax_plugins namespace module is how CUDA/ROCm plugins announce themselves; jaxformers must then not pin
    # the CPU platform (the GPU machine's check: jax.default_backend() stays 'gpu' there).
    plugin = tmp_path / "jax_plugins" / "xla_fake_accelerator"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text("def initialize():\n    pass\n")
    env = {**_clean_env(), "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    code = ("from jaxformers import _platform; print(_platform._accelerator_plugin_installed(), "
            "_platform.default_jax_to_cpu_without_accelerator())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "False"]
