"""The training engine on one device: accumulation == big batch, mixed precision, loss scaling, eval, seeds,
checkpoints (including a SIGKILLed run resumed to the same parameters), flags and eval_results.txt.

Compiling a train step costs seconds on the shared CPU, so tests reuse compiled steps through module fixtures
and the mechanics-only tests use a two-layer MLP.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxformers.models.bert import BertConfig, BertForSequenceClassification
from jaxformers.optimization import BertAdam
from jaxformers.training import (
    Precision,
    add_training_arguments,
    create_train_state,
    host_share,
    list_checkpoints,
    make_eval_step,
    make_mesh,
    make_train_step,
    model_from_state,
    model_overrides,
    pad_batch,
    precision_from_args,
    restore_checkpoint,
    save_checkpoint,
    setup_run,
    shard_batch,
    train_loop,
    write_eval_results,
)
from jaxformers.training.precision import LossScaleState, update_loss_scale

REPO = Path(__file__).resolve().parents[1]
VOCAB, SEQ, LABELS = 40, 8, 3


def tiny_config(dropout: float = 0.0) -> BertConfig:
    return BertConfig(
        VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
        max_position_embeddings=16, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )


def make_batch(seed: int, rows: int = 8) -> dict[str, np.ndarray]:
    rs = np.random.RandomState(seed)
    mask = np.ones((rows, SEQ), np.int32)
    mask[::3, SEQ - 3:] = 0  # some padding, so attention masks matter
    return {
        "input_ids": rs.randint(1, VOCAB, (rows, SEQ)).astype(np.int32),
        "token_type_ids": (np.arange(SEQ)[None, :] >= SEQ // 2).astype(np.int32).repeat(rows, 0),
        "attention_mask": mask,
        "labels": rs.randint(0, LABELS, (rows,)).astype(np.int32),
    }


def classifier_loss(model, batch, dropout_rng):
    return model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], batch["labels"],
                 dropout_rng=dropout_rng)


def classifier_logits(model, batch):
    return model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])


def bert_adam(warmup: bool = True) -> optax.GradientTransformation:
    # Warmup makes the first update zero (multiplier 0 at step 0); tests that need every update to move the
    # parameters use a constant rate.
    return BertAdam(1e-3, warmup=0.1, t_total=20) if warmup else BertAdam(1e-3, schedule=None)


def flat_params(params) -> dict[str, np.ndarray]:
    if isinstance(params, dict) and all(isinstance(key, str) for key in params):
        return params  # already flat
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def max_param_diff(a, b) -> float:
    a, b = flat_params(a), flat_params(b)
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(1)


@pytest.fixture(scope="module")
def model():
    return BertForSequenceClassification(tiny_config(), num_labels=LABELS, seed=3)


@pytest.fixture(scope="module")
def fp32_setup(model, mesh):
    """Context and a compiled plain fp32 step (no dropout), shared by several tests."""
    tx = bert_adam()
    context, _ = create_train_state(model, tx, seed=0, mesh=mesh)
    return context, tx, make_train_step(context, classifier_loss, tx)


def fresh_state(model, tx, mesh, **kwargs):
    return create_train_state(model, tx, seed=0, mesh=mesh, **kwargs)[1]


# ------------------------------------------------------------------------------------------------ the update


def reference_updates(model, tx, batches, rng_seed=0):
    """The same training done by hand, eagerly: nnx.grad on the model in train mode, then the optimizer."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(jnp.array, params)  # our own copy
    opt_state = tx.init(params)

    @jax.jit
    def update(params, opt_state, batch):
        def loss_of(p):
            trained = nnx.merge(graphdef, p, rest)
            trained.train()
            return classifier_loss(trained, batch, jax.random.PRNGKey(rng_seed))

        loss, grads = jax.value_and_grad(loss_of)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for batch in batches:
        params, opt_state, loss = update(params, opt_state, batch)
        losses.append(float(loss))
    return params, losses


