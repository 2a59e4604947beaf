"""Parity of jaxformers.optimization with pytorch_pretrained_bert 0.6.2's optimizers and schedules."""

from __future__ import annotations

import logging
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxformers import optimization as ours

torch = pytest.importorskip("torch")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pytorch_pretrained_bert import optimization as ref
    from pytorch_pretrained_bert import optimization_openai as ref_openai

jax.config.update("jax_enable_x64", False)

SCHEDULE_CLASSES = {
    # name -> (ours, reference)
    "none": (ours.ConstantLR, ref.ConstantLR),
    "warmup_constant": (ours.WarmupConstantSchedule, ref.WarmupConstantSchedule),
    "warmup_linear": (ours.WarmupLinearSchedule, ref.WarmupLinearSchedule),
    "warmup_cosine": (ours.WarmupCosineSchedule, ref.WarmupCosineSchedule),
    "warmup_cosine_hard_restarts": (
        ours.WarmupCosineWithHardRestartsSchedule,
        ref.WarmupCosineWithHardRestartsSchedule,
    ),
    "warmup_cosine_warmup_restarts": (
        ours.WarmupCosineWithWarmupRestartsSchedule,
        ref.WarmupCosineWithWarmupRestartsSchedule,
    ),
}
PAST_T_TOTAL = "gone past t_total"


@pytest.fixture(autouse=True)
def _quiet_reference():
    # The reference calls torch's deprecated add_(scalar, tensor) and logs on every step past t_total.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        logger = logging.getLogger("pytorch_pretrained_bert")
        previous = logger.level
        logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            logger.setLevel(previous)  # other tests in this worker read the reference's warnings


# ---------------------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------------------

SCHEDULE_CASES = [
    ("none", {"warmup": 0.1}),
    ("warmup_constant", {"warmup": 0.1}),
    ("warmup_constant", {"warmup": -1}),
    ("warmup_linear", {"warmup": 0.1}),
    ("warmup_linear", {"warmup": 0.0}),
    ("warmup_cosine", {"warmup": 0.1}),
    ("warmup_cosine", {"warmup": 0.05, "cycles": 1.5}),
    ("warmup_cosine_hard_restarts", {"warmup": 0.1}),
    ("warmup_cosine_hard_restarts", {"warmup": 0.1, "cycles": 3.0}),
    ("warmup_cosine_warmup_restarts", {"warmup": 0.1}),
    ("warmup_cosine_warmup_restarts", {"warmup": 0.1, "cycles": 3.0}),
    ("warmup_cosine_warmup_restarts", {"warmup": -1, "cycles": 2.0}),
]


@pytest.mark.parametrize("name,kwargs", SCHEDULE_CASES)
def test_schedule_host_path_matches_reference_exactly(name, kwargs):
    our_cls, ref_cls = SCHEDULE_CLASSES[name]
    t_total = 1000
    mine, theirs = our_cls(t_total=t_total, **kwargs), ref_cls(t_total=t_total, **kwargs)
    steps = range(0, 1300)  # well past t_total
    expected = np.array([theirs.get_lr(step, nowarn=True) for step in steps])
    got = np.array([mine.get_lr(step, nowarn=True) for step in steps])
    assert isinstance(mine.get_lr(5, nowarn=True), float)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    progress = np.linspace(0.0, 1.3, 57)
    np.testing.assert_allclose(
        [mine.get_lr_(p) for p in progress], [theirs.get_lr_(p) for p in progress], rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("name,kwargs", SCHEDULE_CASES)
def test_schedule_jit_path_matches_reference(name, kwargs):
    our_cls, ref_cls = SCHEDULE_CLASSES[name]
    # A prime t_total keeps hard-restart jumps off integer steps, where float32 and float64 could round to
    # opposite sides of the discontinuity.
    t_total = 997
    mine, theirs = our_cls(t_total=t_total, **kwargs), ref_cls(t_total=t_total, **kwargs)
    steps = np.arange(0, 1300)
    expected = np.array([theirs.get_lr(int(step), nowarn=True) for step in steps])
    got = jax.jit(mine)(jnp.asarray(steps, jnp.int32))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=2e-6)
    # One scalar at a time, as optax calls it.
    scalar_schedule = jax.jit(mine)
    for step in (0, 57, 99, 100, 501, 996, 997, 1200):
        assert abs(float(scalar_schedule(jnp.int32(step))) - theirs.get_lr(step, nowarn=True)) < 2e-6


