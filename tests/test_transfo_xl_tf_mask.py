"""Transformer-XL ``same_length`` mask: the original TensorFlow code's variant (``same_length_mask="tf"``).

The original ``tf/model.py`` masks only the strictly-lower triangle of the memory block, the PyTorch port (0.6.x,
pytorch_transformers, HF) masks its diagonal too. Here the TF variant is checked against the TF mask built with
TF ops, and a converted TF checkpoint against an independent numpy forward pass of the TF model (segments with
memory, ``same_length=True``): losses equal with the TF mask, and differ with the PyTorch one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jaxformers.models import transfo_xl as jx
from script_loader import load_script
from tf_writer import write_tf_checkpoint

tf = pytest.importorskip("tensorflow")

N_TOKEN, D_MODEL, N_HEAD, D_HEAD, D_INNER, N_LAYER, MEM_LEN, CLAMP_LEN = 40, 16, 2, 8, 24, 2, 4, 6
CONFIG = dict(cutoffs=[], d_model=D_MODEL, d_embed=D_MODEL, div_val=1, n_head=N_HEAD, d_head=D_HEAD,
              d_inner=D_INNER, n_layer=N_LAYER, tgt_len=4, mem_len=MEM_LEN, clamp_len=CLAMP_LEN, same_length=True,
              untie_r=True, dropout=0.0, dropatt=0.0, layer_norm_epsilon=1e-12)
EPS = 1e-12


def tf_create_mask(q_len: int, m_len: int) -> np.ndarray:
    """The TF model's mask with ``same_length``, from band_part as the original builds it: 1 = blocked."""
    ones = tf.ones([q_len, q_len])
    diagonal = tf.linalg.band_part(ones, 0, 0)
    strictly_upper = tf.linalg.band_part(ones, 0, -1) - diagonal
    strictly_lower = tf.linalg.band_part(ones, -1, 0) - diagonal
    mask = tf.concat([tf.zeros([q_len, m_len]), strictly_upper], axis=1)  # [q_len, m_len + q_len]
    mask = tf.concat([mask[:, :q_len] + strictly_lower, mask[:, q_len:]], axis=1)
    return mask.numpy()


@pytest.mark.parametrize("q_len,m_len", [(4, 4), (3, 5), (5, 2), (4, 0), (1, 3)])
def test_tf_mask_equals_the_tf_code(q_len, m_len):
    ours = jx.attention_mask(q_len, m_len, MEM_LEN, True, "tf")
    np.testing.assert_array_equal(ours, tf_create_mask(q_len, m_len).astype(bool))
    # Without same_length both variants only hide the future.
    assert np.array_equal(jx.attention_mask(q_len, m_len, MEM_LEN, False, "tf"),
                          jx.attention_mask(q_len, m_len, MEM_LEN, False, "pytorch"))


def test_pytorch_mask_hides_one_more_key_once_the_memory_is_full():
    tf_mask = jx.attention_mask(4, MEM_LEN, MEM_LEN, True, "tf")
    torch_mask = jx.attention_mask(4, MEM_LEN, MEM_LEN, True, "pytorch")
    assert ((~tf_mask).sum(axis=1) == MEM_LEN + 1).all()
    assert ((~torch_mask).sum(axis=1) == MEM_LEN).all()
    assert (torch_mask >= tf_mask).all()  # the PyTorch mask adds the diagonal of the memory block


def test_unknown_mask_name_is_refused():
    with pytest.raises(ValueError, match="same_length_mask='keras'"):
        jx.TransfoXLModel(jx.TransfoXLConfig(N_TOKEN, same_length_mask="keras", **CONFIG))


# ------------------------------------------------------------------------- the TF model, in numpy


