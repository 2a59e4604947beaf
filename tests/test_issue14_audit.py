"""Issue 14 as a user meets it: what transformers 5 saves (a fine-tuned classifier with labels, its tokenizer as
``tokenizer.json`` + ``tokenizer_config.json`` only, no vocab.txt) sitting in a Hugging Face cache, loaded offline
by repo id through the Auto classes and compared with transformers on the same files; exported back and loaded by
transformers; ``jaxformers parity --reference transformers`` on a directory transformers wrote; tokenizer configs
naming transformers' family-less tokenizer class; and the huggingface_hub API the downloads rely on."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jaxformers  # noqa: E402
from jaxformers import cli  # noqa: E402

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "##s", "dog", "Hello",
         "World", "hello", "world", ",", ".", "!"] + list("abcdefghijklmnopqrstuvwxyz")
TEXTS = ["Hello World, the cat sat on the mat!", "the dogs sat", "hello world"]
PAIRS = ["the mat.", "Hello cats", "World"]
LABELS = {0: "negative", 1: "neutral", 2: "positive"}
REPO = "my-org/tiny-sentiment"


def randomized(model, seed: int = 0):
    """Every parameter random: transformers' constant bias/LayerNorm initialisation would hide a mix-up."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def transformers_classifier_save(directory: Path) -> "transformers.BertForSequenceClassification":
    """A cased BERT classifier with named labels and its tokenizer, as transformers 5 saves them."""
    config = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=24, max_position_embeddings=32,
                                     num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    model = randomized(transformers.BertForSequenceClassification(config))
    model.save_pretrained(directory)
    vocab = directory.parent / "vocab-source.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    transformers.BertTokenizer(str(vocab), do_lower_case=False).save_pretrained(directory)
    return model


def into_hf_cache(snapshot_source: Path, cache: Path, repo: str) -> str:
    """Lay a directory out as huggingface_hub does: blobs named by content hash, snapshot links, refs/main."""
    commit = hashlib.sha1(repo.encode()).hexdigest()
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for path in snapshot_source.iterdir():
        blob = root / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copy(path, blob)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return commit


