"""BERTology head pruning in the model: equal to pytorch-transformers 1.2.0's prune_heads, to masking the same
heads, and persistent through save_pretrained / from_pretrained."""

import numpy as np
import pytest
import torch
from pytorch_transformers import modeling_bert as ptb

from jaxformers.models import bert as jxb
from parity_utils import assert_close, torch_state_numpy

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
VOCAB = 99
PRUNE = {0: [1, 3], 2: [0, 1, 2, 3]}  # layer 2 loses every head


def inputs(seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(0, VOCAB, (2, 7))
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    return ids, rng.randint(0, 2, ids.shape), mask


def pair(seed=1):
    torch.manual_seed(seed)
    reference = ptb.BertForSequenceClassification(ptb.BertConfig(VOCAB, num_labels=3, **TINY)).eval()
    ours = jxb.BertForSequenceClassification(jxb.BertConfig(VOCAB, **TINY), num_labels=3)
    ours.load_state_dict(torch_state_numpy(reference), strict=True)
    return reference, ours


def test_pruning_matches_pytorch_transformers_and_masking():
    reference, ours = pair()
    ids, types, mask = inputs()
    layers, heads = TINY["num_hidden_layers"], TINY["num_attention_heads"]
    head_mask = np.ones((layers, heads), np.float32)
    for layer, pruned in PRUNE.items():
        head_mask[layer, pruned] = 0.0
    masked_logits = ours(ids, types, mask, head_mask=head_mask)

    reference.prune_heads(PRUNE)
    ours.prune_heads(PRUNE)
    with torch.no_grad():
        expected = reference(torch.tensor(ids), attention_mask=torch.tensor(mask),
                             token_type_ids=torch.tensor(types))[0]
    got = ours(ids, types, mask)
    assert_close(got, expected.numpy(), 1e-5, "pruned vs pytorch-transformers pruned")
    assert_close(got, masked_logits, 1e-5, "pruned vs masked")
    assert ours.bert.encoder.layer[0].attention.self.query.weight.shape == (32, 16)
    assert ours.bert.encoder.layer[2].attention.output.dense.weight.shape == (0, 32)
    exported = ours.torch_state_dict()
    for key, value in reference.state_dict().items():
        np.testing.assert_array_equal(exported[key], value.numpy(), err_msg=key)
    # head masks keep indexing the original heads after pruning
    head_mask[1, 2] = 0.0
    assert_close(ours(ids, types, mask, head_mask=head_mask),
                 pair()[1](ids, types, mask, head_mask=head_mask), 1e-5, "head mask after pruning")


def test_pruned_model_reloads_from_its_config(tmp_path):
    _, ours = pair(2)
    ours.prune_heads({0: [2]})
    ours.prune_heads({0: [0], 1: [3]})  # a second round: indexes stay the original ones
    assert ours.config.pruned_heads == {0: [0, 2], 1: [3]}
    ids, types, mask = inputs(3)
    ours.save_pretrained(tmp_path)
    again = jxb.BertForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    assert again.bert.encoder.layer[0].attention.self.num_attention_heads == 2
    assert_close(again(ids, types, mask), ours(ids, types, mask), 1e-6, "reloaded pruned model")


def test_pruning_errors_are_clear():
    _, ours = pair()
    with pytest.raises(ValueError, match="layer 5 out of range"):
        ours.prune_heads({5: [0]})
    with pytest.raises(ValueError, match=r"heads \[7\] out of range"):
        ours.prune_heads({0: [7]})
    with pytest.raises(ValueError, match="need scan_layers=False"):
        jxb.BertModel(jxb.BertConfig(VOCAB, **TINY, scan_layers=True, pruned_heads={0: [1]}))