def tf_variables(seed: int) -> dict[str, np.ndarray]:
    """Random weights under the original code's variable names (``untie_r``, no cutoffs, tied softmax)."""
    rng = np.random.RandomState(seed)

    def normal(*shape, std=0.3):
        return (rng.randn(*shape) * std).astype(np.float32)

    heads = N_HEAD * D_HEAD
    variables = {
        "transformer/adaptive_embed/lookup_table": normal(N_TOKEN, D_MODEL),
        "transformer/adaptive_softmax/bias": normal(N_TOKEN, std=0.1),
        "transformer/r_w_bias": normal(N_LAYER, N_HEAD, D_HEAD),
        "transformer/r_r_bias": normal(N_LAYER, N_HEAD, D_HEAD),
    }
    for layer in range(N_LAYER):
        prefix = f"transformer/layer_{layer}/"
        variables.update({
            prefix + "rel_attn/qkv/kernel": normal(D_MODEL, 3 * heads),
            prefix + "rel_attn/r/kernel": normal(D_MODEL, heads),
            prefix + "rel_attn/o/kernel": normal(heads, D_MODEL),
            prefix + "rel_attn/LayerNorm/gamma": 1 + normal(D_MODEL, std=0.1),
            prefix + "rel_attn/LayerNorm/beta": normal(D_MODEL, std=0.1),
            prefix + "ff/layer_1/kernel": normal(D_MODEL, D_INNER),
            prefix + "ff/layer_1/bias": normal(D_INNER, std=0.1),
            prefix + "ff/layer_2/kernel": normal(D_INNER, D_MODEL),
            prefix + "ff/layer_2/bias": normal(D_MODEL, std=0.1),
            prefix + "ff/LayerNorm/gamma": 1 + normal(D_MODEL, std=0.1),
            prefix + "ff/LayerNorm/beta": normal(D_MODEL, std=0.1),
        })
    return variables


def layer_norm(x, gamma, beta):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + EPS) * gamma + beta


def relative_attention(v, layer, w, memory, pos_emb, mask):
    """One TF ``rel_multihead_attn`` (time-major ``w [q, b, d]``, ``memory [m, b, d]``), float64."""
    p = f"transformer/layer_{layer}/rel_attn/"
    q_len, k_len = w.shape[0], memory.shape[0] + w.shape[0]
    heads = np.concatenate([memory, w]) @ v[p + "qkv/kernel"]  # [k, b, 3 * n * d]
    q, k, val = (part.reshape(k_len, w.shape[1], N_HEAD, D_HEAD) for part in np.split(heads, 3, axis=-1))
    q = q[-q_len:]
    r = (pos_emb @ v[p + "r/kernel"]).reshape(k_len, N_HEAD, D_HEAD)
    content = np.einsum("ibnd,jbnd->ijbn", q + v["transformer/r_w_bias"][layer], k)
    position = np.einsum("ibnd,jnd->ijbn", q + v["transformer/r_r_bias"][layer], r)
    # Relative shift: score (i, j) takes the embedding of distance m_len + i - j, at row q_len - 1 - i + j.
    rows = np.clip(np.arange(k_len)[None, :] + q_len - 1 - np.arange(q_len)[:, None], 0, k_len - 1)
    position = position[np.arange(q_len)[:, None], rows]
    scores = (content + position) / np.sqrt(D_HEAD)
    scores = np.where(mask[:, :, None, None] > 0, -1e30, scores)
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    attended = np.einsum("ijbn,jbnd->ibnd", probs, val).reshape(q_len, w.shape[1], N_HEAD * D_HEAD)
    return layer_norm(attended @ v[p + "o/kernel"] + w, v[p + "LayerNorm/gamma"], v[p + "LayerNorm/beta"])


def feed_forward(v, layer, x):
    p = f"transformer/layer_{layer}/ff/"
    inner = np.maximum(x @ v[p + "layer_1/kernel"] + v[p + "layer_1/bias"], 0)
    out = inner @ v[p + "layer_2/kernel"] + v[p + "layer_2/bias"]
    return layer_norm(out + x, v[p + "LayerNorm/gamma"], v[p + "LayerNorm/beta"])


