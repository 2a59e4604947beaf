"""The one layer stack (``jaxformers.layers.build_stack`` / ``run_stack``) in all four families: scanned, unrolled
and rematerialised stacks compute the same outputs (per-layer outputs included: hidden states, attentions,
presents, Transformer-XL memories) and gradients, with dropout on, and scanned and unrolled models load each
other's files."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformers.layers import REMAT_POLICIES, build_stack, run_stack
from jaxformers.modeling_utils import per_layer_params
from jaxformers.models import bert, gpt2, openai_gpt, transfo_xl
from parity_utils import assert_close

VOCAB = 61
BATCH, SEQ = 2, 7
LAYERS = 3


def _ids(seed: int, shape=(BATCH, SEQ), high: int = VOCAB) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, high, shape)


def _head_mask(heads: int) -> np.ndarray:
    # Differs per layer, so a layer reading another layer's slice would show.
    mask = np.ones((LAYERS, heads), np.float32)
    mask[0, 1] = 0.0
    mask[2, 0] = 0.0
    return mask


# ---------------------------------------------------------------------------------------------- the four families


def bert_outputs(model) -> Any:
    # BertModel with output_attentions: (attentions per layer, hidden states of every layer, pooled)
    return model(_ids(1), _ids(2, high=2), np.ones((BATCH, SEQ)), output_all_encoded_layers=True,
                 head_mask=_head_mask(4))


def bert_loss(model, rng) -> jax.Array:
    attentions, encoded, pooled = bert_outputs_train(model, rng)
    return sum(jnp.mean(jnp.square(layer)) for layer in encoded) + jnp.mean(pooled) + jnp.mean(attentions[-1])


def bert_outputs_train(model, rng):
    return model(_ids(1), _ids(2, high=2), None, output_all_encoded_layers=True, head_mask=_head_mask(4),
                 dropout_rng=rng)


def gpt2_outputs(model) -> Any:
    # past from a first call, then a second call with it: presents and attentions per layer
    _, _, past = model(_ids(3, (BATCH, 4)))
    return model(_ids(4), past=past, head_mask=_head_mask(4)), model.decode_step(
        _ids(5, (BATCH, 3)), model.init_cache(BATCH, 8))


def gpt2_loss(model, rng) -> jax.Array:
    attentions, hidden, presents = model(_ids(4), head_mask=_head_mask(4), dropout_rng=rng)
    return jnp.mean(jnp.square(hidden)) + jnp.mean(presents[-1]) + jnp.mean(attentions[0])


def openai_outputs(model) -> Any:
    return model(_ids(6), head_mask=_head_mask(4))


def openai_loss(model, rng) -> jax.Array:
    attentions, hidden = model(_ids(6), head_mask=_head_mask(4), dropout_rng=rng)
    return jnp.mean(jnp.square(hidden)) + jnp.mean(attentions[1])


def txl_outputs(model) -> Any:
    # two segments: the second attends to the memories of the first
    hidden, mems = model(_ids(7))
    return hidden, mems, model(_ids(8, (BATCH, 4)), mems)


def txl_loss(model, rng) -> jax.Array:
    _, mems = model(_ids(7), dropout_rng=rng)
    hidden, new_mems = model(_ids(8, (BATCH, 4)), mems, dropout_rng=jax.random.fold_in(rng, 1))
    return jnp.mean(jnp.square(hidden)) + sum(jnp.mean(memory) for memory in new_mems)


@dataclasses.dataclass
class Family:
    make: Callable[..., Any]  # runtime switches -> model
    outputs: Callable[[Any], Any]
    loss: Callable[[Any, jax.Array], jax.Array]
    stack: Callable[[Any], Any]  # model -> its layer stack
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


FAMILIES = {
    "bert": Family(
        lambda **switches: bert.BertModel(bert.BertConfig(VOCAB, hidden_size=16, num_hidden_layers=LAYERS,
                                                          num_attention_heads=4, intermediate_size=24,
                                                          max_position_embeddings=16, **switches),
                                          output_attentions=True),
        bert_outputs, bert_loss, lambda model: model.encoder.layer, {"output_attentions": True}),
    "gpt2": Family(
        lambda **switches: gpt2.GPT2Model(gpt2.GPT2Config(VOCAB, n_positions=16, n_ctx=16, n_embd=16,
                                                          n_layer=LAYERS, n_head=4,
                                                          scale_attn_by_inverse_layer_idx=True, **switches),
                                          output_attentions=True),
        gpt2_outputs, gpt2_loss, lambda model: model.h, {"output_attentions": True}),
    "openai-gpt": Family(
        lambda **switches: openai_gpt.OpenAIGPTModel(openai_gpt.OpenAIGPTConfig(
            VOCAB, n_positions=16, n_ctx=16, n_embd=16, n_layer=LAYERS, n_head=4, **switches),
            output_attentions=True),
        openai_outputs, openai_loss, lambda model: model.h, {"output_attentions": True}),
    "transfo-xl": Family(
        lambda **switches: transfo_xl.TransfoXLModel(transfo_xl.TransfoXLConfig(
            VOCAB, cutoffs=[20, 40], d_model=16, d_embed=16, n_head=4, d_head=4, d_inner=24, div_val=2,
            n_layer=LAYERS, mem_len=5, dropout=0.1, dropatt=0.1, **switches)),
        txl_outputs, txl_loss, lambda model: model.layers),
}

VARIANTS = {
    "scanned": dict(scan_layers=True),
    "remat": dict(remat=True),
    "scanned-remat-dots": dict(scan_layers=True, remat=True, remat_policy="dots_saveable"),
}


def _same_weights(model, reference) -> None:
    model.load_state_dict(reference.torch_state_dict(), strict=True)


def _outputs(model, outputs: Callable[[Any], Any]) -> Any:
    """``outputs(model)`` compiled (eager dispatch of every op, under remat above all, is far slower here)."""
    graphdef, state = nnx.split(model)
    return jax.jit(lambda state: outputs(nnx.merge(graphdef, state)))(state)


def _grads(model, loss) -> dict[str, np.ndarray]:
    """Gradient of ``loss(model, rng)`` in training mode, per layer key (scanned stacks sliced apart)."""
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    grads = jax.jit(jax.grad(lambda p: loss(nnx.merge(graphdef, p, rest), jax.random.key(3))))(params)
    model.eval()
    return {key: np.asarray(value) for key, value in per_layer_params(nnx.merge(graphdef, grads, rest)).items()}


def _assert_trees_close(got, expected, what: str) -> None:
    got_leaves, got_tree = jax.tree.flatten(got)
    expected_leaves, expected_tree = jax.tree.flatten(expected)
    assert got_tree == expected_tree, f"{what}: output structure {got_tree} != {expected_tree}"
    for index, (g, e) in enumerate(zip(got_leaves, expected_leaves)):
        assert_close(g, e, 1e-5, f"{what} output leaf {index}")


_REFERENCE: dict[str, tuple[Any, Any, dict[str, np.ndarray]]] = {}


def unrolled_reference(name: str):
    """The unrolled model of a family, its outputs and its training gradients (built once per family)."""
    if name not in _REFERENCE:
        family = FAMILIES[name]
        model = family.make()
        _REFERENCE[name] = (model, _outputs(model, family.outputs), _grads(model, family.loss))
    return _REFERENCE[name]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_scanned_and_remat_stacks_match_the_unrolled_one(name, variant):
    family = FAMILIES[name]
    reference, expected_outputs, expected_grads = unrolled_reference(name)
    model = family.make(**VARIANTS[variant])
    _same_weights(model, reference)
    if VARIANTS[variant].get("scan_layers"):
        assert not isinstance(family.stack(model), nnx.List)
    _assert_trees_close(_outputs(model, family.outputs), expected_outputs, f"{name} {variant}")
    grads = _grads(model, family.loss)
    assert sorted(grads) == sorted(expected_grads)
    for key, value in expected_grads.items():
        assert np.abs(value).max() > 0 or "pooler" in key, f"{name}: zero gradient for {key}"
        assert_close(grads[key], value, 1e-5, f"{name} {variant} grad {key}")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_scanned_and_unrolled_models_load_each_others_files(name, tmp_path):
    family = FAMILIES[name]
    reference = unrolled_reference(name)[0]
    cls = type(reference)
    reference.save_pretrained(tmp_path / "unrolled")
    scanned = cls.from_pretrained(tmp_path / "unrolled", scan_layers=True, **family.model_kwargs)
    assert scanned.config.scan_layers
    stacked = jax.tree.leaves(nnx.state(family.stack(scanned), nnx.Param))
    assert stacked and all(leaf.shape[0] == LAYERS for leaf in stacked)
    # The stacked parameters carry the "layers" logical axis first (the sharding rules replicate it).
    for _, param in nnx.to_flat_state(nnx.state(family.stack(scanned), nnx.Param)):
        assert param.get_metadata("out_sharding", None)[0] == "layers"
    expected = per_layer_params(reference)
    for key, value in per_layer_params(scanned).items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(expected[key]), err_msg=key)

    scanned.save_pretrained(tmp_path / "scanned")
    unrolled = cls.from_pretrained(tmp_path / "scanned", **family.model_kwargs)  # scan_layers is a runtime switch: not in the file
    assert isinstance(family.stack(unrolled), nnx.List)
    for key, value in per_layer_params(unrolled).items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(expected[key]), err_msg=key)
    _assert_trees_close(_outputs(unrolled, family.outputs), unrolled_reference(name)[1], f"{name} reloaded")


# ------------------------------------------------------------------------------------------ the stack on its own


class Affine(nnx.Module):
    def __init__(self, index: int, *, rngs: nnx.Rngs):
        self.scale = nnx.Param(jnp.full((3,), 1.0 + index), out_sharding=("embed",), eager_sharding=False)
        self.shift = nnx.Param(jax.random.normal(rngs.params(), (3,)), out_sharding=("embed",), eager_sharding=False)


def _affine_body(layer, carry, inputs, index):
    # carry [3]; inputs: (per-layer offset [3], None); collects the carry entering each layer and the index
    offset, absent = inputs
    assert absent is None
    out = jnp.tanh(carry * layer.scale[...] + layer.shift[...] + offset) + index
    return out, (carry, jnp.asarray(index))


@pytest.mark.parametrize("remat", [None, *sorted(REMAT_POLICIES)])
def test_run_stack_orders_layers_and_slices_per_layer_inputs(remat):
    rngs = nnx.Rngs(0)
    unrolled = build_stack(lambda index: Affine(index, rngs=rngs), 4, scan=False)
    scanned = build_stack(lambda index: unrolled[index], 4, scan=True)  # the same weights, stacked
    offsets = jnp.arange(12.0).reshape(4, 3)
    carry = jnp.array([0.1, -0.2, 0.3])
    expected = carry
    for index in range(4):
        layer = unrolled[index]
        expected = jnp.tanh(expected * layer.scale[...] + layer.shift[...] + offsets[index]) + index
    for stack, scan in ((unrolled, False), (scanned, True)):
        out, (entering, indexes) = run_stack(stack, _affine_body, carry, (offsets, None), scan=scan, remat=remat)
        assert_close(out, expected, 1e-6, f"scan={scan}")
        np.testing.assert_array_equal(np.asarray(indexes), np.arange(4))
        assert entering.shape == (4, 3)
        assert_close(entering[0], carry, 0.0, "the first layer's input")
        grad = jax.grad(lambda c: jnp.sum(run_stack(stack, _affine_body, c, (offsets, None), scan=scan,
                                                    remat=remat)[0]))(carry)
        assert np.all(np.isfinite(np.asarray(grad)))
    _, per_layer = run_stack(scanned, _affine_body, carry, (offsets, None), scan=True, stack_outputs=False)
    assert len(per_layer) == 4 and per_layer[3][0].shape == (3,)
    scale = nnx.state(scanned, nnx.Param)["scale"]
    assert scale.get_metadata("out_sharding", None) == ("layers", "embed")
    assert unrolled[0].scale.get_metadata("out_sharding", None) == ("embed",)  # the layers stacked are untouched


def test_bad_stack_arguments_are_named():
    with pytest.raises(ValueError, match="unknown remat policy 'dots'"):
        run_stack(nnx.List([]), _affine_body, 0.0, scan=False, remat="dots")
    with pytest.raises(ValueError, match="num_layers=0"):
        build_stack(lambda index: None, 0, scan=False)
    with pytest.raises(ValueError, match="remat_policy"):
        bert.BertConfig(VOCAB, remat=True, remat_policy="dots")


def test_config_choices_are_the_stack_policies():
    choices = bert.BertConfig._specs["remat_policy"].choices
    assert sorted(choices) == sorted(REMAT_POLICIES)