def test_step_matches_hand_written_update(model, mesh, fp32_setup):
    context, tx, step = fp32_setup
    state = fresh_state(model, tx, mesh)
    batches = [make_batch(1), make_batch(2)]
    metrics = []
    for batch in batches:
        state, step_metrics = step(state, shard_batch(context, batch))
        metrics.append(jax.device_get(step_metrics))
    expected_params, expected_losses = reference_updates(model, tx, batches)
    assert max_param_diff(state.params, expected_params) <= 1e-6
    np.testing.assert_allclose([m["loss"] for m in metrics], expected_losses, rtol=1e-6)
    assert int(state.step) == 2
    assert all(m["skipped"] == 0 and m["loss_scale"] == 1.0 and m["grad_norm"] > 0 for m in metrics)
    # The model the state was made from is untouched (its buffers were copied, not donated).
    assert max_param_diff(nnx.state(model, nnx.Param), nnx.split(model, nnx.Param, ...)[1]) == 0.0


def test_gradient_accumulation_equals_one_big_batch(model, mesh, fp32_setup):
    context, tx, big_batch_step = fp32_setup
    accumulating = make_train_step(context, classifier_loss, tx, grad_accum_steps=4)
    big, accumulated = fresh_state(model, tx, mesh), fresh_state(model, tx, mesh)
    for seed in (5, 6, 7):
        batch = shard_batch(context, make_batch(seed))
        big, big_metrics = big_batch_step(big, batch)
        accumulated, accumulated_metrics = accumulating(accumulated, batch)
        np.testing.assert_allclose(float(accumulated_metrics["loss"]), float(big_metrics["loss"]), rtol=1e-6)
        np.testing.assert_allclose(float(accumulated_metrics["grad_norm"]), float(big_metrics["grad_norm"]), rtol=1e-5)
    assert max_param_diff(accumulated.params, big.params) <= 1e-6
    assert max_param_diff(accumulated.opt_state, big.opt_state) <= 1e-6
    with pytest.raises(ValueError, match="not divisible by grad_accum_steps=4"):
        accumulating(accumulated, shard_batch(context, make_batch(8, rows=6)))


def test_scan_layers_and_remat_train_like_the_unrolled_model(model, mesh, fp32_setup):
    context, tx, step = fp32_setup
    config = dataclasses.replace(tiny_config(), scan_layers=True, remat=True)
    scanned = BertForSequenceClassification(config, num_labels=LABELS, seed=0)
    scanned.load_state_dict(model.torch_state_dict(), strict=True)
    scanned_context, scanned_state = create_train_state(scanned, tx, seed=0, mesh=mesh)
    scanned_step = make_train_step(scanned_context, classifier_loss, tx)
    state = fresh_state(model, tx, mesh)
    for seed in (1, 2):
        state, _ = step(state, make_batch(seed))
        scanned_state, _ = scanned_step(scanned_state, make_batch(seed))
    expected = model_from_state(context, state).torch_state_dict()
    got = model_from_state(scanned_context, scanned_state).torch_state_dict()
    assert got.keys() == expected.keys()
    assert max(float(np.abs(got[key] - expected[key]).max()) for key in expected) <= 1e-6


def test_eval_step_and_model_from_state(model, mesh, fp32_setup):
    context, tx, step = fp32_setup
    state = fresh_state(model, tx, mesh)
    state, _ = step(state, shard_batch(context, make_batch(1)))
    eval_step = make_eval_step(context, classifier_logits)
    batch = make_batch(9)
    logits = np.asarray(eval_step(state, shard_batch(context, batch)))
    trained = model_from_state(context, state)
    assert trained.deterministic  # eval mode: no dropout, no key needed
    expected = np.asarray(classifier_logits(trained, batch))
    assert logits.shape == (8, LABELS)
    np.testing.assert_allclose(logits, expected, atol=1e-6)
    assert max_param_diff(nnx.state(trained, nnx.Param), state.params) == 0.0
    # The exported model is a normal model: it saves and reloads.
    assert set(trained.torch_state_dict()) == set(model.torch_state_dict())


# --------------------------------------------------------------------------------------- precision and seeds


@pytest.fixture(scope="module")
def dropout_model():
    return BertForSequenceClassification(tiny_config(dropout=0.1), num_labels=LABELS, seed=4)


def test_seed_makes_runs_reproducible(dropout_model, mesh):
    tx = bert_adam()
    context, first = create_train_state(dropout_model, tx, seed=11, mesh=mesh)
    step = make_train_step(context, classifier_loss, tx)
    _, second = create_train_state(dropout_model, tx, seed=11, mesh=mesh)
    _, other_seed = create_train_state(dropout_model, tx, seed=12, mesh=mesh)
    runs = []
    for state in (first, second, other_seed):
        for seed in (1, 2):
            state, _ = step(state, shard_batch(context, make_batch(seed)))
        runs.append(state.params)
    assert max_param_diff(runs[0], runs[1]) == 0.0
    assert max_param_diff(runs[0], runs[2]) > 0.0  # different dropout masks


