"""Transformer-XL parity against pytorch_transformers 1.2.0 (0.6.2's Transformer-XL does not run on torch 2: it
indexes with byte masks), on tiny random configs, fp32 on CPU: outputs across segments with memory, losses,
gradients, the sampled softmax, the jitted evaluation loops and the state-dict round trip."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from pytorch_transformers import modeling_transfo_xl as ref
from pytorch_transformers import modeling_transfo_xl_utilities as ref_utils

from jaxformers import evaluation
from jaxformers.models import transfo_xl as jx
from parity_utils import assert_close, jax_grads_as_torch, torch_grads, torch_state_numpy

N_TOKEN = 60
BATCH = 3
SEGMENT_LENGTHS = (4, 4, 3)  # three consecutive segments, the last one shorter
BASE = dict(d_model=32, n_head=4, d_head=8, d_inner=37, n_layer=2, tgt_len=4, dropout=0.0, dropatt=0.0)

CONFIGS = {
    # adaptive input/softmax with div_val > 1: per-cluster tables and projections, projections tied but the first
    "div2": dict(cutoffs=[10, 30], d_embed=32, div_val=2, mem_len=5, same_length=True, clamp_len=3),
    # div_val == 1 with d_embed != d_model (one projection shared by every cluster), shared r_* biases
    "div1_proj_shared_r": dict(cutoffs=[20, 40], d_embed=16, div_val=1, mem_len=6, same_length=False, clamp_len=0,
                               untie_r=False),
    # plain softmax (no cutoffs), pre-LayerNorm, memory shorter than a segment
    "softmax_prelnorm": dict(cutoffs=[], d_embed=32, div_val=1, mem_len=2, same_length=True, clamp_len=0,
                             pre_lnorm=True),
    # nothing tied: own output tables and projections
    "untied": dict(cutoffs=[15], d_embed=24, div_val=2, mem_len=3, same_length=False, clamp_len=2,
                   tie_weight=False, proj_share_all_but_first=False),
    # no memory at all
    "no_memory": dict(cutoffs=[10, 30], d_embed=32, div_val=2, mem_len=0, same_length=False, clamp_len=0),
}


def t(x):
    return torch.tensor(np.asarray(x))


def build_pair(name: str, cls: str = "TransfoXLLMHeadModel", seed: int = 0, **overrides):
    fields = {**BASE, **CONFIGS[name], **overrides}
    torch.manual_seed(seed)
    reference = getattr(ref, cls)(ref.TransfoXLConfig(N_TOKEN, **fields)).eval()
    # pytorch_transformers 1.2.0 uses torch.nn.LayerNorm's epsilon.
    ours = getattr(jx, cls)(jx.TransfoXLConfig(N_TOKEN, layer_norm_epsilon=1e-5, **fields))
    ours.load_state_dict(torch_state_numpy(reference), strict=True)
    return reference, ours


def segments(seed: int = 0, lengths=SEGMENT_LENGTHS):
    rng = np.random.RandomState(seed)
    stream = rng.randint(0, N_TOKEN, (BATCH, sum(lengths) + 1))
    out, start = [], 0
    for length in lengths:
        out.append((stream[:, start:start + length], stream[:, start + 1:start + 1 + length]))
        start += length
    return out


def reference_order(target: np.ndarray, cutoffs: list[int]) -> np.ndarray:
    """The reference returns NLLs grouped by cluster (stable within a cluster): that permutation of tokens."""
    clusters = np.searchsorted(np.asarray(cutoffs), target.reshape(-1), side="right")
    return np.argsort(clusters, kind="stable")


def assert_mems_close(got, expected, what):
    if expected is None:
        assert got is None, what
        return
    assert len(got) == len(expected)
    for index, (g, e) in enumerate(zip(got, expected)):
        assert tuple(g.shape) == tuple(e.shape), f"{what} mems[{index}] shape"
        assert_close(g, e.numpy(), 1e-5, f"{what} mems[{index}]")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_lm_head_matches_reference_over_three_segments(name):
    reference, ours = build_pair(name)
    cutoffs = CONFIGS[name]["cutoffs"]
    ref_mems = got_mems = None
    for index, (input_ids, target) in enumerate(segments()):
        with torch.no_grad():
            log_probs, next_ref_mems = reference(t(input_ids), mems=ref_mems)
            nll_grouped, _, _ = reference(t(input_ids), labels=t(target), mems=ref_mems)
        got_log_probs, next_got_mems = ours(input_ids, mems=got_mems)
        got_nll, got_nll_mems = ours(input_ids, target, mems=got_mems)
        assert got_log_probs.shape == (BATCH, input_ids.shape[1], N_TOKEN)
        assert_close(got_log_probs, log_probs.numpy(), 1e-5, f"{name} segment {index} log-probs")
        # Ours is in token order: it equals -log_prob[target], and the reference's output once regrouped.
        picked = -np.take_along_axis(log_probs.numpy(), target[..., None], axis=-1)[..., 0]
        assert got_nll.shape == target.shape
        assert_close(got_nll, picked, 1e-5, f"{name} segment {index} nll vs -log_prob[target]")
        order = reference_order(target, cutoffs)
        assert_close(np.asarray(got_nll).reshape(-1)[order], nll_grouped.numpy().reshape(-1), 1e-5,
                     f"{name} segment {index} nll vs reference")
        assert_mems_close(next_got_mems, next_ref_mems, f"{name} segment {index}")
        assert_mems_close(got_nll_mems, next_ref_mems, f"{name} segment {index} (with target)")
        ref_mems, got_mems = next_ref_mems, next_got_mems


@pytest.mark.parametrize("overrides", [dict(), dict(ext_len=2), dict(same_length=False, clamp_len=1, mem_len=7)])
def test_base_model_hidden_states_and_memory_layout(overrides):
    reference, ours = build_pair("div2", "TransfoXLModel", seed=3, **overrides)
    mem_len = overrides.get("mem_len", CONFIGS["div2"]["mem_len"])
    ref_mems = got_mems = None
    for index, (input_ids, _) in enumerate(segments(4)):
        with torch.no_grad():
            hidden, next_ref_mems = reference(t(input_ids), mems=ref_mems)
        got_hidden, next_got_mems = ours(input_ids, mems=got_mems)
        assert got_hidden.shape == (BATCH, input_ids.shape[1], BASE["d_model"])
        assert_close(got_hidden, hidden.numpy(), 1e-5, f"segment {index} hidden")
        # One memory per layer, time-major; [0] is the embedding output.
        assert len(next_got_mems) == BASE["n_layer"]
        assert next_got_mems[0].shape[1:] == (BATCH, BASE["d_model"])
        assert next_got_mems[0].shape[0] <= mem_len
        assert_mems_close(next_got_mems, next_ref_mems, f"segment {index}")
        ref_mems, got_mems = next_ref_mems, next_got_mems
    if overrides.get("ext_len", 0) == 0:  # then the memory ends with the last segment
        embedded = ours.word_emb(segments(4)[-1][0])
        assert_close(jnp.swapaxes(got_mems[0], 0, 1)[:, -embedded.shape[1]:], embedded, 1e-6, "mems[0] = embeddings")


def test_first_call_attends_to_zero_memories_and_reset_length():
    reference, ours = build_pair("div2", "TransfoXLModel", seed=5)
    input_ids = segments(6)[0][0]
    zeros = ours.init_mems(BATCH)
    assert [m.shape for m in zeros] == [(CONFIGS["div2"]["mem_len"], BATCH, BASE["d_model"])] * BASE["n_layer"]
    assert_close(ours(input_ids)[0], ours(input_ids, mems=zeros)[0], 0.0, "mems=None is zero memories")
    reference.reset_length(4, 0, 2)
    ours.reset_length(4, 0, 2)
    assert ours.mem_len == 2 and ours.tgt_len == 4 and ours.ext_len == 0
    with torch.no_grad():
        hidden, mems = reference(t(input_ids))
    got_hidden, got_mems = ours(input_ids)
    assert_close(got_hidden, hidden.numpy(), 1e-5, "after reset_length")
    assert_mems_close(got_mems, mems, "after reset_length")


def test_ext_len_inputs_score_only_the_target_length():
    """Inputs may carry ext_len context tokens before the scored ones (tgt_len = target.shape[1])."""
    _, ours = build_pair("div2", ext_len=2)
    input_ids = np.random.RandomState(7).randint(0, N_TOKEN, (BATCH, 6))
    target = np.random.RandomState(8).randint(0, N_TOKEN, (BATCH, 4))
    log_probs, _ = ours(input_ids)
    nll, _ = ours(input_ids, target)
    assert nll.shape == (BATCH, 4)
    expected = -np.take_along_axis(np.asarray(log_probs)[:, -4:], target[..., None], axis=-1)[..., 0]
    assert_close(nll, expected, 1e-5, "nll of the last tgt_len positions")


@pytest.mark.parametrize("name", ["div2", "div1_proj_shared_r"])
def test_gradients_match_reference(name):
    reference, ours = build_pair(name, seed=9)
    (ids_a, target_a), (ids_b, target_b), _ = segments(10)
    with torch.no_grad():
        _, _, mems = reference(t(ids_a), labels=t(target_a))
    loss = reference(t(ids_b), labels=t(target_b), mems=mems)[0].mean()  # mean is order-independent
    loss.backward()
    expected = torch_grads(reference)
    _, got_mems = ours(ids_a, target_a)
    got = jax_grads_as_torch(ours, lambda model: model(ids_b, target_b, mems=got_mems)[0].mean())
    assert set(expected) <= set(got), set(expected) - set(got)
    for key, grad in expected.items():
        assert_close(got[key], grad.reshape(got[key].shape), 1e-5, f"grad {key}")


# ---------------------------------------------------------------------------------------- state dicts, config


@pytest.mark.parametrize("name", ["div2", "div1_proj_shared_r", "untied"])
def test_torch_state_dict_loads_strictly_into_reference(name):
    fields = {**BASE, **CONFIGS[name]}
    ours = jx.TransfoXLLMHeadModel(jx.TransfoXLConfig(N_TOKEN, layer_norm_epsilon=1e-5, **fields), seed=11)
    exported = ours.torch_state_dict()
    reference = ref.TransfoXLLMHeadModel(ref.TransfoXLConfig(N_TOKEN, **fields)).eval()
    expected_keys = set(reference.state_dict())
    assert set(exported) == expected_keys
    reference.load_state_dict({k: torch.tensor(v) for k, v in exported.items()}, strict=True)
    reference.tie_weights()
    for key, value in reference.state_dict().items():
        assert np.array_equal(value.numpy(), exported[key]), key
    input_ids, target = segments(12)[0]
    with torch.no_grad():
        log_probs, _ = reference(t(input_ids))
    assert_close(ours(input_ids)[0], log_probs.numpy(), 1e-5, "outputs after export")


def test_base_and_head_weights_load_into_each_other():
    reference, head = build_pair("div2")
    base = jx.TransfoXLModel(head.config)
    report = base.load_state_dict(torch_state_numpy(reference))
    assert report.missing_keys == []
    assert all(key.startswith("crit.") for key in report.unexpected_keys)
    input_ids = segments(13)[0][0]
    assert_close(base(input_ids)[0], head.transformer(input_ids)[0], 0.0, "base from head weights")


def test_config_fields_aliases_and_layer_norm_epsilon(tmp_path):
    config = jx.TransfoXLConfig(N_TOKEN, cutoffs=[10, 20], proj_share_all_but_first=False)
    assert config.n_token == N_TOKEN == config.vocab_size
    assert config.tie_projs == [False, False, False]
    assert config.layer_norm_epsilon == 1e-12  # 0.6.x / original TensorFlow value
    # pytorch_transformers' own JSON (no epsilon key, library markers) -> torch's 1e-5
    v1 = tmp_path / "v1.json"
    v1.write_text(ref.TransfoXLConfig(N_TOKEN, **BASE, cutoffs=[10, 30]).to_json_string())
    from_v1 = jx.TransfoXLConfig.from_json_file(v1)
    assert from_v1.layer_norm_epsilon == 1e-5
    assert from_v1.cutoffs == [10, 30] and from_v1.tie_projs == [False, True, True]
    # a 0.6.x JSON (plain fields) keeps 1e-12; an explicit key always wins; HF's vocab_size is an alias
    v0 = tmp_path / "v0.json"
    v0.write_text(json.dumps({"n_token": 77, "cutoffs": [5], "d_model": 16}))
    from_v0 = jx.TransfoXLConfig(str(v0))
    assert from_v0.layer_norm_epsilon == 1e-12 and from_v0.n_token == 77 and from_v0.tie_projs == [False, True]
    hf = jx.TransfoXLConfig.from_dict({"vocab_size": 99, "layer_norm_epsilon": 1e-7})
    assert hf.n_token == 99 and hf.layer_norm_epsilon == 1e-7
    # round trip
    config.to_json_file(tmp_path / "ours.json")
    assert jx.TransfoXLConfig.from_json_file(tmp_path / "ours.json") == config


@pytest.mark.parametrize("attn_type", [1, 2, 3])
def test_other_attention_types_are_rejected(attn_type):
    with pytest.raises(ValueError, match="attn_type"):
        jx.TransfoXLModel(jx.TransfoXLConfig(N_TOKEN, **BASE, cutoffs=[10], attn_type=attn_type))


def test_bad_inputs_raise_clear_errors():
    _, ours = build_pair("div2")
    with pytest.raises(ValueError, match="token id 60"):
        ours(np.full((1, 3), N_TOKEN))
    with pytest.raises(ValueError, match=r"mems\[0\]"):
        ours(np.zeros((2, 3), np.int32), mems=[jnp.zeros((5, 3, 32))] * 2)
    with pytest.raises(ValueError, match="one per layer"):
        ours(np.zeros((2, 3), np.int32), mems=[jnp.zeros((5, 2, 32))])
    with pytest.raises(ValueError, match="cutoffs"):
        jx.TransfoXLModel(jx.TransfoXLConfig(N_TOKEN, **BASE, cutoffs=[30, 10]))


def test_full_size_wt103_config_shapes_without_allocating():
    config = jx.TransfoXLConfig()  # the transfo-xl-wt103 architecture
    abstract = nnx.eval_shape(lambda: jx.TransfoXLLMHeadModel(config))
    shapes = {".".join(map(str, path)): tuple(p.shape)
              for path, p in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
    assert shapes["transformer.word_emb.emb_layers.0.weight"] == (20000, 1024)
    assert shapes["transformer.word_emb.emb_layers.3.weight"] == (267735 - 200000, 16)
    assert shapes["transformer.word_emb.emb_projs.3"] == (1024, 16)
    assert shapes["transformer.layers.17.dec_attn.qkv_net.weight"] == (1024, 3 * 16 * 64)
    assert shapes["crit.cluster_weight"] == (3, 1024)
    assert shapes["crit.out_projs.0"] == (1024, 1024)
    assert "crit.out_projs.1" not in shapes and "crit.out_layers.0.weight" not in shapes  # tied
    total = sum(int(np.prod(s)) for s in shapes.values())
    assert 284_000_000 < total < 286_000_000, total  # the published 285M parameters
    ids = jax.ShapeDtypeStruct((2, 128), jnp.int32)
    log_probs, mems = nnx.eval_shape(lambda model, x: model(x), abstract, ids)
    assert log_probs.shape == (2, 128, 267735)
    assert len(mems) == 18 and mems[0].shape == (1600, 2, 1024)


# -------------------------------------------------------------------------------------------- training mode


def test_dropout_needs_a_key_and_is_reproducible():
    fields = {**BASE, **CONFIGS["div2"], "dropout": 0.3, "dropatt": 0.2}
    ours = jx.TransfoXLLMHeadModel(jx.TransfoXLConfig(N_TOKEN, **fields))
    input_ids, target = segments(14)[0]
    evaluation = ours(input_ids, target)[0]
    ours.train()
    with pytest.raises(ValueError, match="dropout_rng"):
        ours(input_ids, target)
    first = ours(input_ids, target, dropout_rng=jax.random.key(0))[0]
    again = ours(input_ids, target, dropout_rng=jax.random.key(0))[0]
    other = ours(input_ids, target, dropout_rng=jax.random.key(1))[0]
    assert np.array_equal(first, again)
    assert not np.allclose(first, other) and not np.allclose(first, evaluation)
    ours.eval()
    assert_close(ours(input_ids, target)[0], evaluation, 0.0, "eval again")


# ------------------------------------------------------------------------------------------ sampled softmax


def test_log_uniform_sampler_matches_reference_probabilities():
    ours = jx.LogUniformSampler(N_TOKEN, 8)
    reference = ref_utils.LogUniformSampler(N_TOKEN, 8)
    assert_close(ours.dist, reference.dist.numpy(), 1e-7, "dist")
    # dist is a difference of float32 logs (1-ulp log differences between numpy and torch are amplified by
    # the cancellation), and log_q ~ log(dist) for rare ids: a relative tolerance on dist, absolute on log_q.
    np.testing.assert_allclose(ours.dist, reference.dist.numpy(), rtol=5e-5)
    assert_close(ours.log_q, reference.log_q.numpy(), 5e-5, "log_q")
    assert abs(float(ours.dist.sum()) - 1.0) < 1e-5
    draws = np.asarray(jax.vmap(ours.sample)(jax.random.split(jax.random.key(0), 2000))).reshape(-1)
    assert draws.shape == (2000 * 16,) and draws.min() >= 0 and draws.max() < N_TOKEN
    frequencies = np.bincount(draws, minlength=N_TOKEN) / draws.size
    # 32000 draws: the five most likely ids within 4 standard deviations of their probability
    for token in range(5):
        p = ours.dist[token]
        assert abs(frequencies[token] - p) < 4 * np.sqrt(p * (1 - p) / draws.size), token


class _FixedSampler(ref_utils.LogUniformSampler):
    """The reference's sampler with injected negatives (its own draw is torch.multinomial + unique)."""

    def __init__(self, range_max, n_sample, negatives):
        super().__init__(range_max, n_sample)
        self.negatives = torch.tensor(negatives)

    def sample(self, labels):
        return self.log_q[labels], self.log_q[self.negatives], self.negatives