@pytest.mark.parametrize("name", list(SCHEDULE_CLASSES))
def test_schedule_without_t_total_is_constant(name):
    schedule = SCHEDULE_CLASSES[name][0](warmup=0.1, t_total=-1)
    assert schedule.get_lr(0) == 1.0 and schedule.get_lr(10**6) == 1.0
    np.testing.assert_array_equal(np.asarray(jax.jit(schedule)(jnp.arange(5))), np.ones(5, np.float32))


def test_schedule_names_resolve():
    for name, (our_cls, _) in SCHEDULE_CLASSES.items():
        assert isinstance(ours.get_schedule(name, warmup=0.1, t_total=10), our_cls)
        assert ours.SCHEDULES[name] is our_cls
    assert ours.SCHEDULES[None] is ours.ConstantLR
    # Every name the reference knows maps to the same kind of schedule here.
    for name, ref_cls in ref.SCHEDULES.items():
        assert ours.SCHEDULES[name].__name__ == ref_cls.__name__


def _past_t_total_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "jaxformers.optimization" and PAST_T_TOTAL in r.getMessage()]


def test_past_t_total_warning_fires_once_on_host(caplog):
    schedule = ours.WarmupLinearSchedule(warmup=0.1, t_total=10)
    with caplog.at_level(logging.WARNING, logger="jaxformers.optimization"):
        for step in range(11):
            schedule.get_lr(step)
        assert not _past_t_total_records(caplog)
        for step in range(11, 30):
            schedule.get_lr(step)
    records = _past_t_total_records(caplog)
    assert len(records) == 1
    assert "WarmupLinearSchedule" in records[0].getMessage()


def test_past_t_total_warning_eager_jax_arrays_once_and_jit_never(caplog):
    schedule = ours.WarmupCosineSchedule(warmup=0.1, t_total=10)
    with caplog.at_level(logging.WARNING, logger="jaxformers.optimization"):
        for step in range(11):
            schedule(jnp.int32(step))
        assert not _past_t_total_records(caplog)
        for step in range(11, 30):
            schedule(jnp.int32(step))
        assert len(_past_t_total_records(caplog)) == 1
        # Under jit the step is a tracer: no host callback (too slow), so no warning - documented.
        fresh = ours.WarmupCosineSchedule(warmup=0.1, t_total=10)
        jax.jit(fresh)(jnp.int32(25)).block_until_ready()
        assert fresh.get_lr(25) == schedule.get_lr(25)  # the host path then warns for the fresh one
    assert len(_past_t_total_records(caplog)) == 2


def test_nowarn_and_non_decaying_schedules_stay_silent(caplog):
    with caplog.at_level(logging.WARNING, logger="jaxformers.optimization"):
        ours.WarmupLinearSchedule(warmup=0.1, t_total=10).get_lr(20, nowarn=True)
        constant = ours.WarmupConstantSchedule(warmup=0.1, t_total=10)  # fine to run past t_total
        constant.get_lr(20)
        constant(jnp.int32(20))
    assert not _past_t_total_records(caplog)