def test_bf16_computes_in_bf16_with_fp32_master_weights(dropout_model, mesh):
    tx = bert_adam(warmup=False)
    bf16 = Precision("bf16")
    context, state = create_train_state(dropout_model, tx, seed=0, mesh=mesh, precision=bf16)
    step = make_train_step(context, classifier_loss, tx, precision=bf16)
    eval_step = make_eval_step(context, classifier_logits)
    batch = make_batch(1)
    before = flat_params(state.params)
    state, metrics = step(state, shard_batch(context, batch))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))
    assert all(leaf.dtype in (jnp.float32, jnp.int32) for leaf in jax.tree.leaves(state.opt_state))
    assert max_param_diff(state.params, before) > 0
    # Loss of an untrained 3-way classifier: near log(3), computed from bf16 activations.
    assert abs(float(metrics["loss"]) - np.log(3)) < 0.1
    logits = eval_step(state, shard_batch(context, batch))
    assert logits.dtype == jnp.bfloat16
    exact = classifier_logits(model_from_state(context, state), batch)
    np.testing.assert_allclose(np.asarray(logits, np.float32), np.asarray(exact), atol=3e-2)


def test_fp16_dynamic_loss_scale_skips_overflow_then_grows(dropout_model, mesh):
    # 2**30 makes the fp16 backward pass overflow; each skipped step halves the scale until it fits, then
    # two clean steps in a row double it. (Attention dropout keeps XLA:CPU off its fp16 fused-attention path.)
    fp16 = Precision("fp16", init_scale=2.0**30, growth_interval=2)
    tx = bert_adam(warmup=False)
    context, state = create_train_state(dropout_model, tx, seed=0, mesh=mesh, precision=fp16)
    step = make_train_step(context, classifier_loss, tx, precision=fp16)
    assert float(state.loss_scale.scale) == 2.0**30
    history = []
    for index in range(22):
        before_params = flat_params(state.params)
        before_opt = flat_params(state.opt_state)
        scale, good = float(state.loss_scale.scale), int(state.loss_scale.good_steps)
        state, metrics = step(state, shard_batch(context, make_batch(index % 3)))
        metrics = jax.device_get(metrics)
        assert metrics["loss_scale"] == scale
        if metrics["skipped"]:
            assert flat_params(state.params).keys() == before_params.keys()
            assert max_param_diff(state.params, before_params) == 0.0
            assert max_param_diff(state.opt_state, before_opt) == 0.0
            assert float(state.loss_scale.scale) == scale / 2 and int(state.loss_scale.good_steps) == 0
        else:
            assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])
            assert max_param_diff(state.params, before_params) > 0.0
            if good + 1 == 2:
                assert float(state.loss_scale.scale) == scale * 2 and int(state.loss_scale.good_steps) == 0
            else:
                assert float(state.loss_scale.scale) == scale and int(state.loss_scale.good_steps) == good + 1
        history.append(int(metrics["skipped"]))
    assert history[0] == 1 and 0 in history, history
    assert int(state.step) == 22  # skipped steps still consume their batch
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))


# ----------------------------------------------------------------------------- mechanics on a small MLP


class TinyRegressor(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(4, 8, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))[:, 0]


def regression_loss(model, batch, dropout_rng):
    del dropout_rng
    # "boost" lets a test blow the loss up to inf on purpose.
    return jnp.mean((model(batch["x"]) - batch["y"]) ** 2) * batch["boost"][0]


def regression_batch(seed: int, boost: float = 1.0) -> dict[str, np.ndarray]:
    rs = np.random.RandomState(seed)
    return {"x": rs.randn(8, 4).astype(np.float32), "y": rs.randn(8).astype(np.float32),
            "boost": np.full((8,), boost, np.float32)}