@pytest.mark.parametrize("tie_weight", [True, False])
def test_sampled_softmax_loss_matches_reference_given_the_same_samples(tie_weight):
    n_sample = 6
    fields = {**BASE, **CONFIGS["div1_proj_shared_r"], "sample_softmax": n_sample, "tie_weight": tie_weight}
    torch.manual_seed(15)
    reference_base = ref.TransfoXLModel(ref.TransfoXLConfig(N_TOKEN, **fields)).eval()
    ours = jx.TransfoXLLMHeadModel(jx.TransfoXLConfig(N_TOKEN, layer_norm_epsilon=1e-5, **fields))
    rng = np.random.RandomState(16)
    bias = rng.randn(N_TOKEN).astype(np.float32)
    state = {f"transformer.{k}": v for k, v in torch_state_numpy(reference_base).items()}
    state["out_layer.bias"] = bias
    if tie_weight:
        embed = reference_base.word_emb  # what the reference passes to sample_logits
    else:
        # Scaled like trained output weights: unit-variance rows made losses of ~30 nats, where 1e-5 is below
        # fp32 rounding and the comparison depended on the BLAS build.
        out_weight = (0.1 * rng.randn(N_TOKEN, BASE["d_model"])).astype(np.float32)
        state["out_layer.weight"] = out_weight
        embed = torch.nn.Embedding.from_pretrained(torch.tensor(out_weight))
    ours.load_state_dict(state, strict=True)

    input_ids, target = segments(17)[0]
    target[0, 0] = 7  # collides with a negative below: the "hit" mask must remove it
    negatives = np.array([0, 1, 3, 7, 12, 40], np.int64)
    with torch.no_grad():
        hidden, _ = reference_base(t(input_ids))
        logits = ref_utils.sample_logits(embed, torch.tensor(bias), t(target), hidden,
                                         _FixedSampler(N_TOKEN, n_sample, negatives))
        expected = -torch.log_softmax(logits, -1)[:, :, 0]
    ours.train()
    got, _ = ours(input_ids, target, dropout_rng=jax.random.key(0), negative_samples=negatives)
    assert got.shape == target.shape
    assert_close(got, expected.numpy(), 1e-5, "sampled softmax loss")
    # Repeated draws (we keep 2 * n_sample draws, fixed shape) give the reference's unique() result.
    repeated = np.array([12, 0, 1, 12, 3, 7, 0, 40, 40, 1, 3, 3])
    got_repeated, _ = ours(input_ids, target, dropout_rng=jax.random.key(0), negative_samples=repeated)
    assert_close(got_repeated, expected.numpy(), 1e-5, "with repeated negatives")
    # Sampling itself runs under jit with a key, and the loss is finite and positive.
    drawn = jax.jit(lambda ids, tgt: ours(ids, tgt, dropout_rng=jax.random.key(3))[0])(input_ids, target)
    assert drawn.shape == target.shape and bool(jnp.all(jnp.isfinite(drawn))) and bool(jnp.all(drawn > 0))
    # Evaluation scores with the full softmax over the same output weights.
    ours.eval()
    log_probs, _ = ours(input_ids)
    with torch.no_grad():
        weights = embed(torch.arange(N_TOKEN))
        full = torch.log_softmax(hidden @ weights.T + torch.tensor(bias), -1)
    assert_close(log_probs, full.numpy(), 1e-5, "evaluation full softmax")


