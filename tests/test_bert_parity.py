"""BERT parity against pytorch_pretrained_bert 0.6.2 (outputs, losses, gradients) and pytorch_transformers 1.2.0
(attentions and head_mask, which 0.6.2 on PyPI lacks), on tiny random configs, fp32 on CPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from pytorch_pretrained_bert import modeling as ppb

from jaxformers.models import bert as jxb
from parity_utils import assert_close, jax_grads_as_torch, torch_grads, torch_state_numpy

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2)
VOCAB = 99
BATCH, SEQ = 3, 9


def make_inputs(seed: int = 0, batch: int = BATCH, seq: int = SEQ):
    rng = np.random.RandomState(seed)
    input_ids = rng.randint(0, VOCAB, (batch, seq))
    token_type_ids = rng.randint(0, 2, (batch, seq))
    attention_mask = np.ones((batch, seq), np.int64)
    attention_mask[0, seq - 3:] = 0
    attention_mask[1, seq - 1:] = 0
    return input_ids, token_type_ids, attention_mask


def t(x):
    return torch.tensor(np.asarray(x))


# (class name, extra constructor kwargs, label builder: rng -> dict of label kwargs)
HEADS = {
    "BertForPreTraining": ({}, lambda r: dict(
        masked_lm_labels=np.where(r.rand(BATCH, SEQ) < 0.4, r.randint(0, VOCAB, (BATCH, SEQ)), -1),
        next_sentence_label=r.randint(0, 2, (BATCH,)))),
    "BertForMaskedLM": ({}, lambda r: dict(
        masked_lm_labels=np.where(r.rand(BATCH, SEQ) < 0.4, r.randint(0, VOCAB, (BATCH, SEQ)), -1))),
    "BertForNextSentencePrediction": ({}, lambda r: dict(next_sentence_label=r.randint(0, 2, (BATCH,)))),
    "BertForSequenceClassification": ({"num_labels": 3}, lambda r: dict(labels=r.randint(0, 3, (BATCH,)))),
    "BertForTokenClassification": ({"num_labels": 5}, lambda r: dict(labels=r.randint(0, 5, (BATCH, SEQ)))),
    "BertForQuestionAnswering": ({}, lambda r: dict(
        # includes out-of-range positions, which the reference clamps to seq and ignores
        start_positions=np.array([1, SEQ + 4, 3]), end_positions=np.array([[2], [5], [SEQ + 1]]))),
}


def build_pair(name: str, extra: dict, seed: int = 0, **jax_kwargs):
    torch.manual_seed(seed)
    reference = getattr(ppb, name)(ppb.BertConfig(VOCAB, **TINY), **extra).eval()
    ours = getattr(jxb, name)(jxb.BertConfig(VOCAB, **TINY), **extra, **jax_kwargs)
    ours.load_state_dict(torch_state_numpy(reference), strict=True)
    return reference, ours


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_outputs_and_losses_match_reference(name):
    extra, labels_for = HEADS[name]
    reference, ours = build_pair(name, extra)
    input_ids, token_type_ids, attention_mask = make_inputs()
    with torch.no_grad():
        expected = reference(t(input_ids), t(token_type_ids), t(attention_mask))
    got = ours(input_ids, token_type_ids, attention_mask)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected)
    for index, (g, e) in enumerate(zip(got, expected)):
        assert_close(g, e.numpy(), 1e-5, f"{name} output {index}")

    labels = labels_for(np.random.RandomState(1))
    with torch.no_grad():
        expected_loss = reference(t(input_ids), t(token_type_ids), t(attention_mask),
                                  **{k: t(v) for k, v in labels.items()})
    got_loss = ours(input_ids, token_type_ids, attention_mask, **labels)
    assert got_loss.shape == ()
    assert_close(got_loss, expected_loss.numpy(), 1e-5, f"{name} loss")


def test_multiple_choice_matches_reference():
    num_choices = 3
    reference, ours = build_pair("BertForMultipleChoice", {"num_choices": num_choices})
    rng = np.random.RandomState(2)
    input_ids = rng.randint(0, VOCAB, (2, num_choices, SEQ))
    token_type_ids = rng.randint(0, 2, (2, num_choices, SEQ))
    attention_mask = (rng.rand(2, num_choices, SEQ) < 0.8).astype(np.int64)
    attention_mask[..., 0] = 1
    labels = np.array([2, 0])
    with torch.no_grad():
        expected = reference(t(input_ids), t(token_type_ids), t(attention_mask))
        expected_loss = reference(t(input_ids), t(token_type_ids), t(attention_mask), t(labels))
    got = ours(input_ids, token_type_ids, attention_mask)
    assert got.shape == (2, num_choices)
    assert_close(got, expected.numpy(), 1e-5, "multiple choice logits")
    assert_close(ours(input_ids, token_type_ids, attention_mask, labels), expected_loss.numpy(), 1e-5, "loss")


def test_bert_model_every_layer_matches_reference():
    reference, ours = build_pair("BertModel", {})
    input_ids, token_type_ids, attention_mask = make_inputs(3)
    with torch.no_grad():
        expected_layers, expected_pooled = reference(t(input_ids), t(token_type_ids), t(attention_mask))
    got_layers, got_pooled = ours(input_ids, token_type_ids, attention_mask)
    assert len(got_layers) == len(expected_layers) == TINY["num_hidden_layers"]
    for index, (g, e) in enumerate(zip(got_layers, expected_layers)):
        assert_close(g, e.numpy(), 1e-5, f"layer {index}")
    assert_close(got_pooled, expected_pooled.numpy(), 1e-5, "pooled")
    last, pooled = ours(input_ids, token_type_ids, attention_mask, output_all_encoded_layers=False)
    assert_close(last, expected_layers[-1].numpy(), 1e-5, "last layer only")
    # defaults: no token types, no mask
    with torch.no_grad():
        expected_default = reference(t(input_ids), output_all_encoded_layers=False)[0]
    assert_close(ours(input_ids, output_all_encoded_layers=False)[0], expected_default.numpy(), 1e-5, "defaults")


@pytest.mark.parametrize("name", ["BertForPreTraining", "BertForQuestionAnswering", "BertForTokenClassification"])
def test_gradients_match_reference(name):
    extra, labels_for = HEADS[name]
    reference, ours = build_pair(name, extra, seed=4)
    input_ids, token_type_ids, attention_mask = make_inputs(5)
    labels = labels_for(np.random.RandomState(6))
    loss = reference(t(input_ids), t(token_type_ids), t(attention_mask), **{k: t(v) for k, v in labels.items()})
    loss.backward()
    expected = torch_grads(reference)
    got = jax_grads_as_torch(ours, lambda model: model(input_ids, token_type_ids, attention_mask, **labels))
    assert set(expected) <= set(got)
    for key, grad in expected.items():
        assert_close(got[key], grad, 1e-5, f"grad {key}")


# ---------------------------------------------------------------------------------- attentions and head masks


def build_v1_pair(seed: int = 7):
    """pytorch_transformers 1.2.0's BertModel: same weights layout, with attentions and head_mask."""
    from pytorch_transformers import modeling_bert as ptb

    torch.manual_seed(seed)
    config = ptb.BertConfig(VOCAB, output_attentions=True, output_hidden_states=False, **TINY)
    reference = ptb.BertModel(config).eval()
    ours = jxb.BertModel(jxb.BertConfig(VOCAB, **TINY), output_attentions=True)
    ours.load_state_dict(torch_state_numpy(reference), strict=True)
    return reference, ours