def test_fp16_static_loss_scale_and_non_finite_steps(mesh):
    model = TinyRegressor(nnx.Rngs(0))
    static = Precision("fp16", loss_scale=128.0)
    tx = optax.sgd(0.1)
    context, state = create_train_state(model, tx, mesh=mesh, precision=static)
    step = make_train_step(context, regression_loss, tx, precision=static)
    fp32_context, fp32_state = create_train_state(model, tx, mesh=mesh)
    fp32_step = make_train_step(fp32_context, regression_loss, tx)

    state, metrics = step(state, regression_batch(0))
    fp32_state, _ = fp32_step(fp32_state, regression_batch(0))
    assert metrics["loss_scale"] == 128.0 and metrics["skipped"] == 0
    assert max_param_diff(state.params, fp32_state.params) < 2e-3  # the fp16 step is the fp32 step, rounded

    before = flat_params(state.params)
    state, metrics = step(state, regression_batch(1, boost=np.inf))
    assert metrics["skipped"] == 1 and not np.isfinite(float(metrics["loss"]))
    assert max_param_diff(state.params, before) == 0.0
    assert float(state.loss_scale.scale) == 128.0  # a static scale never moves


def test_loss_scale_update_rules():
    dynamic = Precision("fp16", init_scale=8.0, growth_interval=3)
    state = LossScaleState(scale=jnp.float32(8.0), good_steps=jnp.int32(2))
    grown = update_loss_scale(dynamic, state, jnp.asarray(True))
    assert float(grown.scale) == 16.0 and int(grown.good_steps) == 0
    backed_off = update_loss_scale(dynamic, state, jnp.asarray(False))
    assert float(backed_off.scale) == 4.0 and int(backed_off.good_steps) == 0
    floor = update_loss_scale(dynamic, LossScaleState(jnp.float32(1.0), jnp.int32(0)), jnp.asarray(False))
    assert float(floor.scale) == 1.0
    static = Precision("fp16", loss_scale=64.0)
    assert update_loss_scale(static, state, jnp.asarray(False)) is state


def test_precision_validation_and_flags():
    with pytest.raises(ValueError, match="compute='fp8'"):
        Precision("fp8")
    with pytest.raises(ValueError, match="only applies to compute='fp16'"):
        Precision("bf16", loss_scale=128)
    with pytest.raises(ValueError, match="mutually exclusive"):
        Precision.from_flags(fp16=True, bf16=True)
    parser = add_training_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--fp16", "--loss_scale", "128", "--gradient_accumulation_steps", "2"])
    assert precision_from_args(args) == Precision("fp16", loss_scale=128.0)
    assert args.gradient_accumulation_steps == 2
    defaults = parser.parse_args([])
    # The reference run_classifier.py defaults.
    assert (defaults.train_batch_size, defaults.eval_batch_size, defaults.learning_rate) == (32, 8, 5e-5)
    assert (defaults.num_train_epochs, defaults.warmup_proportion, defaults.seed) == (3.0, 0.1, 42)
    assert (defaults.max_seq_length, defaults.loss_scale, defaults.checkpoint_every) == (128, 0, 0)
    assert precision_from_args(defaults) == Precision()
    for flag in ("do_train", "do_eval", "do_lower_case", "fsdp", "remat", "scan_layers", "optimize_on_cpu", "bf16"):
        assert getattr(defaults, flag) is False
    assert precision_from_args(parser.parse_args(["--bf16"])) == Precision("bf16")


def test_setup_run_checks_batch_flags_and_builds_mesh_and_precision():
    parser = add_training_arguments(argparse.ArgumentParser())
    setup = setup_run(parser.parse_args(["--do_train", "--bf16", "--train_batch_size", "6", "--num_devices", "1",
                                         "--gradient_accumulation_steps", "3"]))
    assert setup.precision == Precision("bf16")
    assert setup.num_devices == 1 and setup.is_main
    assert setup.round_up(5) == 5
    with pytest.raises(SystemExit, match=r"--train_batch_size \(7\) must be a multiple of "
                                         r"--gradient_accumulation_steps x devices \(2 x 1\)"):
        setup_run(parser.parse_args(["--do_train", "--train_batch_size", "7", "--gradient_accumulation_steps", "2"]))
    with pytest.raises(SystemExit, match="--gradient_accumulation_steps must be >= 1, got 0"):
        setup_run(parser.parse_args(["--gradient_accumulation_steps", "0"]))
    # Evaluation-only runs never build train batches, so their train batch size is not checked.
    assert setup_run(parser.parse_args(["--do_eval", "--train_batch_size", "7", "--gradient_accumulation_steps",
                                        "2"])).num_devices >= 1
    assert model_overrides(parser.parse_args([])) is None
    assert model_overrides(parser.parse_args(["--scan_layers"])) == {"scan_layers": True}
    assert model_overrides(parser.parse_args(["--remat", "--scan_layers"])) == {"remat": True, "scan_layers": True}
    batch = {"input_ids": np.arange(6).reshape(3, 2)}
    assert host_share(batch)["input_ids"] is batch["input_ids"]  # one process: the whole global batch