# --------------------------------------------------------------------------------------- jitted evaluation


@pytest.mark.parametrize("name", ["div2", "div1_proj_shared_r"])
def test_jitted_evaluation_loops_match_reference(name):
    reference, ours = build_pair(name, seed=18)
    lengths = (4, 4, 4, 4)
    data = segments(19, lengths)
    expected, ref_mems = [], None
    for input_ids, target in data:
        with torch.no_grad():
            log_probs, ref_mems = reference(t(input_ids), mems=ref_mems)
        expected.append(-np.take_along_axis(log_probs.numpy(), target[..., None], axis=-1)[..., 0])

    step = evaluation.make_eval_step(ours)
    mems = None
    for index, (input_ids, target) in enumerate(data):
        nll, mems = step(input_ids, target, mems)
        assert_close(nll, expected[index], 1e-5, f"jitted step segment {index}")
    assert_mems_close(mems, ref_mems, "jitted step final")

    stacked_ids = np.stack([ids for ids, _ in data])
    stacked_target = np.stack([tgt for _, tgt in data])
    nll, final_mems = evaluation.evaluate_segments(ours, stacked_ids, stacked_target)
    assert nll.shape == (len(lengths), BATCH, 4)
    assert_close(nll, np.stack(expected), 1e-5, "lax.scan segments")
    assert_mems_close(final_mems, ref_mems, "lax.scan final")