@pytest.mark.parametrize("mask_rank", [0, 1, 2])
def test_attentions_and_head_mask_match_pytorch_transformers(mask_rank):
    reference, ours = build_v1_pair()
    input_ids, token_type_ids, attention_mask = make_inputs(8)
    heads, layers = TINY["num_attention_heads"], TINY["num_hidden_layers"]
    head_mask = None
    if mask_rank == 1:
        head_mask = np.array([1.0, 0.0, 1.0, 0.5], np.float32)
    elif mask_rank == 2:
        head_mask = np.random.RandomState(9).rand(layers, heads).astype(np.float32)
        head_mask[0, 2] = 0.0
    with torch.no_grad():
        sequence, pooled, attentions = reference(
            t(input_ids), attention_mask=t(attention_mask), token_type_ids=t(token_type_ids),
            head_mask=None if head_mask is None else t(head_mask),
        )
    got_attentions, got_layers, got_pooled = ours(input_ids, token_type_ids, attention_mask, head_mask=head_mask)
    assert len(got_attentions) == layers
    for index, (g, e) in enumerate(zip(got_attentions, attentions)):
        assert g.shape == (BATCH, heads, SEQ, SEQ)
        assert_close(g, e.numpy(), 1e-6, f"attention probs layer {index}")
    assert_close(got_layers[-1], sequence.numpy(), 1e-5, "sequence output")
    assert_close(got_pooled, pooled.numpy(), 1e-5, "pooled")
    if head_mask is not None:
        # a fully masked head contributes nothing
        masked_layer = 0
        masked_head = 1 if mask_rank == 1 else 2
        assert float(jnp.abs(got_attentions[masked_layer][:, masked_head]).max()) == 0.0