def test_make_train_step_rejects_a_different_precision(mesh):
    model = TinyRegressor(nnx.Rngs(0))
    context, _ = create_train_state(model, optax.sgd(0.1), mesh=mesh, precision=Precision("bf16"))
    with pytest.raises(ValueError, match="created with"):
        make_train_step(context, regression_loss, optax.sgd(0.1), precision=Precision("fp16"))


def test_optimize_on_cpu_is_explained_on_cpu(mesh, caplog):
    model = TinyRegressor(nnx.Rngs(0))
    with caplog.at_level(logging.WARNING, logger="jaxformers"):
        context, state = create_train_state(model, optax.adam(0.1), mesh=mesh, optimize_on_cpu=True)
    assert not context.offload_optimizer
    assert "not applicable on the CPU platform" in caplog.text
    step = make_train_step(context, regression_loss, optax.adam(0.1))
    state, metrics = step(state, regression_batch(0))
    assert np.isfinite(float(metrics["loss"]))


def test_optimizer_state_offload_path(mesh, monkeypatch, tmp_path):
    # The GPU/TPU code path, run on CPU (which also exposes a 'pinned_host' memory): the optimizer state lives
    # there between steps, and the updates are those of the on-device run.
    import jaxformers.training.state as state_module

    model = TinyRegressor(nnx.Rngs(0))
    tx = optax.adam(0.1)
    context, on_device = create_train_state(model, tx, mesh=mesh)
    device_step = make_train_step(context, regression_loss, tx)
    monkeypatch.setattr(state_module, "host_offload_supported", lambda mesh: True)
    offload_context, offloaded = create_train_state(model, tx, mesh=mesh, optimize_on_cpu=True)
    assert offload_context.offload_optimizer
    offload_step = make_train_step(offload_context, regression_loss, tx)
    for seed in range(3):
        on_device, _ = device_step(on_device, regression_batch(seed))
        offloaded, _ = offload_step(offloaded, regression_batch(seed))
    kinds = {leaf.sharding.memory_kind for leaf in jax.tree.leaves(offloaded.opt_state)}
    assert kinds == {"pinned_host"}
    assert {leaf.sharding.memory_kind for leaf in jax.tree.leaves(offloaded.params)} == {"device"}
    assert max_param_diff(offloaded.params, on_device.params) == 0.0
    assert max_param_diff(offloaded.opt_state, on_device.opt_state) == 0.0
    save_checkpoint(tmp_path, offloaded, 3)
    restored = restore_checkpoint(tmp_path, offloaded)
    assert {leaf.sharding.memory_kind for leaf in jax.tree.leaves(restored.opt_state)} == {"pinned_host"}


def test_shard_batch_and_pad_batch_errors(mesh, fp32_setup):
    context = fp32_setup[0]
    with pytest.raises(ValueError, match=r"batch\['labels'\] is a scalar"):
        shard_batch(context, {"labels": np.int32(3)})
    padded, real = pad_batch({"a": np.ones((5, 2)), "b": np.arange(5)}, 4)
    assert real == 5 and padded["a"].shape == (8, 2) and padded["b"].tolist() == [0, 1, 2, 3, 4, 0, 0, 0]
    with pytest.raises(ValueError, match="disagree on the batch size"):
        pad_batch({"a": np.ones((5, 2)), "b": np.arange(4)}, 4)


# ------------------------------------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_keep_and_mismatch(tmp_path, mesh):
    model = TinyRegressor(nnx.Rngs(0))
    tx = optax.adam(0.1)
    context, state = create_train_state(model, tx, mesh=mesh, seed=7)
    step = make_train_step(context, regression_loss, tx, donate=False)
    saved = {}
    for index in range(1, 4):
        state, _ = step(state, regression_batch(index))
        save_checkpoint(tmp_path, state, index, keep=2)
        saved[index] = flat_params(state)
    assert [number for number, _ in list_checkpoints(tmp_path)] == [2, 3]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind

    _, template = create_train_state(model, tx, mesh=mesh, seed=0)
    restored = restore_checkpoint(tmp_path, template)
    assert flat_params(restored).keys() == saved[3].keys()
    for key, value in flat_params(restored).items():
        np.testing.assert_array_equal(value, saved[3][key], err_msg=key)
    assert restored.params["hidden"]["kernel"][...].sharding == template.params["hidden"]["kernel"][...].sharding
    assert restore_checkpoint(tmp_path / "empty", template) is None

    _, sgd_template = create_train_state(model, optax.sgd(0.1, momentum=0.9), mesh=mesh)
    with pytest.raises(ValueError, match=r"checkpoint_000000003\.safetensors"):
        restore_checkpoint(tmp_path, sgd_template)


