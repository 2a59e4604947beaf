"""OpenAI GPT parity against pytorch_pretrained_bert 0.6.2 (outputs, losses, gradients, special tokens) and
pytorch_transformers 1.2.0 (attentions and head_mask), on tiny random configs (fp32, CPU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from pytorch_pretrained_bert import modeling_openai as ppo

from jaxformers.modeling_utils import param_specs
from jaxformers.models import openai_gpt as jxo
from jaxformers.models.gpt2 import choice_shared_dropout
from parity_utils import assert_close, jax_grads_as_torch, torch_grads, torch_state_numpy

TINY = dict(n_special=3, n_positions=24, n_ctx=24, n_embd=32, n_layer=2, n_head=4)
VOCAB = 99
TOTAL = VOCAB + TINY["n_special"]
SEQ = 9
# 0.6.2's multiple-choice head calls Dropout2d on 3-D inputs, which today's torch warns about (inactive in eval).
pytestmark = pytest.mark.filterwarnings("ignore:dropout2d:UserWarning")


def t(x):
    return torch.tensor(np.asarray(x))


def build_pair(name: str, seed: int = 0, tiny: dict | None = None, **jax_kwargs):
    tiny = tiny or TINY
    torch.manual_seed(seed)
    reference = getattr(ppo, name)(ppo.OpenAIGPTConfig(VOCAB, **tiny)).eval()
    ours = getattr(jxo, name)(jxo.OpenAIGPTConfig(VOCAB, **tiny, **jax_kwargs.pop("config", {})), **jax_kwargs)
    ours.load_state_dict(torch_state_numpy(reference), strict=True)
    return reference, ours


def random_ids(seed: int, shape, high: int = TOTAL) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, high, shape)


@pytest.mark.parametrize("afn", ["gelu", "relu", "swish"])
def test_base_model_matches_reference(afn):
    reference, ours = build_pair("OpenAIGPTModel", tiny={**TINY, "afn": afn})
    if afn == "relu":
        # 0.6.2 maps "relu" to the nn.ReLU class (calling it builds a module instead of applying it); the
        # documented activation is relu, so the reference is patched to apply it.
        for block in reference.h:
            block.mlp.act = torch.relu
    input_ids = random_ids(1, (2, 3, SEQ))  # [d_1, d_2, seq], special tokens included
    token_type_ids = random_ids(2, (2, 3, SEQ))
    position_ids = np.broadcast_to(np.arange(2, 2 + SEQ), (2, 3, SEQ))
    with torch.no_grad():
        expected = reference(t(input_ids), t(position_ids), t(token_type_ids))
        expected_default = reference(t(input_ids[0]))
    got = ours(input_ids, position_ids, token_type_ids)
    assert got.shape == (2, 3, SEQ, TINY["n_embd"])
    assert_close(got, expected.numpy(), 1e-5, f"hidden states ({afn})")
    assert_close(ours(input_ids[0]), expected_default.numpy(), 1e-5, "default positions")
    with pytest.raises(ValueError, match="n_positions=24"):
        ours(np.zeros((1, 25), np.int64))


def test_lm_head_logits_and_loss_match_reference():
    reference, ours = build_pair("OpenAIGPTLMHeadModel", seed=1)
    input_ids = random_ids(3, (2, 2, SEQ))
    labels = np.where(np.random.RandomState(4).rand(2, 2, SEQ) < 0.3, -1, random_ids(5, (2, 2, SEQ)))
    with torch.no_grad():
        expected_logits = reference(t(input_ids))
        expected_loss = reference(t(input_ids), lm_labels=t(labels))
    logits = ours(input_ids)
    assert logits.shape == (2, 2, SEQ, TOTAL)
    assert_close(logits, expected_logits.numpy(), 1e-5, "lm logits")
    assert_close(ours(input_ids, lm_labels=labels), expected_loss.numpy(), 1e-5, "lm loss")


def test_double_heads_match_reference():
    reference, ours = build_pair("OpenAIGPTDoubleHeadsModel", seed=2)
    input_ids = random_ids(6, (2, 3, SEQ))
    mc_token_ids = np.array([[SEQ - 1, 2, 4], [0, SEQ - 1, 5]])
    lm_labels = np.where(np.random.RandomState(7).rand(2, 3, SEQ) < 0.3, -1, random_ids(8, (2, 3, SEQ)))
    mc_labels = np.array([1, 2])
    with torch.no_grad():
        lm_logits, mc_logits = reference(t(input_ids), t(mc_token_ids))
        expected_losses = reference(t(input_ids), t(mc_token_ids), t(lm_labels), t(mc_labels))
    got_lm, got_mc = ours(input_ids, mc_token_ids)
    assert got_mc.shape == (2, 3)
    assert_close(got_lm, lm_logits.numpy(), 1e-5, "lm logits")
    assert_close(got_mc, mc_logits.numpy(), 1e-5, "mc logits")
    losses = ours(input_ids, mc_token_ids, lm_labels, mc_labels)
    assert len(losses) == 2
    for index, (g, e) in enumerate(zip(losses, expected_losses)):
        assert_close(g, e.numpy(), 1e-5, f"loss {index}")
    (mc_only,) = ours(input_ids, multiple_choice_token_ids=mc_token_ids, multiple_choice_labels=mc_labels)
    assert_close(mc_only, expected_losses[1].numpy(), 1e-5, "mc loss alone")


@pytest.mark.parametrize("name", ["OpenAIGPTLMHeadModel", "OpenAIGPTDoubleHeadsModel"])
def test_gradients_match_reference(name):
    reference, ours = build_pair(name, seed=3)
    input_ids = random_ids(9, (2, 2, SEQ))
    lm_labels = random_ids(10, (2, 2, SEQ))
    if name == "OpenAIGPTLMHeadModel":
        reference(t(input_ids), lm_labels=t(lm_labels)).backward()
        got = jax_grads_as_torch(ours, lambda model: model(input_ids, lm_labels=lm_labels))
    else:
        mc_token_ids, mc_labels = np.array([[SEQ - 1, 3], [5, SEQ - 1]]), np.array([0, 1])
        sum(reference(t(input_ids), t(mc_token_ids), t(lm_labels), t(mc_labels))).backward()
        got = jax_grads_as_torch(ours, lambda model: sum(model(input_ids, mc_token_ids, lm_labels, mc_labels)))
    expected = torch_grads(reference)
    assert set(expected) <= set(got)
    for key, grad in expected.items():
        assert_close(got[key], grad, 1e-5, f"grad {key}")


@pytest.mark.parametrize("mask_rank", [0, 1, 2])
def test_attentions_and_head_mask_match_pytorch_transformers(mask_rank):
    from pytorch_transformers import modeling_openai as pto

    tiny = {k: v for k, v in TINY.items() if k != "n_special"}  # 1.2.0 folds special tokens into vocab_size
    torch.manual_seed(4)
    reference = pto.OpenAIGPTModel(pto.OpenAIGPTConfig(VOCAB, output_attentions=True, **tiny)).eval()
    ours = jxo.OpenAIGPTModel(jxo.OpenAIGPTConfig(VOCAB, **tiny), output_attentions=True)
    ours.load_state_dict(torch_state_numpy(reference), strict=True)
    plain = jxo.OpenAIGPTModel(jxo.OpenAIGPTConfig(VOCAB, **tiny))
    plain.load_state_dict(torch_state_numpy(reference), strict=True)
    heads, layers = TINY["n_head"], TINY["n_layer"]
    head_mask = None
    if mask_rank == 1:
        head_mask = np.array([0.0, 1.0, 0.5, 1.0], np.float32)
    elif mask_rank == 2:
        head_mask = np.random.RandomState(11).rand(layers, heads).astype(np.float32)
        head_mask[0, 2] = 0.0
    input_ids = random_ids(12, (3, SEQ), VOCAB)
    with torch.no_grad():
        hidden, attentions = reference(t(input_ids), head_mask=None if head_mask is None else t(head_mask))
    got_attentions, got_hidden = ours(input_ids, head_mask=head_mask)
    for index, (g, e) in enumerate(zip(got_attentions, attentions)):
        assert g.shape == (3, heads, SEQ, SEQ)
        assert_close(g, e.numpy(), 1e-6, f"attention probs layer {index}")
    assert_close(got_hidden, hidden.numpy(), 1e-5, "hidden states")
    assert_close(plain(input_ids, head_mask=head_mask), hidden.numpy(), 1e-5, "fused path")
    if head_mask is not None:
        layer, head = (0, 0) if mask_rank == 1 else (0, 2)
        assert float(jnp.abs(got_attentions[layer][:, head]).max()) == 0.0


def test_set_num_special_tokens_grows_and_keeps_pretrained_rows():
    reference, ours = build_pair("OpenAIGPTDoubleHeadsModel", seed=5, tiny={**TINY, "n_special": 0})
    before = np.asarray(ours.transformer.tokens_embed.weight[...])
    ours.set_num_special_tokens(2)
    reference.set_num_special_tokens(2)
    assert ours.config.n_special == 2 and ours.config.total_tokens_embeddings == VOCAB + 2
    table = np.asarray(ours.transformer.tokens_embed.weight[...])
    assert table.shape == (VOCAB + 2, TINY["n_embd"])
    np.testing.assert_array_equal(table[:VOCAB], before)
    assert 0.0 < table[VOCAB:].std() < 0.1  # new rows drawn from N(0, initializer_range)
    # once the reference has the same special rows, everything agrees, including the tied LM head
    with torch.no_grad():
        reference.transformer.tokens_embed.weight[VOCAB:] = torch.from_numpy(np.array(table[VOCAB:]))
    input_ids = random_ids(13, (1, 2, SEQ), VOCAB + 2)
    mc_token_ids = np.array([[SEQ - 1, SEQ - 1]])
    with torch.no_grad():
        expected_lm, expected_mc = reference(t(input_ids), t(mc_token_ids))
    got_lm, got_mc = ours(input_ids, mc_token_ids)
    assert got_lm.shape[-1] == VOCAB + 2
    assert_close(got_lm, expected_lm.numpy(), 1e-5, "lm logits after resize")
    assert_close(got_mc, expected_mc.numpy(), 1e-5, "mc logits after resize")
    exported = ours.torch_state_dict()
    assert exported["lm_head.decoder.weight"].shape == (VOCAB + 2, TINY["n_embd"])
    reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in exported.items()}, strict=True)
    # growing again keeps the special rows learned so far
    ours.set_num_special_tokens(4)
    np.testing.assert_array_equal(np.asarray(ours.transformer.tokens_embed.weight[...])[:VOCAB + 2], table)


@pytest.mark.parametrize("scan_layers,remat", [(True, False), (False, True)])
def test_scan_and_remat_match_unrolled(scan_layers, remat):
    _, ours = build_pair("OpenAIGPTLMHeadModel", seed=6)
    switched = jxo.OpenAIGPTLMHeadModel(jxo.OpenAIGPTConfig(VOCAB, **TINY, scan_layers=scan_layers, remat=remat),
                                        output_attentions=True)
    switched.load_state_dict(ours.torch_state_dict(), strict=True)
    with_attentions = jxo.OpenAIGPTLMHeadModel(jxo.OpenAIGPTConfig(VOCAB, **TINY), output_attentions=True)
    with_attentions.load_state_dict(ours.torch_state_dict(), strict=True)
    input_ids = random_ids(14, (2, SEQ))
    expected_attentions, expected_logits = with_attentions(input_ids)
    got_attentions, got_logits = switched(input_ids)
    assert_close(got_logits, expected_logits, 1e-5, "logits")
    for g, e in zip(got_attentions, expected_attentions):
        assert_close(g, e, 1e-6, "attentions")
    labels = random_ids(15, (2, SEQ))
    expected_grads = jax_grads_as_torch(ours, lambda m: m(input_ids, lm_labels=labels))
    graphdef, params, rest = nnx.split(switched, nnx.Param, ...)
    grads = jax.grad(lambda p: nnx.merge(graphdef, p, rest)(input_ids, lm_labels=labels))(params)
    nnx.update(switched, grads)
    grad_by_key = switched.torch_state_dict()
    for key, value in expected_grads.items():
        assert_close(grad_by_key[key], value, 1e-5, f"grad {key}")


def test_training_dropout_is_keyed_and_mc_dropout_shared_across_choices():
    _, ours = build_pair("OpenAIGPTDoubleHeadsModel", seed=7)
    input_ids = random_ids(16, (2, 3, SEQ))
    mc_token_ids = np.full((2, 3), SEQ - 1)
    eval_lm, eval_mc = ours(input_ids, mc_token_ids)
    ours.train()
    with pytest.raises(ValueError, match="dropout_rng"):
        ours(input_ids, mc_token_ids)
    first = ours(input_ids, mc_token_ids, dropout_rng=jax.random.key(0))
    again = ours(input_ids, mc_token_ids, dropout_rng=jax.random.key(0))
    np.testing.assert_array_equal(first[1], again[1])
    assert float(jnp.abs(first[1] - eval_mc).max()) > 1e-4
    ours.eval()
    np.testing.assert_array_equal(eval_mc, ours(input_ids, mc_token_ids)[1])
    # the head's dropout drops the same hidden features for every choice of an example
    dropped = np.asarray(choice_shared_dropout(jnp.ones((2, 3, 64)), 0.5, jax.random.key(3))) == 0
    assert dropped.any() and not dropped.all()
    assert (dropped == dropped[:, :1]).all()


def test_full_size_config_shape_check_without_allocation():
    abstract = nnx.eval_shape(lambda: jxo.OpenAIGPTDoubleHeadsModel(jxo.OpenAIGPTConfig(40478)))
    specs = param_specs(abstract)
    with torch.device("meta"):
        reference = ppo.OpenAIGPTDoubleHeadsModel(ppo.OpenAIGPTConfig(40478))
    reference_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()
                        if not k.endswith(".attn.bias") and k != "lm_head.decoder.weight"}
    assert set(specs) == set(reference_shapes)
    for key, spec in specs.items():
        shape = spec.shape[::-1] if spec.torch_layout == "transpose" else spec.shape
        assert shape == reference_shapes[key], key
    total = sum(int(np.prod(s.shape)) for s in specs.values())
    assert total == 116_534_784 + 769  # openai-gpt (116.5M) + the multiple-choice head