def test_head_mask_without_attentions_uses_fused_path_and_matches():
    reference, ours_with_attn = build_v1_pair()
    ours = jxb.BertModel(jxb.BertConfig(VOCAB, **TINY))
    ours.load_state_dict(torch_state_numpy(reference), strict=True)
    input_ids, token_type_ids, attention_mask = make_inputs(10)
    head_mask = np.array([[1, 0, 1, 1], [0, 1, 1, 0.25]], np.float32)
    with torch.no_grad():
        sequence = reference(t(input_ids), attention_mask=t(attention_mask), token_type_ids=t(token_type_ids),
                             head_mask=t(head_mask))[0]
    got_layers, _ = ours(input_ids, token_type_ids, attention_mask, head_mask=head_mask)
    assert_close(got_layers[-1], sequence.numpy(), 1e-5, "sequence output with head mask")


def test_head_importance_gradient_matches_reference():
    """BERTology head importance: d loss / d head_mask, computed through the (differentiable) head mask."""
    from pytorch_transformers import modeling_bert as ptb

    torch.manual_seed(11)
    config = ptb.BertConfig(VOCAB, num_labels=3, **TINY)
    reference = ptb.BertForSequenceClassification(config).eval()
    ours = jxb.BertForSequenceClassification(jxb.BertConfig(VOCAB, **TINY), num_labels=3)
    ours.load_state_dict(torch_state_numpy(reference), strict=True)
    input_ids, token_type_ids, attention_mask = make_inputs(12)
    labels = np.array([0, 2, 1])
    head_mask = torch.ones(TINY["num_hidden_layers"], TINY["num_attention_heads"], requires_grad=True)
    loss = reference(t(input_ids), attention_mask=t(attention_mask), token_type_ids=t(token_type_ids), labels=t(labels),
                     head_mask=head_mask)[0]
    loss.backward()

    def loss_of_mask(mask):
        return ours(input_ids, token_type_ids, attention_mask, labels=labels, head_mask=mask)

    importance = jax.grad(loss_of_mask)(jnp.ones((TINY["num_hidden_layers"], TINY["num_attention_heads"])))
    assert_close(importance, head_mask.grad.numpy(), 1e-5, "head importance")
    assert float(jnp.abs(importance).sum()) > 0