RESUME_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import jax
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_training_engine import tiny_config, make_batch, classifier_loss, bert_adam, LABELS
    from jaxformers.models.bert import BertForSequenceClassification
    from jaxformers.training import create_train_state, make_mesh, make_train_step, train_loop

    mode, checkpoint_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]
    model = BertForSequenceClassification(tiny_config(dropout=0.1), num_labels=LABELS, seed=5)
    tx = bert_adam()
    context, state = create_train_state(model, tx, seed=42, mesh=make_mesh(1))
    step = make_train_step(context, classifier_loss, tx, grad_accum_steps=2)

    def batches():
        for index in range(6):
            if mode == "kill" and index == 5:
                # Step 4 has been checkpointed and step 5 run but not saved: crash hard, losing it.
                os.kill(os.getpid(), signal.SIGKILL)
            yield make_batch(100 + index)

    state, history = train_loop(step, state, batches(), num_steps=6, context=context,
                                checkpoint_dir=None if mode == "full" else checkpoint_dir,
                                checkpoint_every=0 if mode == "full" else 2, lr_fn=lambda s: 1e-3)
    leaves = jax.tree_util.tree_leaves_with_path(state)
    np.savez(out, **{{jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}})
    print("STEPS", [h["step"] for h in history])
    """
)


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_result(tmp_path):
    script = tmp_path / "resume_child.py"
    script.write_text(RESUME_SCRIPT.format(tests=str(REPO / "tests")))
    env = dict(os.environ)
    # The three runs compile the same step: share it through the persistent compilation cache.
    env.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", JAX_PLATFORMS="cpu")
    checkpoints = tmp_path / "checkpoints"

    def run(mode: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), mode, str(checkpoints), str(tmp_path / f"{mode}.npz")],
                              capture_output=True, text=True, env=env, timeout=1200, cwd=REPO, check=False)

    killed = run("kill")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [number for number, _ in list_checkpoints(checkpoints)] == [2, 4]
    resumed = run("resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "STEPS [5, 6]" in resumed.stdout  # restarted after the last checkpoint, skipped 4 batches
    full = run("full")
    assert full.returncode == 0, full.stderr[-2000:]
    assert "STEPS [1, 2, 3, 4, 5, 6]" in full.stdout

    expected, got = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resume.npz")
    assert set(expected.files) == set(got.files)
    assert any("params" in key for key in expected.files)
    for key in expected.files:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert [number for number, _ in list_checkpoints(checkpoints)] == [4, 6]


# ------------------------------------------------------------------------------------------ loop and results


def test_train_loop_history_and_eval_results(tmp_path, mesh, caplog):
    model = TinyRegressor(nnx.Rngs(0))
    tx = optax.sgd(0.05)
    context, state = create_train_state(model, tx, mesh=mesh)
    step = make_train_step(context, regression_loss, tx)
    fixed = regression_batch(0)
    state, history = train_loop(step, state, (fixed for _ in range(40)), num_steps=30, context=context,
                                lr_fn=lambda s: 0.05)
    assert [h["step"] for h in history] == list(range(1, 31))
    assert history[-1]["loss"] < history[0]["loss"]  # fitting one batch
    assert all(h["lr"] == 0.05 and h["examples_per_sec"] > 0 for h in history)
    assert int(state.step) == 30

    path = write_eval_results(tmp_path / "out", {"eval_loss": np.float32(0.25), "acc": 0.75, "global_step": 30})
    # The reference's format: "%s = %s" per key, keys sorted.
    assert path.read_text() == "acc = 0.75\neval_loss = 0.25\nglobal_step = 30\n"
    with pytest.raises(ValueError, match="checkpoint_every needs a checkpoint_dir"):
        train_loop(step, state, [], num_steps=1, context=context, checkpoint_every=1)