def test_schedule_is_an_optax_schedule():
    schedule = ours.WarmupLinearSchedule(warmup=0.5, t_total=4)
    tx = optax.sgd(learning_rate=lambda count: 0.1 * schedule(count))
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    seen = []
    for _ in range(4):
        updates, state = update({"w": jnp.ones(3)}, state, params)
        seen.append(-float(updates["w"][0]))
    # Multipliers at steps 0..3 for warmup 2 of 4 steps: 0, 0.5, 1, 0.5.
    np.testing.assert_allclose(seen, [0.0, 0.05, 0.1, 0.05], rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Optimizers: 30 steps against the reference fed identical gradients
# ---------------------------------------------------------------------------------------------------------

SHAPES = {
    "embeddings.word_embeddings.weight": (11, 6),
    "embeddings.LayerNorm.weight": (6,),
    "embeddings.LayerNorm.bias": (6,),
    "encoder.layer.0.attention.self.query.weight": (6, 6),
    "encoder.layer.0.attention.self.query.bias": (6,),
    "encoder.layer.0.conv.weight": (2, 3, 4),
    "pooler.scale": (),
}
T_TOTAL = 20  # 30 steps run past it, so the post-t_total branch of each schedule is exercised
# A fine-tuning-sized rate. torch's vectorized float32 sqrt is not correctly rounded (about 1 element in 6
# is 1 ulp off), so the two sides' updates differ by ~1e-7 relative; a large rate turns that into frequent
# 1-ulp rounding flips of the params, which add up over 30 steps (lr=LR reaches ~1e-6).
LR = 1e-3
WARMUP = 0.2
STEPS = 30


def _nest(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = jnp.asarray(value)
    return tree


def _flatten(tree) -> dict[str, np.ndarray]:
    return {
        ours.parameter_name(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def _initial_params(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(-1.0, 1.0, shape).astype(np.float32) for name, shape in SHAPES.items()}


def _gradients(seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed + 1)
    # Scales vary per step so clipping sometimes triggers and sometimes does not.
    return [
        {
            name: (rng.standard_normal(shape) * rng.choice([0.05, 0.3, 1.5])).astype(np.float32)
            for name, shape in SHAPES.items()
        }
        for _ in range(STEPS)
    ]


def _run_reference(make_optimizer, params, grads, decay_mask, global_clip_norm=None):
    torch_params = {name: torch.nn.Parameter(torch.tensor(value)) for name, value in params.items()}
    groups = [
        {"params": [p for n, p in torch_params.items() if decay_mask[n]]},
        {"params": [p for n, p in torch_params.items() if not decay_mask[n]], "weight_decay": 0.0},
    ]
    optimizer = make_optimizer([g for g in groups if g["params"]])
    for step_grads in grads:
        for name, p in torch_params.items():
            p.grad = torch.tensor(step_grads[name].copy())
        if global_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(torch_params.values()), global_clip_norm)
        optimizer.step()
    return {name: p.detach().numpy() for name, p in torch_params.items()}


def _run_ours(tx, params, grads):
    tree = _nest(params)
    state = tx.init(tree)
    update = jax.jit(tx.update)
    for step_grads in grads:
        updates, state = update(_nest(step_grads), state, tree)
        tree = optax.apply_updates(tree, updates)
    return _flatten(tree)


def _assert_params_close(got, expected):
    assert got.keys() == expected.keys()
    worst = max(float(np.max(np.abs(got[n] - expected[n]))) for n in got)
    assert worst < 1e-6, f"max abs difference {worst}"
    # The run must actually have moved the parameters, or the comparison proves nothing.
    assert any(np.max(np.abs(expected[n] - v)) > 1e-3 for n, v in _initial_params(0).items())


def _schedule_pair(name: str):
    """Ours selects the schedule by name; the reference gets an object (it has no restart names)."""
    ref_cls = SCHEDULE_CLASSES[name][1]
    return name, ref_cls(warmup=WARMUP, t_total=T_TOTAL)


BERT_CASES = [(name, 0.01, 1.0) for name in SCHEDULE_CLASSES] + [
    ("warmup_linear", 0.0, 1.0),
    ("warmup_linear", 0.01, -1),
    ("warmup_cosine", 0.0, -1),
]


@pytest.mark.parametrize("schedule,weight_decay,max_grad_norm", BERT_CASES)
def test_bert_adam_matches_reference(schedule, weight_decay, max_grad_norm):
    params, grads = _initial_params(0), _gradients(0)
    decay_mask = {name: "LayerNorm" not in name and "bias" not in name for name in params}
    name, ref_schedule = _schedule_pair(schedule)
    expected = _run_reference(
        lambda groups: ref.BertAdam(
            groups, lr=LR, schedule=ref_schedule, weight_decay=weight_decay, max_grad_norm=max_grad_norm
        ),
        params,
        grads,
        decay_mask,
    )
    tx = ours.BertAdam(
        LR,
        warmup=WARMUP,
        t_total=T_TOTAL,
        schedule=name,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        weight_decay_mask=ours.weight_decay_mask,
    )
    _assert_params_close(_run_ours(tx, params, grads), expected)


OPENAI_CASES = [(name, 0.01, False, 1.0) for name in SCHEDULE_CLASSES] + [
    ("warmup_linear", 0.0, False, 1.0),
    ("warmup_linear", 0.01, False, -1),
    ("warmup_linear", 0.01, True, -1),
    ("warmup_cosine", 0.0, False, -1),
]


@pytest.mark.parametrize("schedule,weight_decay,vector_l2,max_grad_norm", OPENAI_CASES)
def test_openai_adam_matches_reference(schedule, weight_decay, vector_l2, max_grad_norm):
    params, grads = _initial_params(0), _gradients(0)
    decay_all = dict.fromkeys(params, True)  # the reference's own ndim rule does the selecting here
    name, ref_schedule = _schedule_pair(schedule)
    expected = _run_reference(
        lambda groups: ref_openai.OpenAIAdam(
            groups,
            lr=LR,
            schedule=ref_schedule,
            weight_decay=weight_decay,
            vector_l2=vector_l2,
            max_grad_norm=max_grad_norm,
        ),
        params,
        grads,
        decay_all,
    )
    tx = ours.OpenAIAdam(
        LR,
        warmup=WARMUP,
        t_total=T_TOTAL,
        schedule=name,
        weight_decay=weight_decay,
        vector_l2=vector_l2,
        max_grad_norm=max_grad_norm,
    )
    _assert_params_close(_run_ours(tx, params, grads), expected)


def test_openai_adam_with_parameter_groups_matches_reference():
    # The reference GPT example: a no-decay group for biases and LayerNorm, on top of the ndim rule.
    params, grads = _initial_params(0), _gradients(0)
    decay_mask = {name: "LayerNorm" not in name and "bias" not in name for name in params}
    expected = _run_reference(
        lambda groups: ref_openai.OpenAIAdam(
            groups, lr=LR, warmup=WARMUP, t_total=T_TOTAL, weight_decay=0.01, vector_l2=True, max_grad_norm=1.0
        ),
        params,
        grads,
        decay_mask,
    )
    tx = ours.OpenAIAdam(
        LR,
        warmup=WARMUP,
        t_total=T_TOTAL,
        weight_decay=0.01,
        vector_l2=True,
        max_grad_norm=1.0,
        weight_decay_mask=ours.weight_decay_mask,
    )
    _assert_params_close(_run_ours(tx, params, grads), expected)


def test_bert_adam_global_clipping_matches_torch_clip_grad_norm():
    params, grads = _initial_params(0), _gradients(0)
    everything = dict.fromkeys(params, True)
    expected = _run_reference(
        lambda groups: ref.BertAdam(groups, lr=LR, warmup=WARMUP, t_total=T_TOTAL, max_grad_norm=-1),
        params,
        grads,
        everything,
        global_clip_norm=1.0,
    )
    tx = ours.BertAdam(LR, warmup=WARMUP, t_total=T_TOTAL, max_grad_norm=1.0, clip_mode="global")
    _assert_params_close(_run_ours(tx, params, grads), expected)


def test_schedule_object_overrides_warmup_and_t_total(caplog):
    params, grads = _initial_params(0), _gradients(0)[:10]
    schedule = ours.WarmupCosineSchedule(warmup=0.3, t_total=8)
    with caplog.at_level(logging.WARNING, logger="jaxformers.optimization"):
        with_object = _run_ours(ours.BertAdam(LR, warmup=0.1, t_total=100, schedule=schedule), params, grads)
    assert any("ignored" in r.getMessage() for r in caplog.records)
    by_name = _run_ours(ours.BertAdam(LR, warmup=0.3, t_total=8, schedule="warmup_cosine"), params, grads)
    for name in params:
        np.testing.assert_array_equal(with_object[name], by_name[name])


def test_clip_grad_norm_per_tensor_matches_torch():
    rng = np.random.default_rng(3)
    grads = {
        "a": rng.standard_normal((5, 4)).astype(np.float32),
        "b": (0.01 * rng.standard_normal(7)).astype(np.float32),
    }
    tx = ours.clip_grad_norm(1.0, per_tensor=True)
    clipped, _ = tx.update({k: jnp.asarray(v) for k, v in grads.items()}, tx.init(None))
    for name, value in grads.items():
        tensor = torch.nn.Parameter(torch.zeros(value.shape))
        tensor.grad = torch.tensor(value)
        torch.nn.utils.clip_grad_norm_(tensor, 1.0)
        np.testing.assert_allclose(np.asarray(clipped[name]), tensor.grad.numpy(), rtol=1e-6, atol=1e-7)
    assert np.linalg.norm(np.asarray(clipped["a"])) < 1.0  # "a" was clipped...
    np.testing.assert_array_equal(np.asarray(clipped["b"]), grads["b"])  # ..."b" was left as is


# ---------------------------------------------------------------------------------------------------------
# jit, nnx and the decay mask
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [ours.BertAdam, ours.OpenAIAdam])
def test_jitted_update_runs_and_matches_eager(make):
    tx = make(1e-2, warmup=0.1, t_total=10, weight_decay=0.01, max_grad_norm=1.0)
    params = {"w": jnp.full((3, 2), 0.5), "b": jnp.zeros(2)}
    grads = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
    state = tx.init(params)
    jit_updates, jit_state = jax.jit(tx.update)(grads, state, params)
    eager_updates, _ = tx.update(grads, state, params)
    for name in params:
        np.testing.assert_allclose(np.asarray(jit_updates[name]), np.asarray(eager_updates[name]), rtol=1e-6)
    # A second jitted step moves the params (the first has a warmup multiplier of 0 for BertAdam).
    updates, _ = jax.jit(tx.update)(grads, jit_state, params)
    assert float(jnp.max(jnp.abs(updates["w"]))) > 0


def test_weight_decay_mask_names():
    names = [
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.LayerNorm.weight",
        "bert.encoder.layer.0.attention.output.LayerNorm.bias",
        "bert.encoder.layer.0.attention.self.query.bias",
        "transformer.h.0.ln_1.weight",
        "transformer.ln_f.bias",
        "transformer.h.0.attn.c_attn.weight",
        "transformer.layers.0.pos_ff.layer_norm.weight",
        "transformer.r_w_bias",
        "lm_head.decoder.weight",
    ]
    tree = _nest({name: np.zeros(2, np.float32) for name in names})
    mask = _flatten(ours.weight_decay_mask(tree))
    decayed = {name for name, keep in mask.items() if bool(keep)}
    assert decayed == {
        "bert.embeddings.word_embeddings.weight",
        "transformer.h.0.attn.c_attn.weight",
        "lm_head.decoder.weight",
    }
    # The reference example scripts' substring rule, which (unlike the default) decays GPT-2's ln_* weights.
    reference_rule = _flatten(ours.weight_decay_mask(tree, no_decay=["bias", "LayerNorm.bias", "LayerNorm.weight"]))
    assert bool(reference_rule["transformer.h.0.ln_1.weight"]) is True
    assert bool(reference_rule["bert.embeddings.LayerNorm.weight"]) is False
    assert bool(reference_rule["transformer.r_w_bias"]) is False


def test_weight_decay_mask_with_nnx_optimizer():
    from flax import nnx

    class Norm(nnx.Module):
        def __init__(self):
            self.weight = nnx.Param(jnp.ones(3))
            self.bias = nnx.Param(jnp.full(3, 0.5))

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(3, 3, rngs=rngs)
            self.LayerNorm = Norm()

    model = Model(nnx.Rngs(0))
    mask = ours.weight_decay_mask(nnx.state(model, nnx.Param))
    assert bool(mask["dense"]["kernel"].get_value()) and not bool(mask["dense"]["bias"].get_value())
    assert not bool(mask["LayerNorm"]["weight"].get_value())

    before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    # Zero gradients and a constant schedule: only the decoupled decay moves anything.
    tx = ours.BertAdam(0.1, schedule=None, weight_decay=0.5, weight_decay_mask=ours.weight_decay_mask)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer):
        grads = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
        optimizer.update(model, grads)

    train_step(model, optimizer)
    after = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    np.testing.assert_allclose(after["dense"]["kernel"], before["dense"]["kernel"] * (1 - 0.1 * 0.5), rtol=1e-6)
    np.testing.assert_array_equal(after["dense"]["bias"], before["dense"]["bias"])
    np.testing.assert_array_equal(after["LayerNorm"]["weight"], before["LayerNorm"]["weight"])
    np.testing.assert_array_equal(after["LayerNorm"]["bias"], before["LayerNorm"]["bias"])


# ---------------------------------------------------------------------------------------------------------
# Invalid arguments
# ---------------------------------------------------------------------------------------------------------

INVALID_OPTIMIZER_ARGS = [
    ({"lr": -0.1}, "learning rate"),
    ({"lr": 0.1, "warmup": 1.0, "t_total": 10}, "warmup"),
    ({"lr": 0.1, "warmup": -0.5, "t_total": 10}, "warmup"),
    ({"lr": 0.1, "schedule": "warmup_linearr"}, "schedule"),
    ({"lr": 0.1, "b1": 1.0}, "b1"),
    ({"lr": 0.1, "b1": -0.1}, "b1"),
    ({"lr": 0.1, "b2": 1.0}, "b2"),
    ({"lr": 0.1, "e": -1e-8}, "epsilon"),
]


@pytest.mark.parametrize("kwargs,word", INVALID_OPTIMIZER_ARGS)
@pytest.mark.parametrize("which", ["bert", "openai"])
def test_invalid_optimizer_arguments_raise_like_reference(kwargs, word, which):
    make_ours, make_ref = {"bert": (ours.BertAdam, ref.BertAdam), "openai": (ours.OpenAIAdam, ref_openai.OpenAIAdam)}[
        which
    ]
    with pytest.raises(ValueError):
        make_ref([torch.nn.Parameter(torch.zeros(2))], **kwargs)
    kwargs = dict(kwargs)  # the parametrized dict is shared with the other optimizer's case
    lr = kwargs.pop("lr")
    with pytest.raises(ValueError, match=word):
        make_ours(lr, **kwargs)


@pytest.mark.parametrize(
    "make,word",
    [
        (lambda: ours.BertAdam(0.1, clip_mode="layerwise"), "clip_mode"),
        (lambda: ours.WarmupLinearSchedule(warmup=0.1, t_total=0), "t_total"),
        (lambda: ours.WarmupCosineWithHardRestartsSchedule(warmup=0.1, t_total=10, cycles=0.5), "cycles"),
        (lambda: ours.WarmupCosineWithWarmupRestartsSchedule(warmup=0.4, t_total=10, cycles=3), "cycles"),
        (lambda: ours.get_schedule(3.5), "schedule"),
    ],
)
def test_other_invalid_arguments_raise(make, word):
    with pytest.raises(ValueError, match=word):
        make()
