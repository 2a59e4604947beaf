"""``jaxformers plan``: a tiny BERT's real train step compiled ahead of time for a TPU topology on the CPU
(needs libtpu, a test dependency)."""

import json

import numpy as np
import pytest

pytest.importorskip("libtpu")

from jaxformers import plan  # noqa: E402

TINY_BERT = {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 128, "max_position_embeddings": 256}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "config.json"
    path.write_text(json.dumps(TINY_BERT))
    return str(path)


def _param_count(config_path: str) -> int:
    from flax import nnx

    request = plan.PlanRequest(model=config_path, task="classification", batch=8, seq=128, topology="v5e:2x2")
    _, model = plan.build_abstract_model(request)
    return sum(int(np.prod(leaf.shape)) for leaf in __import__("jax").tree.leaves(nnx.state(model, nnx.Param)))


@pytest.fixture(scope="module")
def classification_report(tiny_bert):
    request = plan.PlanRequest(model=tiny_bert, task="classification", batch=8, seq=128, topology="v5e:2x2")
    return plan.plan(request)


@pytest.mark.slow
def test_train_step_compiles_for_tpu_and_reports(classification_report, tiny_bert):
    report = classification_report
    assert report["fits"] is True and report["devices"] == 4 and report["chip"] == "v5e"
    assert report["hbm_bytes_per_device"] == 16 * 2**30
    memory = report["per_device_memory_bytes"]
    # Replicated float32 weights + BertAdam's two moments sit on every device (plus step, key, batch shard).
    assert memory["arguments"] >= 3 * 4 * _param_count(tiny_bert)
    assert memory["aliased"] > 0  # the donated state is updated in place
    # 2 layers of QKV/out/FFN matmuls forward + backward over 8 x 128 tokens: at least 6 * params * tokens.
    assert report["flops_per_step"] >= 6 * 4 * (3 * 64 * 64 + 64 * 64 + 2 * 64 * 128) * 8 * 128 / 4
    expected_ms = 1e3 * max(report["flops_per_device"] / 197e12, report["bytes_accessed_per_device"] / 819e9)
    assert report["estimated_step_ms"] == pytest.approx(expected_ms)
    assert report["attention"] == "xla-softmax (attention dropout)"  # BERT trains with attention dropout
    assert "suggestion" not in report


@pytest.mark.slow
def test_cli_json_inference_uses_pallas_and_fsdp_shrinks_arguments(tiny_bert, capsys, classification_report):
    from jaxformers.cli import main

    status = main(["plan", tiny_bert, "--task", "infer", "--batch", "8", "--seq", "128", "--topology", "v5e:2x2",
                   "--json"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    report = json.loads(captured.out)
    assert report["attention"] == "pallas-flash" and report["task"] == "infer"
    fsdp = plan.plan(plan.PlanRequest(model=tiny_bert, task="classification", batch=8, seq=128,
                                      topology="v5e:2x2", fsdp=True))
    assert fsdp["per_device_memory_bytes"]["arguments"] < classification_report["per_device_memory_bytes"]["arguments"]


def test_not_fitting_exits_3_with_a_suggestion(tiny_bert, monkeypatch, capsys):
    monkeypatch.setitem(plan.CHIPS, "v5e", plan.ChipSpec("v5e", 197e12, 64 * 1024, 819e9))  # 64 KiB of HBM
    args = plan.add_arguments(__import__("argparse").ArgumentParser()).parse_args(
        [tiny_bert, "--task", "infer", "--batch", "8", "--seq", "128", "--topology", "v5e:2x2", "--json"])
    assert plan.run(args) == plan.EXIT_DOES_NOT_FIT
    report = json.loads(capsys.readouterr().out)
    assert report["fits"] is False and "--fsdp" in report["suggestion"] and "--batch" in report["suggestion"]


def test_bad_requests_name_the_problem(tiny_bert, capsys):
    with pytest.raises(plan.PlanError, match="v9z-8"):
        plan.get_topology("v9z-8")
    with pytest.raises(plan.PlanError, match="decode.*bert"):
        plan.plan(plan.PlanRequest(model=tiny_bert, task="decode", batch=1, seq=128, topology="v5e:2x2"))
    with pytest.raises(plan.PlanError, match="--batch 6 .*4"):
        plan.plan(plan.PlanRequest(model=tiny_bert, task="qa", batch=6, seq=128, topology="v5e:2x2"))
    with pytest.raises(plan.PlanError, match="no-such-model"):
        plan.load_config("no-such-model")


def test_shortcut_configs_and_topology_names():
    family, config = plan.load_config("bert-large-uncased")
    assert family == "bert" and (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (24, 1024, 30522)
    assert plan.load_config("bert-base-multilingual-cased")[1].vocab_size == 119547
    family, config = plan.load_config("gpt2-medium")
    assert family == "gpt2" and (config.n_layer, config.n_embd) == (24, 1024)
    for name, chips, kind in (("v5e-8", 8, "v5e"), ("v4-8", 4, "v4"), ("v5p-8", 4, "v5p"), ("v6e-8", 8, "v6e"),
                              ("v5e-32", 32, "v5e"), ("v4-32", 16, "v4")):
        topology = plan.get_topology(name)
        assert topology.chip.name == kind
        assert len(topology.devices) // topology.devices_per_chip == chips, name


@pytest.mark.slow
def test_scan_layers_counts_every_layer(classification_report, tiny_bert):
    """XLA counts a scanned loop body once; plan extrapolates from 1- and 2-layer compiles to the real depth."""
    scanned = plan.plan(plan.PlanRequest(model=tiny_bert, task="classification", batch=8, seq=128,
                                         topology="v5e:2x2", scan_layers=True))
    assert scanned["flops_per_step"] == pytest.approx(classification_report["flops_per_step"], rel=1e-6)