def test_keep_multihead_output_holds_per_layer_context():
    reference, ours_attn = build_v1_pair()
    ours = jxb.BertModel(jxb.BertConfig(VOCAB, **TINY), keep_multihead_output=True)
    ours.load_state_dict(torch_state_numpy(reference), strict=True)
    input_ids, token_type_ids, attention_mask = make_inputs(13)
    layers, pooled = ours(input_ids, token_type_ids, attention_mask)
    outputs = ours.get_multihead_outputs()
    heads = TINY["num_attention_heads"]
    head_dim = TINY["hidden_size"] // heads
    assert len(outputs) == TINY["num_hidden_layers"]
    for output in outputs:
        assert output.shape == (BATCH, heads, SEQ, head_dim)
    # The context of the first layer, recomputed by hand from its attention probabilities and values.
    probs = ours_attn(input_ids, token_type_ids, attention_mask)[0][0]
    embedded = ours.embeddings(jnp.asarray(input_ids), jnp.asarray(token_type_ids), None)
    value = ours.encoder.layer[0].attention.self.value(embedded)
    value = value.reshape(BATCH, SEQ, heads, head_dim).transpose(0, 2, 1, 3)
    assert_close(outputs[0], jnp.einsum("bhqk,bhkd->bhqd", probs, value), 1e-5, "layer-0 multihead output")


# ------------------------------------------------------------------------------------ switches and compilation


@pytest.mark.parametrize("scan_layers,remat", [(True, False), (False, True), (True, True)])
def test_scan_and_remat_match_unrolled(scan_layers, remat):
    reference, ours = build_pair("BertForPreTraining", {}, seed=14)
    config = jxb.BertConfig(VOCAB, **TINY, scan_layers=scan_layers, remat=remat)
    switched = jxb.BertForPreTraining(config, output_attentions=True)
    switched.load_state_dict(ours.torch_state_dict(), strict=True)
    if scan_layers:
        stacked = switched.bert.encoder.layer.attention.self.query.weight
        assert stacked.shape == (TINY["num_hidden_layers"], TINY["hidden_size"], TINY["hidden_size"])
    input_ids, token_type_ids, attention_mask = make_inputs(15)
    ours_with_attn = jxb.BertForPreTraining(jxb.BertConfig(VOCAB, **TINY), output_attentions=True)
    ours_with_attn.load_state_dict(ours.torch_state_dict(), strict=True)
    expected = ours_with_attn(input_ids, token_type_ids, attention_mask)
    got = switched(input_ids, token_type_ids, attention_mask)
    for g_attn, e_attn in zip(got[0], expected[0]):
        assert_close(g_attn, e_attn, 1e-6, "attentions")
    assert_close(got[1], expected[1], 1e-5, "mlm scores")
    labels = HEADS["BertForPreTraining"][1](np.random.RandomState(16))
    expected_grads = jax_grads_as_torch(ours, lambda m: m(input_ids, token_type_ids, attention_mask, **labels))
    switched_plain = jxb.BertForPreTraining(config)
    switched_plain.load_state_dict(ours.torch_state_dict(), strict=True)
    graphdef, params, rest = nnx.split(switched_plain, nnx.Param, ...)
    grads = jax.grad(lambda p: nnx.merge(graphdef, p, rest)(input_ids, token_type_ids, attention_mask, **labels))(params)
    # Written into a model's parameter slots, the gradients export per layer in PyTorch layout.
    nnx.update(switched_plain, grads)
    grad_by_key = switched_plain.torch_state_dict()
    for key, value in expected_grads.items():
        assert_close(grad_by_key[key], value, 1e-5, f"grad {key}")
    # the exported state dict is per-layer, identical to the unrolled model's
    exported = switched.torch_state_dict()
    for key, value in ours.torch_state_dict().items():
        np.testing.assert_array_equal(exported[key], value)


def test_jit_through_split_merge_equals_eager():
    reference, ours = build_pair("BertForSequenceClassification", {"num_labels": 2})
    input_ids, token_type_ids, attention_mask = make_inputs(17)
    graphdef, state = nnx.split(ours)

    @jax.jit
    def logits(state, input_ids, token_type_ids, attention_mask):
        return nnx.merge(graphdef, state)(input_ids, token_type_ids, attention_mask)

    assert_close(logits(state, input_ids, token_type_ids, attention_mask),
                 ours(input_ids, token_type_ids, attention_mask), 1e-6, "jit vs eager")