@pytest.mark.slow  # ~50 s on the loaded 2-core box, mostly first imports of transformers' BERT and XLA
def test_transformers_classifier_from_the_hf_cache_offline_by_repo_id_and_back(tmp_path, monkeypatch):
    reference = transformers_classifier_save(tmp_path / "saved")
    assert not (tmp_path / "saved" / "vocab.txt").exists()  # the vocabulary lives only in tokenizer.json
    cache = tmp_path / "hf-cache"
    into_hf_cache(tmp_path / "saved", cache, REPO)
    for variable in ("JAXFORMERS_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE", "JAXFORMERS_ENDPOINT"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # refuses connections: nothing may be asked

    tokenizer = jaxformers.AutoTokenizer.from_pretrained(REPO)
    model = jaxformers.AutoModelForSequenceClassification.from_pretrained(REPO, strict=True)
    assert type(tokenizer) is jaxformers.BertTokenizer and type(model) is jaxformers.BertForSequenceClassification
    assert model.num_labels == 3 and model.config.id2label == LABELS
    # transformers reads its offline switch at import: told explicitly, on the same cache
    theirs = transformers.AutoTokenizer.from_pretrained(REPO, cache_dir=cache, local_files_only=True)
    ours_batch = tokenizer(TEXTS, PAIRS, padding=True, truncation=True, max_length=12, return_tensors="np")
    their_batch = theirs(TEXTS, PAIRS, padding=True, truncation=True, max_length=12, return_tensors="np")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        np.testing.assert_array_equal(ours_batch[key], their_batch[key], err_msg=key)
    assert tokenizer.convert_ids_to_tokens(ours_batch["input_ids"][0][1:3].tolist()) == ["Hello", "World"]  # cased

    with torch.no_grad():
        expected = reference(**{key: torch.tensor(value) for key, value in their_batch.items()}).logits.numpy()
    logits = np.asarray(model(ours_batch["input_ids"], ours_batch["token_type_ids"], ours_batch["attention_mask"]))
    np.testing.assert_allclose(logits, expected, atol=1e-5)

    # Exported back (sharded), transformers builds the same labelled classifier without num_labels by hand.
    model.save_pretrained(tmp_path / "export", max_shard_size="8kB")
    again, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(tmp_path / "export"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert again.config.id2label == LABELS and again.config.label2id == {v: k for k, v in LABELS.items()}
    with torch.no_grad():
        round_trip = again.eval()(**{key: torch.tensor(value) for key, value in their_batch.items()}).logits.numpy()
    np.testing.assert_allclose(round_trip, expected, atol=1e-5)


def tiny_bpe_files(directory: Path) -> None:
    """A byte-level BPE vocabulary (all 256 byte symbols plus a few merges) as GPT-2's vocab.json/merges.txt."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {symbol: index for index, symbol in enumerate(bytes_to_unicode().values())}
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "c"), ("a", "t"), ("Ġc", "at")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


@pytest.mark.parametrize("generic_name", ["PreTrainedTokenizerFast", "TokenizersBackend"])
def test_family_less_tokenizer_class_dispatches_on_model_type(tmp_path, generic_name):
    """Many hub repositories name transformers' generic tokenizer over tokenizer.json: the config's model_type
    picks the family, and the ids equal transformers' on the same files."""
    source = tmp_path / "source"
    tiny_bpe_files(source)
    directory = tmp_path / "gpt2"
    transformers.GPT2Tokenizer(str(source / "vocab.json"), str(source / "merges.txt")).save_pretrained(directory)
    (directory / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 263}))
    settings = json.loads((directory / "tokenizer_config.json").read_text())
    settings["tokenizer_class"] = generic_name
    (directory / "tokenizer_config.json").write_text(json.dumps(settings))
    assert not (directory / "vocab.json").exists()  # only tokenizer.json holds the BPE model

    ours = jaxformers.AutoTokenizer.from_pretrained(directory)
    theirs = transformers.AutoTokenizer.from_pretrained(str(directory))
    assert type(ours) is jaxformers.GPT2Tokenizer
    ours.pad_token = ours.eos_token
    theirs.pad_token = theirs.eos_token
    texts = ["the cat sat on the mat", "hello the cat", "at"]
    got, want = ours(texts, padding=True, return_tensors="np"), theirs(texts, padding=True, return_tensors="np")
    for key in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)

    # The same generic name over a BPE tokenizer.json with a BERT config: refused naming the file and both types.
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 263}))
    with pytest.raises(ValueError, match=r"tokenizer\.json.*BPE.*WordPiece"):
        jaxformers.AutoTokenizer.from_pretrained(directory)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_parity_against_transformers_on_a_directory_transformers_saved(tmp_path, capsys, family):
    """Only model.safetensors (tied weights once, no pytorch_model.bin): the class comes from architectures."""
    if family == "bert":
        transformers_classifier_save(tmp_path / family)
        expected_class, first_output = "BertForSequenceClassification", "logits"
    else:
        config = transformers.GPT2Config(vocab_size=60, n_positions=32, n_embd=16, n_layer=2, n_head=2)
        randomized(transformers.GPT2LMHeadModel(config)).save_pretrained(tmp_path / family)
        expected_class, first_output = "GPT2LMHeadModel", "lm logits"
    assert {path.name for path in (tmp_path / family).glob("*.bin")} == set()
    code = cli.main(["parity", str(tmp_path / family), "--reference", "transformers", "--max-length", "10"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"model: {expected_class}" in out and "reference: transformers" in out and "PARITY OK" in out
    assert any(line.startswith(first_output) for line in out.splitlines()), out


def test_huggingface_hub_floor_covers_the_api_the_downloads_call():
    """file_utils calls get_hf_file_metadata(retry_on_errors=...) (huggingface_hub 1.2+) and the 1.x error
    classes; an older huggingface_hub turns every uncached download into a misleading 'hub unreachable'."""
    import inspect

    import huggingface_hub
    from huggingface_hub import errors

    assert "retry_on_errors" in inspect.signature(huggingface_hub.get_hf_file_metadata).parameters
    for name in ("RemoteEntryNotFoundError", "LocalEntryNotFoundError", "RepositoryNotFoundError",
                 "RevisionNotFoundError", "HfHubHTTPError"):
        assert hasattr(errors, name), name
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    floors = re.findall(r'"huggingface_hub>=(\d+)\.(\d+)', pyproject)
    assert floors and all((int(major), int(minor)) >= (1, 2) for major, minor in floors), floors


def tokenizer_directory(tmp_path: Path, family: str, **settings) -> Path:
    """transformers' own save of a tiny tokenizer (tokenizer.json + tokenizer_config.json), settings merged in."""
    directory = tmp_path / family
    tmp_path.mkdir(parents=True, exist_ok=True)
    if family == "bert":
        (tmp_path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
        transformers.BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=False).save_pretrained(directory)
    else:
        tiny_bpe_files(tmp_path / "bpe")
        bpe = tmp_path / "bpe"
        transformers.GPT2Tokenizer(str(bpe / "vocab.json"), str(bpe / "merges.txt")).save_pretrained(directory)
        settings.setdefault("pad_token", "<|endoftext|>")  # GPT-2 pads only once given a pad token
    path = directory / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **settings}))
    return directory


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_padding_and_truncation_side_come_from_tokenizer_config(tmp_path, family):
    """Decoder repositories often set padding_side "left" in tokenizer_config.json; transformers honours it."""
    directory = tokenizer_directory(tmp_path, family, padding_side="left", truncation_side="left")
    ours = {"bert": jaxformers.BertTokenizer, "gpt2": jaxformers.GPT2Tokenizer}[family].from_pretrained(directory)
    theirs = transformers.AutoTokenizer.from_pretrained(str(directory))
    assert (ours.padding_side, ours.truncation_side) == (theirs.padding_side, theirs.truncation_side) == ("left",) * 2
    texts = ["the cat sat on the mat the cat sat", "the mat", "at"]
    for options in (dict(padding=True), dict(padding=True, truncation=True, max_length=6)):
        got, want = ours(texts, **options), theirs(texts, **options)
        for key in ("input_ids", "attention_mask"):
            assert got[key] == want[key], (options, key)
    # a keyword argument wins over the file; a value neither side is refused naming the file
    assert type(ours).from_pretrained(directory, padding_side="right").padding_side == "right"
    broken = tokenizer_directory(tmp_path / "broken", family, padding_side="middle")
    with pytest.raises(ValueError, match=r"tokenizer_config\.json.*padding_side='middle'"):
        type(ours).from_pretrained(broken)
