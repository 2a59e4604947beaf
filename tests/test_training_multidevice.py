"""8-way data parallelism and FSDP give the 1-way updates; two processes (multi-host) do too.

Forced host devices must be configured before JAX starts, and pytest workers have usually imported JAX
already, so each scenario runs in a fresh subprocess that prints its measurements as JSON for the asserts here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

COMMON = textwrap.dedent(
    """
    import json, sys
    import jax
    import numpy as np
    jax.config.update("jax_default_matmul_precision", "highest")
    sys.path.insert(0, {tests!r})
    from test_training_engine import tiny_config, make_batch, classifier_loss, classifier_logits, bert_adam, LABELS
    from jaxformers.models.bert import BertForSequenceClassification
    from jaxformers.training import (create_train_state, make_eval_step, make_mesh, make_train_step,
                                     model_from_state, restore_checkpoint, save_checkpoint, shard_batch, gather_to_host)

    def new_model():
        # Dropout on: with partitionable threefry the masks do not depend on how the batch is sharded.
        return BertForSequenceClassification(tiny_config(dropout=0.1), num_labels=LABELS, seed=9)

    def global_batches():
        # 16 rows: 2 per device on 8 devices, and 8 per process on 2 processes.
        return [make_batch(200 + index, rows=16) for index in range(3)]

    def flat(tree):
        return {{jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(gather_to_host(tree))}}

    def max_diff(a, b):
        a, b = flat(a), flat(b)
        assert a.keys() == b.keys()
        return max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)

    def train(mesh, fsdp, grad_accum_steps=1, local_slice=slice(None)):
        tx = bert_adam(warmup=False)
        context, state = create_train_state(new_model(), tx, seed=3, mesh=mesh, fsdp=fsdp)
        step = make_train_step(context, classifier_loss, tx, grad_accum_steps=grad_accum_steps)
        for batch in global_batches():
            state, metrics = step(state, shard_batch(context, {{k: v[local_slice] for k, v in batch.items()}}))
        return context, state, jax.device_get(metrics)
    """
)

SINGLE_PROCESS = COMMON + textwrap.dedent(
    """
    out = {{"devices": jax.device_count()}}
    context1, one_way, metrics1 = train(make_mesh(1), fsdp=False)
    context8, replicated, metrics8 = train(make_mesh(8), fsdp=False)
    context_fsdp, fsdp, metrics_fsdp = train(make_mesh(8), fsdp=True)
    # Accumulation draws one dropout key per micro-batch, so its reference is a 1-way accumulating run.
    _, fsdp_accumulated, _ = train(make_mesh(8), fsdp=True, grad_accum_steps=2)
    _, one_way_accumulated, _ = train(make_mesh(1), fsdp=False, grad_accum_steps=2)
    out["replicated_vs_1"] = max_diff(replicated.params, one_way.params)
    out["fsdp_vs_1"] = max_diff(fsdp.params, one_way.params)
    out["fsdp_opt_vs_1"] = max_diff(fsdp.opt_state, one_way.opt_state)
    out["fsdp_accum_vs_1"] = max_diff(fsdp_accumulated.params, one_way_accumulated.params)
    out["loss"] = [float(metrics1["loss"]), float(metrics8["loss"]), float(metrics_fsdp["loss"])]

    word = fsdp.params["bert"]["embeddings"]["word_embeddings"]["weight"][...]
    out["fsdp_word_spec"] = list(word.sharding.spec)
    out["fsdp_word_shard_shape"] = list(word.addressable_shards[0].data.shape)
    out["fsdp_sharded_leaves"] = sum(
        1 for leaf in jax.tree.leaves(fsdp.params) if not leaf.sharding.is_fully_replicated)
    out["replicated_sharded_leaves"] = sum(
        1 for leaf in jax.tree.leaves(replicated.params) if not leaf.sharding.is_fully_replicated)
    mu = fsdp.opt_state[1].mu["bert"]["embeddings"]["word_embeddings"]["weight"][...]
    out["fsdp_mu_spec"] = list(mu.sharding.spec)

    eval_batch = make_batch(300, rows=16)
    logits1 = np.asarray(make_eval_step(context1, classifier_logits)(one_way, shard_batch(context1, eval_batch)))
    logits8 = make_eval_step(context_fsdp, classifier_logits)(fsdp, shard_batch(context_fsdp, eval_batch))
    out["eval_replicated_output"] = bool(logits8.sharding.is_fully_replicated)
    out["eval_vs_1"] = float(np.abs(np.asarray(logits8) - logits1).max())
    out["model_from_fsdp_vs_1"] = max_diff(model_from_state(context_fsdp, fsdp), model_from_state(context1, one_way))

    save_checkpoint(sys.argv[1], fsdp, 3)
    _, template = create_train_state(new_model(), bert_adam(warmup=False), seed=0, mesh=make_mesh(8), fsdp=True)
    restored = restore_checkpoint(sys.argv[1], template)
    out["restored_vs_saved"] = max_diff(restored, fsdp)
    out["restored_word_spec"] = list(restored.params["bert"]["embeddings"]["word_embeddings"]["weight"][...].sharding.spec)
    np.savez(sys.argv[2], **flat(one_way.params))
    print("RESULT", json.dumps(out))
    """
)

MULTI_PROCESS = COMMON + textwrap.dedent(
    """
    from jaxformers.training import initialize_distributed
    initialize_distributed()  # from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID
    index, count = jax.process_index(), jax.process_count()
    rows = 16 // count
    local = slice(index * rows, (index + 1) * rows)  # this host's share of each global batch
    out = {{"process": index, "processes": count, "devices": jax.device_count(), "local": jax.local_device_count()}}
    for fsdp in (False, True):
        context, state, metrics = train(make_mesh(), fsdp=fsdp, local_slice=local)
        expected = np.load(sys.argv[1])
        got = flat(state.params)
        out[f"fsdp={{fsdp}}_vs_1"] = max(float(np.abs(got[k] - expected[k]).max()) for k in expected.files)
        out[f"fsdp={{fsdp}}_loss"] = float(metrics["loss"])
    # train_loop takes the global batches (the same on every host) and feeds each host's share itself.
    from jaxformers.training import train_loop
    tx = bert_adam(warmup=False)
    context, looped = create_train_state(new_model(), tx, seed=3, mesh=make_mesh(), fsdp=True)
    step = make_train_step(context, classifier_loss, tx)
    looped, history = train_loop(step, looped, global_batches(), num_steps=3, context=context)
    got = flat(looped.params)
    out["train_loop_vs_1"] = max(float(np.abs(got[k] - expected[k]).max()) for k in expected.files)
    out["train_loop_steps"] = len(history)
    save_checkpoint(sys.argv[2], state, 3)  # every process calls it, process 0 writes
    print("RESULT", json.dumps(out))
    """
)


def run_script(tmp_path: Path, name: str, source: str, args: list[str], env_extra: dict[str, str]):
    script = tmp_path / f"{name}.py"
    script.write_text(source.format(tests=str(REPO / "tests")))
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env.update(JAX_PLATFORMS="cpu", **env_extra)
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)


def result_of(process: subprocess.Popen, timeout: float = 1200) -> dict:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout[-2000:] + stderr[-2000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("multidevice")
    process = run_script(tmp_path, "eight_devices", SINGLE_PROCESS,
                         [str(tmp_path / "checkpoints"), str(tmp_path / "one_way.npz")],
                         {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    return tmp_path, result_of(process)


def test_eight_way_data_parallel_and_fsdp_match_one_way(single_process):
    _, result = single_process
    assert result["devices"] == 8
    # Same global batch, same dropout masks: only the reduction order of the gradient sums differs.
    assert result["replicated_vs_1"] <= 1e-6
    assert result["fsdp_vs_1"] <= 1e-6
    assert result["fsdp_opt_vs_1"] <= 1e-6
    assert result["fsdp_accum_vs_1"] <= 1e-6
    assert max(result["loss"]) - min(result["loss"]) <= 1e-6


def test_fsdp_really_shards_parameters_and_optimizer_state(single_process):
    _, result = single_process
    assert result["replicated_sharded_leaves"] == 0
    assert result["fsdp_sharded_leaves"] > 10
    # word_embeddings [40, 16]: the vocabulary axis is the largest one 8 divides.
    assert result["fsdp_word_spec"] == ["data", None]
    assert result["fsdp_word_shard_shape"] == [5, 16]
    assert result["fsdp_mu_spec"] == result["fsdp_word_spec"]  # Adam moments sharded like their parameter


def test_eval_export_and_checkpoint_across_devices(single_process):
    _, result = single_process
    assert result["eval_replicated_output"]
    assert result["eval_vs_1"] <= 1e-5
    assert result["model_from_fsdp_vs_1"] <= 1e-6
    assert result["restored_vs_saved"] == 0.0
    assert result["restored_word_spec"] == result["fsdp_word_spec"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_feeding_their_shards_match_one_way(single_process):
    tmp_path, _ = single_process
    address = f"127.0.0.1:{free_port()}"
    processes = [
        run_script(tmp_path, f"host{index}", MULTI_PROCESS,
                   [str(tmp_path / "one_way.npz"), str(tmp_path / "multi_checkpoints")],
                   {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_COORDINATOR_ADDRESS": address,
                    "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(index),
                    "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"})
        for index in range(2)
    ]
    try:
        results = [result_of(process) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for index, result in enumerate(results):
        assert (result["process"], result["processes"], result["devices"], result["local"]) == (index, 2, 8, 4)
        assert result["fsdp=False_vs_1"] <= 1e-6
        assert result["fsdp=True_vs_1"] <= 1e-6
        assert result["train_loop_vs_1"] <= 1e-6
        assert result["train_loop_steps"] == 3
    assert results[0]["fsdp=True_loss"] == results[1]["fsdp=True_loss"]
    assert len(list((tmp_path / "multi_checkpoints").glob("checkpoint_*.safetensors"))) == 1