def test_dropout_off_by_default_and_keyed_in_training():
    _, ours = build_pair("BertForSequenceClassification", {"num_labels": 2})
    input_ids, token_type_ids, attention_mask = make_inputs(18)
    eval_logits = ours(input_ids, token_type_ids, attention_mask)
    np.testing.assert_array_equal(eval_logits, ours(input_ids, token_type_ids, attention_mask))
    ours.train()
    with pytest.raises(ValueError, match="dropout_rng"):
        ours(input_ids, token_type_ids, attention_mask)
    first = ours(input_ids, token_type_ids, attention_mask, dropout_rng=jax.random.key(0))
    again = ours(input_ids, token_type_ids, attention_mask, dropout_rng=jax.random.key(0))
    other = ours(input_ids, token_type_ids, attention_mask, dropout_rng=jax.random.key(1))
    np.testing.assert_array_equal(first, again)
    assert float(jnp.abs(first - other).max()) > 1e-4
    assert float(jnp.abs(first - eval_logits).max()) > 1e-4
    ours.eval()
    np.testing.assert_array_equal(eval_logits, ours(input_ids, token_type_ids, attention_mask))


def test_bf16_compute_close_to_fp32():
    """bf16 activations with fp32 parameters: within bf16 rounding of the fp32 result (8 mantissa bits)."""
    reference, ours = build_pair("BertModel", {})
    half = jxb.BertModel(jxb.BertConfig(VOCAB, **TINY), dtype=jnp.bfloat16)
    half.load_state_dict(torch_state_numpy(reference), strict=True)
    assert half.embeddings.word_embeddings.weight.dtype == jnp.float32
    input_ids, token_type_ids, attention_mask = make_inputs(19)
    full = ours(input_ids, token_type_ids, attention_mask, output_all_encoded_layers=False)[0]
    reduced = half(input_ids, token_type_ids, attention_mask, output_all_encoded_layers=False)[0]
    assert reduced.dtype == jnp.bfloat16
    assert_close(reduced.astype(jnp.float32), full, 0.1, "bf16 vs fp32 hidden states (LayerNorm-scaled, |x|~1)")


def test_out_of_range_token_id_is_an_error():
    _, ours = build_pair("BertModel", {})
    input_ids, token_type_ids, attention_mask = make_inputs(20)
    input_ids[1, 2] = VOCAB
    with pytest.raises(ValueError, match=f"token id {VOCAB} is out of range"):
        ours(input_ids, token_type_ids, attention_mask)
    # under jit the value cannot be checked: the row becomes NaN rather than a silently clamped embedding
    graphdef, state = nnx.split(ours)
    out = jax.jit(lambda s, ids: nnx.merge(graphdef, s)(ids, output_all_encoded_layers=False)[0])(state, input_ids)
    assert bool(jnp.isnan(out[1]).all()) and not bool(jnp.isnan(out[0]).any())
    with pytest.raises(ValueError, match="max_position_embeddings"):
        ours(np.zeros((1, TINY["max_position_embeddings"] + 1), np.int64))


def test_full_size_configs_shape_check_without_allocation():
    """bert-large through jax.eval_shape: every parameter's shape equals the reference's (built on torch's meta
    device, so neither side allocates 340M parameters)."""
    large = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    abstract = nnx.eval_shape(lambda: jxb.BertForPreTraining(jxb.BertConfig(30522, **large)))
    from jaxformers.modeling_utils import param_specs

    specs = param_specs(abstract)
    with torch.device("meta"):
        reference = ppb.BertForPreTraining(ppb.BertConfig(30522, **large))
    reference_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    reference_shapes.pop("cls.predictions.decoder.weight")  # tied to the word embeddings
    assert set(specs) == set(reference_shapes)
    for key, spec in specs.items():
        shape = spec.shape[::-1] if spec.torch_layout == "transpose" else spec.shape
        assert shape == reference_shapes[key], key
    total = sum(int(np.prod(s.shape)) for s in specs.values())
    assert total == sum(int(np.prod(shape)) for shape in reference_shapes.values())
    assert 336_000_000 < total < 336_500_000  # BERT-large with pre-training heads
    scanned = nnx.eval_shape(lambda: jxb.BertModel(jxb.BertConfig(30522, **large, scan_layers=True)))
    assert scanned.encoder.layer.output.dense.weight.shape == (24, 4096, 1024)