def tf_model_nll(variables, segments, targets) -> list[np.ndarray]:
    """Per-token NLL ``[batch, q_len]`` of each segment, memories carried over, as the TF evaluation runs."""
    v = {name: value.astype(np.float64) for name, value in variables.items()}
    table = v["transformer/adaptive_embed/lookup_table"]
    batch = segments[0].shape[0]
    mems = [np.zeros((MEM_LEN, batch, D_MODEL)) for _ in range(N_LAYER)]
    losses = []
    for inputs, target in zip(segments, targets):
        q_len = inputs.shape[1]
        k_len = MEM_LEN + q_len
        hidden = table[inputs.T] * np.sqrt(D_MODEL)  # [q, b, d]
        distances = np.minimum(np.arange(k_len - 1, -1, -1.0), CLAMP_LEN)
        angles = distances[:, None] / 10000 ** (np.arange(0, D_MODEL, 2.0) / D_MODEL)[None, :]
        pos_emb = np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)  # [k, d]
        mask = tf_create_mask(q_len, MEM_LEN)
        new_mems = []
        for layer in range(N_LAYER):
            new_mems.append(np.concatenate([mems[layer], hidden])[-MEM_LEN:])
            hidden = relative_attention(v, layer, hidden, mems[layer], pos_emb, mask)
            hidden = feed_forward(v, layer, hidden)
        logits = hidden @ table.T + v["transformer/adaptive_softmax/bias"]  # [q, b, n_token]
        log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - logits.max(-1, keepdims=True)
        losses.append(-np.take_along_axis(log_probs, target.T[..., None], axis=-1)[..., 0].T)
        mems = new_mems
    return losses


def our_nll(model, segments, targets) -> list[np.ndarray]:
    mems, losses = None, []
    for inputs, target in zip(segments, targets):
        nll, mems = model(inputs, target, mems)
        losses.append(np.asarray(nll))
    return losses


@pytest.mark.slow
def test_converted_tf_checkpoint_reproduces_the_tf_model_losses(tmp_path):
    variables = tf_variables(seed=0)
    rng = np.random.RandomState(1)
    stream = rng.randint(0, N_TOKEN, (2, 13))
    segments = [stream[:, start:start + 4] for start in (0, 4, 8)]
    targets = [stream[:, start + 1:start + 5] for start in (0, 4, 8)]
    expected = tf_model_nll(variables, segments, targets)

    checkpoint = tmp_path / "tf"
    checkpoint.mkdir()
    write_tf_checkpoint(variables, checkpoint / "model.ckpt")
    jx.TransfoXLConfig(N_TOKEN, **CONFIG).to_json_file(checkpoint / "config.json")
    dump = tmp_path / "converted"
    load_script("conversion/convert_transfo_xl_checkpoint.py").main([
        "--pytorch_dump_folder_path", str(dump), "--tf_checkpoint_path", str(checkpoint),
        "--transfo_xl_config_file", str(checkpoint / "config.json")])

    converted = jx.TransfoXLLMHeadModel.from_pretrained(dump)
    assert converted.config.same_length_mask == "tf"  # written into the converted config.json
    direct = jx.TransfoXLLMHeadModel.from_pretrained(checkpoint, from_tf=True, strict=True)
    assert direct.config.same_length_mask == "tf"
    for model, what in ((converted, "converted"), (direct, "from_tf=True")):
        for index, (got, want) in enumerate(zip(our_nll(model, segments, targets), expected)):
            np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"{what}, segment {index}")

    # The PyTorch port's mask is a different model on the same weights: the test can tell them apart.
    pytorch_mask = jx.TransfoXLLMHeadModel.from_pretrained(
        checkpoint, from_tf=True, config_overrides={"same_length_mask": "pytorch"})
    assert pytorch_mask.config.same_length_mask == "pytorch"
    differences = [np.abs(got - want).max() for got, want in zip(our_nll(pytorch_mask, segments, targets), expected)]
    assert max(differences) > 1e-2


def test_pytorch_checkpoints_keep_the_pytorch_mask(tmp_path):
    model = jx.TransfoXLLMHeadModel(jx.TransfoXLConfig(N_TOKEN, **CONFIG))
    assert model.config.same_length_mask == "pytorch"
    model.save_pretrained(tmp_path, pytorch=True)
    (tmp_path / "flax_model.msgpack").unlink()
    loaded = jx.TransfoXLLMHeadModel.from_pretrained(tmp_path)
    assert loaded.config.same_length_mask == "pytorch" and loaded.transformer.same_length_mask == "pytorch"
