"""GPT-2 parity against pytorch_pretrained_bert 0.6.2 (outputs, past/presents, losses, gradients) and
pytorch_transformers 1.2.0 (attentions and head_mask), plus the static KV cache, on tiny random configs (fp32, CPU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from pytorch_pretrained_bert import modeling_gpt2 as ppg

from jaxformers.modeling_utils import param_specs
from jaxformers.models import gpt2 as jxg
from parity_utils import assert_close, jax_grads_as_torch, torch_grads, torch_state_numpy

TINY = dict(n_positions=40, n_ctx=40, n_embd=32, n_layer=2, n_head=4)
VOCAB = 99
BATCH, SEQ = 3, 9


def t(x):
    return torch.tensor(np.asarray(x))


def build_pair(name: str, seed: int = 0, **jax_kwargs):
    torch.manual_seed(seed)
    reference = getattr(ppg, name)(ppg.GPT2Config(VOCAB, **TINY)).eval()
    config = jxg.GPT2Config(VOCAB, **TINY, **jax_kwargs.pop("config", {}))
    ours = getattr(jxg, name)(config, **jax_kwargs)
    ours.load_state_dict(torch_state_numpy(reference), strict=True)
    return reference, ours


def random_ids(seed: int, shape) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, VOCAB, shape)


def assert_presents_close(got, expected, what: str):
    assert len(got) == len(expected) == TINY["n_layer"]
    for index, (g, e) in enumerate(zip(got, expected)):
        assert g.shape == tuple(e.shape), f"{what} layer {index}"
        assert_close(g, e.numpy(), 1e-5, f"{what} layer {index}")


# -------------------------------------------------------------------------------------------- outputs and past


def test_base_model_outputs_and_presents_match_reference():
    reference, ours = build_pair("GPT2Model")
    # [d_1, d_2, seq] inputs with token types and explicit positions
    input_ids = random_ids(1, (2, 2, SEQ))
    token_type_ids = random_ids(2, (2, 2, SEQ))
    position_ids = np.broadcast_to(np.arange(3, 3 + SEQ), (2, 2, SEQ))
    with torch.no_grad():
        expected_hidden, expected_presents = reference(t(input_ids), t(position_ids), t(token_type_ids))
    hidden, presents = ours(input_ids, position_ids, token_type_ids)
    assert hidden.shape == (2, 2, SEQ, TINY["n_embd"])
    assert_close(hidden, expected_hidden.numpy(), 1e-5, "hidden states")
    assert presents[0].shape == (2, 4, TINY["n_head"], SEQ, TINY["n_embd"] // TINY["n_head"])
    assert_presents_close(presents, expected_presents, "presents")
    with torch.no_grad():
        expected_default = reference(t(input_ids[0]))[0]
    assert_close(ours(input_ids[0])[0], expected_default.numpy(), 1e-5, "default positions, no token types")


@pytest.mark.parametrize("name", ["GPT2LMHeadModel", "GPT2DoubleHeadsModel"])
def test_past_continues_exactly_like_the_reference(name):
    reference, ours = build_pair(name, seed=1)
    double = name == "GPT2DoubleHeadsModel"
    shape = (2, 2, SEQ) if double else (BATCH, SEQ)
    input_ids = random_ids(3, shape)
    mc_token_ids = np.array([[SEQ - 1, 2], [0, 4]])
    split = 5

    def mc_args(length):  # classification tokens inside each chunk
        return [np.minimum(mc_token_ids, length - 1)] if double else []

    with torch.no_grad():
        full = reference(t(input_ids), *map(t, mc_args(SEQ)))
        first = reference(t(input_ids[..., :split]), *map(t, mc_args(split)))
        second = reference(t(input_ids[..., split:]), *map(t, mc_args(SEQ - split)), past=first[-1])
    ours_full = ours(input_ids, *mc_args(SEQ))
    assert_close(ours_full[0], full[0].numpy(), 1e-5, "full logits")
    assert_presents_close(ours_full[-1], full[-1], "full presents")
    ours_first = ours(input_ids[..., :split], *mc_args(split))
    assert_presents_close(ours_first[-1], first[-1], "prefix presents")
    ours_second = ours(input_ids[..., split:], *mc_args(SEQ - split), past=ours_first[-1])
    for index in range(len(second) - 1):
        assert_close(ours_second[index], second[index].numpy(), 1e-5, f"continued output {index}")
    assert_presents_close(ours_second[-1], second[-1], "continued presents")
    # the continuation equals the tail of the full pass
    assert_close(ours_second[0], ours_full[0][..., split:, :], 1e-5, "continuation vs full pass")


def test_token_by_token_with_past_equals_full_sequence():
    _, ours = build_pair("GPT2LMHeadModel", seed=2)
    input_ids = random_ids(4, (BATCH, SEQ))
    full_logits, _ = ours(input_ids)
    past, steps = None, []
    for position in range(SEQ):
        logits, past = ours(input_ids[:, position:position + 1], past=past)
        steps.append(logits)
    assert past[0].shape[-2] == SEQ
    assert_close(jnp.concatenate(steps, axis=1), full_logits, 1e-5, "token-by-token logits")
    with pytest.raises(ValueError, match="n_positions=40"):
        ours(random_ids(5, (1, 2)), past=[np.zeros((2, 1, 4, 39, 8), np.float32)] * 2)
    with pytest.raises(ValueError, match="past holds 1 layers"):
        ours(input_ids, past=past[:1])


# ------------------------------------------------------------------------------------------------------- losses


def test_lm_head_loss_matches_reference():
    reference, ours = build_pair("GPT2LMHeadModel", seed=3)
    input_ids = random_ids(6, (BATCH, SEQ))
    labels = np.where(np.random.RandomState(7).rand(BATCH, SEQ) < 0.3, -1, random_ids(8, (BATCH, SEQ)))
    with torch.no_grad():
        expected = reference(t(input_ids), lm_labels=t(labels))
    got = ours(input_ids, lm_labels=labels)
    assert got.shape == ()
    assert_close(got, expected.numpy(), 1e-5, "lm loss")


def test_double_heads_losses_shift_along_the_sequence():
    """0.6.2 shifts the LM logits along the choices axis of its 4-D logits; we shift along the sequence as
    documented (the pytorch_transformers 1.2.0 behaviour), and the two results differ."""
    reference, ours = build_pair("GPT2DoubleHeadsModel", seed=4)
    input_ids = random_ids(9, (2, 3, SEQ))
    mc_token_ids = np.array([[SEQ - 1, 3, 5], [2, SEQ - 1, 0]])
    lm_labels = np.where(np.random.RandomState(10).rand(2, 3, SEQ) < 0.3, -1, random_ids(11, (2, 3, SEQ)))
    mc_labels = np.array([2, 0])
    with torch.no_grad():
        lm_logits, mc_logits, _ = reference(t(input_ids), t(mc_token_ids))
        buggy_lm_loss, expected_mc_loss = reference(t(input_ids), t(mc_token_ids), t(lm_labels), t(mc_labels))
        expected_lm_loss = torch.nn.functional.cross_entropy(
            lm_logits[..., :-1, :].reshape(-1, VOCAB), t(lm_labels)[..., 1:].reshape(-1), ignore_index=-1
        )
    got_logits, got_mc_logits, _ = ours(input_ids, mc_token_ids)
    assert_close(got_logits, lm_logits.numpy(), 1e-5, "lm logits")
    assert_close(got_mc_logits, mc_logits.numpy(), 1e-5, "mc logits")
    lm_loss, mc_loss = ours(input_ids, mc_token_ids, lm_labels, mc_labels)
    assert_close(lm_loss, expected_lm_loss.numpy(), 1e-5, "lm loss shifted along the sequence")
    assert_close(mc_loss, expected_mc_loss.numpy(), 1e-5, "mc loss")
    assert abs(float(lm_loss) - float(buggy_lm_loss)) > 1e-3
    # the documented keyword spellings, and one loss at a time
    (only_mc,) = ours(input_ids, multiple_choice_token_ids=mc_token_ids, multiple_choice_labels=mc_labels)
    assert_close(only_mc, expected_mc_loss.numpy(), 1e-5, "mc loss via multiple_choice_labels")
    with pytest.raises(ValueError, match="not both"):
        ours(input_ids, mc_token_ids, multiple_choice_token_ids=mc_token_ids)
    with pytest.raises(ValueError, match="mc_token_ids value 9 is out of range"):
        ours(input_ids, np.array([[SEQ, 0, 0], [0, 0, 0]]))


@pytest.mark.parametrize("name", ["GPT2LMHeadModel", "GPT2DoubleHeadsModel"])
def test_gradients_match_reference(name):
    reference, ours = build_pair(name, seed=5)
    if name == "GPT2LMHeadModel":
        input_ids = random_ids(12, (BATCH, SEQ))
        labels = random_ids(13, (BATCH, SEQ))
        reference(t(input_ids), lm_labels=t(labels)).backward()
        got = jax_grads_as_torch(ours, lambda model: model(input_ids, lm_labels=labels))
    else:
        input_ids = random_ids(14, (2, 2, SEQ))
        mc_token_ids = np.array([[SEQ - 1, 4], [6, SEQ - 1]])
        lm_labels, mc_labels = random_ids(15, (2, 2, SEQ)), np.array([1, 0])
        lm_logits, mc_logits, _ = reference(t(input_ids), t(mc_token_ids))
        loss = (torch.nn.functional.cross_entropy(lm_logits[..., :-1, :].reshape(-1, VOCAB),
                                                  t(lm_labels)[..., 1:].reshape(-1), ignore_index=-1)
                + torch.nn.functional.cross_entropy(mc_logits, t(mc_labels)))
        loss.backward()
        got = jax_grads_as_torch(ours, lambda model: sum(model(input_ids, mc_token_ids, lm_labels, mc_labels)))
    expected = torch_grads(reference)
    assert set(expected) <= set(got)
    for key, grad in expected.items():
        assert_close(got[key], grad, 1e-5, f"grad {key}")


# ---------------------------------------------------------------------------------- attentions and head masks


@pytest.mark.parametrize("mask_rank", [0, 1, 2])
def test_attentions_and_head_mask_match_pytorch_transformers(mask_rank):
    from pytorch_transformers import modeling_gpt2 as ptg

    torch.manual_seed(6)
    reference = ptg.GPT2Model(ptg.GPT2Config(VOCAB, output_attentions=True, **TINY)).eval()
    ours = jxg.GPT2Model(jxg.GPT2Config(VOCAB, **TINY), output_attentions=True)
    ours.load_state_dict(torch_state_numpy(reference), strict=True)
    plain = jxg.GPT2Model(jxg.GPT2Config(VOCAB, **TINY))
    plain.load_state_dict(torch_state_numpy(reference), strict=True)
    heads, layers = TINY["n_head"], TINY["n_layer"]
    head_mask = None
    if mask_rank == 1:
        head_mask = np.array([1.0, 0.0, 1.0, 0.5], np.float32)
    elif mask_rank == 2:
        head_mask = np.random.RandomState(16).rand(layers, heads).astype(np.float32)
        head_mask[1, 3] = 0.0
    input_ids = random_ids(17, (BATCH, SEQ))
    split = 4
    with torch.no_grad():
        hm = None if head_mask is None else t(head_mask)
        _, first_presents, _ = reference(t(input_ids[:, :split]), head_mask=hm)
        hidden, presents, attentions = reference(t(input_ids[:, split:]), past=first_presents, head_mask=hm)
    got_first = ours(input_ids[:, :split], head_mask=head_mask)
    got_attentions, got_hidden, got_presents = ours(input_ids[:, split:], past=got_first[-1], head_mask=head_mask)
    assert len(got_attentions) == layers
    for index, (g, e) in enumerate(zip(got_attentions, attentions)):
        assert g.shape == (BATCH, heads, SEQ - split, SEQ)
        assert_close(g, e.numpy(), 1e-6, f"attention probs layer {index}")
    assert_close(got_hidden, hidden.numpy(), 1e-5, "hidden with past and head mask")
    assert_presents_close(got_presents, presents, "presents with head mask")
    # the fused path (no probabilities returned) agrees
    assert_close(plain(input_ids[:, split:], past=got_first[-1], head_mask=head_mask)[0], hidden.numpy(), 1e-5,
                 "fused path")
    if head_mask is not None:
        layer, head = (0, 1) if mask_rank == 1 else (1, 3)
        assert float(jnp.abs(got_attentions[layer][:, head]).max()) == 0.0


def test_attentions_keep_leading_input_dimensions():
    _, ours = build_pair("GPT2DoubleHeadsModel", seed=7, output_attentions=True)
    input_ids = random_ids(18, (2, 3, SEQ))
    attentions, lm_logits, mc_logits, presents = ours(input_ids, np.zeros((2, 3), np.int64))
    assert attentions[0].shape == (2, 3, TINY["n_head"], SEQ, SEQ)
    assert lm_logits.shape == (2, 3, SEQ, VOCAB) and mc_logits.shape == (2, 3)
    assert_close(attentions[0].sum(-1), np.ones((2, 3, TINY["n_head"], SEQ)), 1e-5, "rows sum to one")
    assert float(jnp.abs(jnp.triu(attentions[1], 1)).max()) == 0.0  # causal


# ------------------------------------------------------------------------------------------------ the KV cache


def jitted_step(model):
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, input_ids, cache, attention_mask, position_ids):
        return nnx.merge(graphdef, state).decode_step(input_ids, cache, attention_mask=attention_mask,
                                                      position_ids=position_ids)

    return lambda *args: step(state, *args)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_cache_decoding_matches_uncached_reference(scan_layers):
    reference, ours = build_pair("GPT2LMHeadModel", seed=8, config={"scan_layers": scan_layers})
    tokens = random_ids(19, (2, 12))
    with torch.no_grad():
        expected = reference(t(tokens))[0].numpy()
    step = jitted_step(ours)
    cache = ours.init_cache(2, 16)
    assert cache.key.shape == (TINY["n_layer"], 2, 16, TINY["n_head"], TINY["n_embd"] // TINY["n_head"])
    assert cache.index.dtype == jnp.int32 and int(cache.index) == 0
    mask = np.ones((2, 16), np.int32)
    # a 5-token prompt in two blocks, then one token at a time
    logits, cache = step(tokens[:, :3], cache, mask, np.broadcast_to(np.arange(3), (2, 3)))
    collected = [logits]
    logits, cache = step(tokens[:, 3:5], cache, mask, np.broadcast_to(np.arange(3, 5), (2, 2)))
    collected.append(logits)
    for position in range(5, 12):
        logits, cache = step(tokens[:, position:position + 1], cache, mask, np.full((2, 1), position))
        collected.append(logits)
    got = jnp.concatenate(collected, axis=1)
    assert got.dtype == jnp.float32 and got.shape == (2, 12, VOCAB)
    assert int(cache.index) == 12
    assert_close(got, expected, 1e-5, "cached vs uncached logits")
    # eager calls give the same as compiled ones; defaults: all slots real, positions index..index+n-1
    eager_logits, eager_cache = ours.decode_step(tokens[:, :12], ours.init_cache(2, 16))
    assert_close(eager_logits, expected, 1e-5, "eager prompt with default mask and positions")
    with pytest.raises(ValueError, match="16 slots: 12 used \\+ 5 new tokens do not fit"):
        ours.decode_step(tokens[:, :5], eager_cache)


def test_cache_left_padded_batch_matches_each_sequence_alone():
    reference, ours = build_pair("GPT2LMHeadModel", seed=9)
    long_prompt, short_prompt = random_ids(20, (1, 6))[0], random_ids(21, (1, 3))[0]
    continuations = random_ids(22, (2, 4))
    width, max_length = 6, 10
    pad = 3
    prompt = np.stack([long_prompt, np.concatenate([np.zeros(pad, np.int64), short_prompt])])
    attention_mask = np.ones((2, max_length), np.int32)
    attention_mask[1, :pad] = 0
    positions = np.stack([np.arange(width), np.concatenate([np.zeros(pad, np.int64), np.arange(3)])])

    step = jitted_step(ours)
    cache = ours.init_cache(2, max_length)
    prompt_logits, cache = step(prompt, cache, attention_mask, positions)
    step_logits = []
    for index in range(continuations.shape[1]):
        next_positions = np.array([[width + index], [3 + index]])
        logits, cache = step(continuations[:, index:index + 1], cache, attention_mask, next_positions)
        step_logits.append(logits[:, 0])
    step_logits = np.stack(step_logits, axis=1)  # [2, 4, vocab]

    for row, alone_prompt, offset in ((0, long_prompt, 0), (1, short_prompt, pad)):
        sequence = np.concatenate([alone_prompt, continuations[row]])[None]
        with torch.no_grad():
            expected = reference(t(sequence))[0][0].numpy()  # [len, vocab]
        real = len(alone_prompt)
        assert_close(prompt_logits[row, offset:], expected[:real], 1e-5, f"row {row} prompt")
        assert_close(step_logits[row], expected[real:], 1e-5, f"row {row} continuation")
        assert not bool(jnp.isnan(prompt_logits[row]).any())


# ------------------------------------------------------------------------------------ switches and compilation


@pytest.mark.parametrize("scan_layers,remat", [(True, False), (False, True), (True, True)])
def test_scan_and_remat_match_unrolled(scan_layers, remat):
    _, ours = build_pair("GPT2DoubleHeadsModel", seed=10)
    config = jxg.GPT2Config(VOCAB, **TINY, scan_layers=scan_layers, remat=remat)
    switched = jxg.GPT2DoubleHeadsModel(config)
    switched.load_state_dict(ours.torch_state_dict(), strict=True)
    if scan_layers:
        assert switched.transformer.h.attn.c_attn.weight.shape == (2, 32, 96)
    input_ids = random_ids(23, (2, 2, SEQ))
    mc_token_ids = np.array([[1, SEQ - 1], [SEQ - 1, 5]])
    first = ours(input_ids[..., :4], mc_token_ids % 4)
    expected = ours(input_ids[..., 4:], mc_token_ids % 5, past=first[-1])
    got_first = switched(input_ids[..., :4], mc_token_ids % 4)
    got = switched(input_ids[..., 4:], mc_token_ids % 5, past=got_first[-1])
    for index, (g, e) in enumerate(zip(got[:2], expected[:2])):
        assert_close(g, e, 1e-5, f"output {index}")
    for g, e in zip(got[2], expected[2]):
        assert_close(g, e, 1e-5, "presents")
    lm_labels, mc_labels = random_ids(24, (2, 2, SEQ)), np.array([0, 1])
    expected_grads = jax_grads_as_torch(ours, lambda m: sum(m(input_ids, mc_token_ids, lm_labels, mc_labels)))
    graphdef, params, rest = nnx.split(switched, nnx.Param, ...)
    grads = jax.grad(lambda p: sum(nnx.merge(graphdef, p, rest)(input_ids, mc_token_ids, lm_labels, mc_labels)))(params)
    nnx.update(switched, grads)
    grad_by_key = switched.torch_state_dict()
    for key, value in expected_grads.items():
        assert_close(grad_by_key[key], value, 1e-5, f"grad {key}")


def test_torch_state_dict_matches_reference_exactly_and_dropout_is_keyed():
    reference, ours = build_pair("GPT2LMHeadModel", seed=11)
    exported = ours.torch_state_dict()
    expected = reference.state_dict()
    assert set(exported) == set(expected)  # including the tied decoder and the attn.bias buffers
    for key, value in expected.items():
        np.testing.assert_array_equal(exported[key], value.numpy(), err_msg=key)
    input_ids = random_ids(25, (2, SEQ))
    eval_logits = ours(input_ids)[0]
    ours.train()
    with pytest.raises(ValueError, match="dropout_rng"):
        ours(input_ids)
    first = ours(input_ids, dropout_rng=jax.random.key(0))[0]
    np.testing.assert_array_equal(first, ours(input_ids, dropout_rng=jax.random.key(0))[0])
    assert float(jnp.abs(first - ours(input_ids, dropout_rng=jax.random.key(1))[0]).max()) > 1e-4
    assert float(jnp.abs(first - eval_logits).max()) > 1e-4
    ours.eval()
    np.testing.assert_array_equal(eval_logits, ours(input_ids)[0])


def test_bf16_compute_and_cache_close_to_fp32():
    _, ours = build_pair("GPT2LMHeadModel", seed=12)
    half = jxg.GPT2LMHeadModel(jxg.GPT2Config(VOCAB, **TINY), dtype=jnp.bfloat16)
    half.load_state_dict(ours.torch_state_dict(), strict=True)
    input_ids = random_ids(26, (2, SEQ))
    full = ours(input_ids)[0]
    reduced = half(input_ids)[0]
    assert reduced.dtype == jnp.bfloat16
    assert_close(reduced.astype(jnp.float32), full, 0.05, "bf16 logits")
    cache = half.init_cache(2, SEQ)
    assert cache.key.dtype == jnp.bfloat16
    logits, _ = half.decode_step(input_ids, cache)
    assert logits.dtype == jnp.float32
    assert_close(logits, full, 0.05, "bf16 cached logits")


@pytest.mark.parametrize("size", ["gpt2", "gpt2-medium"])
def test_full_size_configs_shape_check_without_allocation(size):
    dims = {"gpt2": dict(n_embd=768, n_layer=12, n_head=12), "gpt2-medium": dict(n_embd=1024, n_layer=24, n_head=16)}
    abstract = nnx.eval_shape(lambda: jxg.GPT2DoubleHeadsModel(jxg.GPT2Config(50257, **dims[size])))
    specs = param_specs(abstract)
    with torch.device("meta"):
        reference = ppg.GPT2DoubleHeadsModel(ppg.GPT2Config(50257, **dims[size]))
    reference_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()
                        if not k.endswith(".attn.bias") and k != "lm_head.decoder.weight"}
    assert set(specs) == set(reference_shapes)
    for key, spec in specs.items():
        shape = spec.shape[::-1] if spec.torch_layout == "transpose" else spec.shape
        assert shape == reference_shapes[key], key
    total = sum(int(np.prod(s.shape)) for s in specs.values())
    expected_total = {"gpt2": 124_440_577, "gpt2-medium": 354_824_193}[size]  # GPT-2 + 769/1025-param mc head
    assert total == sum(int(np.prod(shape)) for shape in reference_shapes.values()) == expected_total
    scanned = nnx.eval_shape(lambda: jxg.GPT2LMHeadModel(jxg.GPT2Config(50257, **dims[size], scan_layers=True)))
    assert scanned.transformer.h.mlp.c_fc.weight.shape == (dims[size]["n_layer"], dims[size]["n_embd"],
                                                          4 * dims[size]["n_embd"])
