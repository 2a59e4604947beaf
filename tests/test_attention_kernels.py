"""The fused attention paths (jaxformers/attention.py): the TPU Pallas flash kernel, run in Pallas's interpret
mode on the CPU, must match the XLA path (outputs and gradients) for the masks the models build."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformers import attention as kernels
from jaxformers.layers import attention, causal_bias, padding_bias

jax.config.update("jax_default_matmul_precision", "highest")


def _qkv(seed, batch=2, seq=128, heads=2, head_dim=32):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    shape = (batch, seq, heads, head_dim)
    q, k, v = (jax.random.normal(key, shape, jnp.float32) for key in keys[:3])
    return q, k, v, jax.random.normal(keys[3], shape, jnp.float32)


def _padding(batch=2, seq=128):
    lengths = np.array([seq, 37])[:batch]
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int32)
    return padding_bias(jnp.asarray(mask)), mask


def _loss_and_grads(q, k, v, bias, cotangent, head_mask=None):
    def loss(q, k, v):
        context, _ = attention(q, k, v, bias=bias, head_mask=head_mask)
        return jnp.sum(context * cotangent), context

    # jit: the interpret-mode kernel then runs compiled rather than op by op.
    (_, context), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return context, grads


@pytest.mark.slow
@pytest.mark.parametrize("mask_kind", ["causal", "padding+head_mask"])
def test_pallas_flash_matches_xla_outputs_and_gradients(mask_kind):
    q, k, v, cotangent = _qkv(0)
    bias, head_mask = None, None
    if mask_kind.startswith("padding"):
        bias, _ = _padding()
    elif mask_kind == "causal":
        bias = causal_bias(128, 128)
    if mask_kind.endswith("head_mask"):
        head_mask = jnp.array([1.0, 0.0])
    expected, expected_grads = _loss_and_grads(q, k, v, bias, cotangent, head_mask)
    with kernels.pallas_interpret() as used:
        got, got_grads = _loss_and_grads(q, k, v, bias, cotangent, head_mask)
    assert used == {"pallas-flash"}
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=2e-5, rtol=1e-5)
    for name, g, e in zip("qkv", got_grads, expected_grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=5e-5, rtol=1e-4, err_msg=f"d{name}")


def test_unsupported_shapes_and_features_fall_back_to_xla():
    trace = lambda **kw: jax.eval_shape(lambda q, k, v: attention(q, k, v, **kw), q, k, v)  # noqa: E731
    q, k, v, _ = _qkv(1, seq=48)  # not a multiple of the kernel's 128-wide blocks
    with kernels.pallas_interpret() as used:
        trace(bias=_padding(seq=48)[0])
    assert used == {"xla"}
    q, k, v, _ = _qkv(1)
    with kernels.pallas_interpret() as used:  # dropout and probabilities need the explicit softmax
        trace(dropout_rate=0.1, dropout_rng=jax.random.PRNGKey(0))
        trace(return_probs=True)
    assert used == {"xla-softmax (attention dropout)", "xla-softmax (attention probabilities)"}
    # A bias that is neither a padding nor a causal mask keeps the XLA path.
    with kernels.pallas_interpret() as used:
        trace(bias=jax.random.normal(jax.random.PRNGKey(2), (2, 1, 128, 128)))
    assert used == {"xla"}


def test_causal_bias_detection():
    assert kernels.is_causal_bias(causal_bias(16, 16), 16, 16)
    assert not kernels.is_causal_bias(causal_bias(4, 16), 4, 16)  # queries after a cache: offset diagonal
    assert not kernels.is_causal_bias(jnp.zeros((1, 1, 16, 16)), 16, 16)
    traced = jax.jit(lambda b: kernels.is_causal_bias(b, 16, 16) or b)  # unknown values while tracing
    traced(causal_bias(16, 16))


def test_gpu_target_uses_cudnn_only_for_half_precision():
    q, k, v, _ = _qkv(3, seq=16)
    with kernels.target_platform("gpu") as used:
        jax.eval_shape(lambda q, k, v: attention(q, k, v)[0], q, k, v)  # float32: cuDNN has no fp32 kernel
    assert used == {"xla"}
    assert kernels._cudnn_allowed(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16))
    assert not kernels._cudnn_allowed(q, k)
    assert not kernels._cudnn_allowed(jnp.zeros((1, 4, 2, 12), jnp.bfloat16), jnp.zeros((1, 4, 2, 12), jnp.bfloat16))


@pytest.mark.slow
def test_bert_forward_with_pallas_matches_xla():
    from jaxformers.models.bert import BertConfig, BertModel

    config = BertConfig(vocab_size_or_config_json_file=99, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    model = BertModel(config, seed=0)
    ids = np.random.RandomState(0).randint(1, 99, size=(2, 128))
    _, mask = _padding()
    from flax import nnx

    graphdef, state = nnx.split(model)
    forward = lambda state: nnx.merge(graphdef, state)(ids, None, mask, output_all_encoded_layers=False)  # noqa
    expected = jax.jit(forward)(state)
    with kernels.pallas_interpret() as used:
        got = jax.jit(forward)(state)
    assert used == {"pallas-flash"}
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(got[0])[real], np.asarray(expected[0])[real], atol=2e-5)
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(expected[1]), atol=2e-5)


def test_cudnn_bias_is_spelled_out_over_queries_and_keeps_values():
    """cuDNN broadcasts only the batch and head axes of a bias (an H200 run refused the [batch, 1, 1, kv] padding
    bias): the bias handed to it has the full [q, kv] extent and the same additive values."""
    query = jnp.zeros((2, 5, 4, 64), jnp.bfloat16)  # [batch, q, heads, d]
    key = jnp.zeros((2, 7, 4, 64), jnp.bfloat16)
    mask = np.ones((2, 7), np.int32)
    mask[1, 4:] = 0
    bias = padding_bias(jnp.asarray(mask))  # [batch, 1, 1, kv]
    spelled = kernels.cudnn_bias(bias, query, key)
    assert spelled.shape == (2, 1, 5, 7) and spelled.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(spelled, np.float32),
                                  np.broadcast_to(np.asarray(bias.astype(jnp.bfloat16), np.float32), (2, 1, 5, 7)))
    causal = causal_bias(5, 7)
    assert kernels.cudnn_bias(causal, query, key).shape[-2:] == (5, 7)
    assert kernels.cudnn_bias(None, query, key) is None
