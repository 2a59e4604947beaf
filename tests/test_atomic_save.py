"""All-or-nothing saves: kills at every step of ``save_pretrained`` over an existing save, two processes saving at
once, and file modes that follow the umask."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxformers
from jaxformers import atomic_save
from jaxformers.modeling_utils import per_layer_params
from jaxformers.saving import _WEIGHT_FILE

REPO = Path(__file__).resolve().parents[1]
SIZES = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24, max_position_embeddings=32)

# A child process that replaces the files of `target` with those of `source` through atomic_save.replace_files
# (the switch save_pretrained makes) and SIGKILLs itself at its `kill_at`-th filesystem event: each open, mkdir,
# rename, replace, unlink, rmdir, fsync, and the middle of each file's bytes. Counting events rather than sleeping
# makes every kill point reproducible on any machine. It needs only the standard library, so it starts fast.
KILL_CHILD = r"""
import importlib.util, json, os, re, signal, sys
spec = json.loads(sys.argv[1])
module_spec = importlib.util.spec_from_file_location("atomic_save", spec["module"])
atomic_save = importlib.util.module_from_spec(module_spec)
module_spec.loader.exec_module(atomic_save)
events = 0
def event():
    global events
    events += 1
    if events == spec["kill_at"]:
        os.kill(os.getpid(), signal.SIGKILL)
def hooked(function):
    def wrapper(*args, **kwargs):
        event()
        result = function(*args, **kwargs)
        event()
        return result
    return wrapper
for name in ("open", "mkdir", "rename", "replace", "unlink", "rmdir", "fsync"):
    setattr(os, name, hooked(getattr(os, name)))
def writer(data):
    def write(stream):
        stream.write(data[: len(data) // 2])
        stream.flush()
        event()
        stream.write(data[len(data) // 2:])
    return write
files = {}
for name in sorted(os.listdir(spec["source"])):
    with open(os.path.join(spec["source"], name), "rb") as reader:
        files[name] = writer(reader.read())
pattern = re.compile(spec["stale"])
atomic_save.replace_files(spec["target"], files, stale=lambda name: bool(pattern.match(name)))
print(events)
"""


def run_kill_child(target: Path, source: Path, kill_at: int) -> subprocess.CompletedProcess:
    spec = {"module": str(REPO / "jaxformers" / "atomic_save.py"), "target": str(target), "source": str(source),
            "stale": _WEIGHT_FILE.pattern, "kill_at": kill_at}
    # -I -S: no site packages, no user paths; the child needs only the standard library.
    return subprocess.run([sys.executable, "-I", "-S", "-c", KILL_CHILD, json.dumps(spec)], capture_output=True,
                          text=True, timeout=120, check=False)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def params_of(model) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in per_layer_params(model).items()}


@pytest.fixture(scope="module")
def two_saves(tmp_path_factory):
    """An old save (msgpack + one safetensors file + pytorch_model.bin) and a different new one (another model,
    another config, sharded safetensors): the switch must install, replace and delete files."""
    root = tmp_path_factory.mktemp("saves")
    old = jaxformers.BertForSequenceClassification(jaxformers.BertConfig(40, **SIZES), num_labels=2, seed=1)
    new = jaxformers.BertForSequenceClassification(
        jaxformers.BertConfig(40, **SIZES, hidden_dropout_prob=0.25), num_labels=2, seed=2)
    old.save_pretrained(root / "old", safetensors=True, pytorch=True)
    new.save_pretrained(root / "new", max_shard_size="4kB")
    return root, params_of(old), params_of(new)


def assert_old_or_new(directory: Path, root: Path, old_params, new_params) -> str:
    """Load through jaxformers (which finishes an interrupted switch) and check the result is one whole save."""
    loaded = jaxformers.BertForSequenceClassification.from_pretrained(directory, num_labels=2)
    files = snapshot(directory)
    which = "old" if files == snapshot(root / "old") else "new" if files == snapshot(root / "new") else None
    assert which, f"mixed directory: {sorted(files)}"
    expected = old_params if which == "old" else new_params
    got = params_of(loaded)
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert loaded.config.hidden_dropout_prob == (0.1 if which == "old" else 0.25)
    return which


def test_a_kill_at_any_moment_leaves_the_old_or_the_new_save(tmp_path, two_saves):
    root, old_params, new_params = two_saves
    dry = tmp_path / "dry"
    shutil.copytree(root / "old", dry)
    completed = run_kill_child(dry, root / "new", kill_at=0)
    assert completed.returncode == 0, completed.stderr
    total = int(completed.stdout)
    assert snapshot(dry) == snapshot(root / "new")
    # Every event if there are few, else 40 spread over the whole save, the first and last included.
    kill_points = sorted(set(np.linspace(1, total, num=min(total, 40)).round().astype(int).tolist()))
    outcomes = []
    for kill_at in kill_points:
        target = tmp_path / f"kill{kill_at}"
        shutil.copytree(root / "old", target)
        completed = run_kill_child(target, root / "new", kill_at)
        assert completed.returncode == -signal.SIGKILL, (kill_at, completed.stderr)
        outcomes.append(assert_old_or_new(target, root, old_params, new_params))
        assert not [name for name in os.listdir(target) if name.startswith(".")]  # recovery cleaned up
    # Kills before the commit point roll back, kills after it roll forward: both paths were exercised.
    assert outcomes[0] == "old" and outcomes[-1] == "new", outcomes
    assert outcomes == sorted(outcomes, key=lambda which: which == "new"), "old, then new, never back"


@pytest.mark.slow  # a subprocess importing jax: about 10 s alone, more under load
def test_real_save_pretrained_killed_after_the_commit_point(tmp_path, two_saves):
    """The same switch inside save_pretrained itself: killed right after the commit rename, the next load
    finishes it."""
    root, old_params, new_params = two_saves
    target = tmp_path / "model"
    shutil.copytree(root / "old", target)
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(REPO)!r})
import jaxformers
from jaxformers import atomic_save
real_rename = os.rename
def rename_then_die(source, destination):
    real_rename(source, destination)
    if str(destination).endswith(atomic_save.COMMIT_DIR):
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = rename_then_die
config = jaxformers.BertConfig(40, **{SIZES!r}, hidden_dropout_prob=0.25)
model = jaxformers.BertForSequenceClassification(config, num_labels=2, seed=2)
model.save_pretrained({str(target)!r}, max_shard_size="4kB")
"""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                               env=env, check=False)
    assert completed.returncode == -signal.SIGKILL, completed.stderr[-2000:]
    assert (target / atomic_save.COMMIT_DIR).is_dir()
    assert assert_old_or_new(target, root, old_params, new_params) == "new"


TWO_SAVERS = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import jaxformers
from jaxformers import atomic_save
role, target, seed, dropout = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
config = jaxformers.BertConfig(40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=24, max_position_embeddings=32, hidden_dropout_prob=dropout)
model = jaxformers.BertForSequenceClassification(config, num_labels=2, seed=seed)
real_write = atomic_save._write_staged

def blocked_waiters():
    # /proc/locks lists processes blocked on a lock with a "->" marker, and the inode (MAJOR:MINOR:INODE).
    inode = f":{os.stat(target).st_ino} "
    with open("/proc/locks") as locks:
        return sum(1 for line in locks if "->" in line and "FLOCK" in line and inode in line)

def write_slowly(path, write):
    # The first saver holds the lock in the middle of its staging until the second is blocked on it.
    if role == "first" and path.name == "flax_model.msgpack":
        open(os.path.join(os.path.dirname(target), "first-is-staging"), "w").close()
        deadline = time.monotonic() + 120
        while blocked_waiters() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        print("second saver seen waiting" if blocked_waiters() else "no waiter seen")
    return real_write(path, write)

atomic_save._write_staged = write_slowly
if role == "second":
    marker = os.path.join(os.path.dirname(target), "first-is-staging")
    while not os.path.exists(marker):
        time.sleep(0.01)
model.save_pretrained(target, pytorch=True)
print("saved", role)
"""


@pytest.mark.slow  # two subprocesses importing jax
@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks to see the waiting saver")
def test_two_processes_saving_at_once_are_serialised(tmp_path):
    target = tmp_path / "model"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    processes = [subprocess.Popen([sys.executable, "-c", TWO_SAVERS, str(REPO), role, str(target), str(seed),
                                   str(dropout)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for role, seed, dropout in (("first", 1, 0.1), ("second", 2, 0.25))]
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-2000:]
    assert "second saver seen waiting" in outputs[0][0]  # the two saves really overlapped
    # The second saver waited for the first, then replaced its save entirely.
    loaded = jaxformers.BertForSequenceClassification.from_pretrained(target, num_labels=2, strict=True)
    expected = jaxformers.BertForSequenceClassification(
        jaxformers.BertConfig(40, **SIZES, hidden_dropout_prob=0.25), num_labels=2, seed=2)
    assert loaded.config.hidden_dropout_prob == 0.25
    for key, value in params_of(expected).items():
        np.testing.assert_array_equal(params_of(loaded)[key], value, err_msg=key)
    from jaxformers.modeling_utils import read_torch_bin

    torch_bin = read_torch_bin(target / "pytorch_model.bin")
    np.testing.assert_array_equal(torch_bin["classifier.weight"], params_of(expected)["classifier.weight"].T)
    assert sorted(os.listdir(target)) == ["config.json", "flax_model.msgpack", "pytorch_model.bin"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_files_follow_the_umask(tmp_path, umask, mode):
    from jaxformers.file_utils import atomic_write

    model = jaxformers.BertModel(jaxformers.BertConfig(40, **SIZES))
    previous = os.umask(umask)
    try:
        model.save_pretrained(tmp_path / "model", safetensors=True, pytorch=True)
        with atomic_write(tmp_path / "cache-entry", "wb") as stream:
            stream.write(b"x")
    finally:
        os.umask(previous)
    files = [*sorted((tmp_path / "model").iterdir()), tmp_path / "cache-entry"]
    assert len(files) == 5
    for path in files:
        assert path.stat().st_mode & 0o777 == mode, path.name


def test_recovery_rolls_back_before_the_commit_and_forward_after(tmp_path):
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / "config.json").write_text("old config")
    (directory / "pytorch_model.bin").write_text("old weights")
    # Killed while staging: the staged files are discarded.
    (directory / atomic_save.STAGING_DIR).mkdir()
    (directory / atomic_save.STAGING_DIR / "config.json").write_text("half")
    assert atomic_save.recover(directory) == "rolled back"
    assert snapshot(directory) == {"config.json": b"old config", "pytorch_model.bin": b"old weights"}
    # Killed after the commit, one file already moved: the rest is installed and the stale file removed.
    commit = directory / atomic_save.COMMIT_DIR
    commit.mkdir()
    (commit / "flax_model.msgpack").write_text("new weights")
    (directory / "config.json").write_text("new config")
    journal = {"install": [{"name": "config.json"}, {"name": "flax_model.msgpack"}], "remove": ["pytorch_model.bin"]}
    (commit / atomic_save.JOURNAL_NAME).write_text(json.dumps(journal))
    assert atomic_save.recover(directory) == "rolled forward"
    assert snapshot(directory) == {"config.json": b"new config", "flax_model.msgpack": b"new weights"}
    assert atomic_save.recover(directory) is None
    # A journal that cannot be read is an error naming it, not a guess.
    commit.mkdir()
    (commit / atomic_save.JOURNAL_NAME).write_text("{not json")
    with pytest.raises(OSError, match=r"unreadable journal .*journal\.json"):
        atomic_save.recover(directory)
    # A planted journal (loads run recovery) cannot reach outside the directory.
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    (commit / atomic_save.JOURNAL_NAME).write_text(json.dumps({"install": [], "remove": ["../precious.txt"]}))
    with pytest.raises(OSError, match=r"refusing the journal .*'\.\./precious\.txt' is not a plain file name"):
        atomic_save.recover(directory)
    assert outside.read_text() == "keep me"
    shutil.rmtree(commit)
    commit.symlink_to(tmp_path)
    with pytest.raises(OSError, match="symbolic link"):
        atomic_save.recover(directory)
    assert outside.read_text() == "keep me"


def test_a_failed_save_leaves_the_directory_untouched(tmp_path):
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / "config.json").write_text("old")

    def broken(stream):
        stream.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save.replace_files(directory, {"config.json": lambda s: s.write(b"new"), "model.safetensors": broken})
    assert snapshot(directory) == {"config.json": b"old"}
    with pytest.raises(NotADirectoryError, match="is a file"):
        atomic_save.replace_files(directory / "config.json", {"x": lambda s: None})
    with pytest.raises(ValueError, match="invalid file name"):
        atomic_save.replace_files(directory, {"../escape": lambda s: None})


def test_output_dir_claims_accept_an_interrupted_run_and_refuse_results(tmp_path):
    from jaxformers.training import claim_output_dir, release_output_dir
    from jaxformers.training.checkpoint import RUN_MARKER

    fresh = tmp_path / "fresh"
    claim_output_dir(fresh, "test")
    assert (fresh / RUN_MARKER).is_file()
    # Killed during the final save: a partial model, the save's staging directory, the marker. Accepted.
    (fresh / "config.json").write_text("{}")
    (fresh / atomic_save.STAGING_DIR).mkdir()
    claim_output_dir(fresh, "test")
    release_output_dir(fresh)
    assert not (fresh / RUN_MARKER).exists()
    # Finished: its results are protected.
    with pytest.raises(ValueError, match="already exists and is not empty"):
        claim_output_dir(fresh, "test")
    # An interrupted run from before the marker existed: only checkpoints. Accepted.
    old_style = tmp_path / "old"
    (old_style / "checkpoints").mkdir(parents=True)
    claim_output_dir(old_style)
    # Someone else's files: refused.
    other = tmp_path / "other"
    other.mkdir()
    (other / "eval_results.txt").write_text("acc = 1.0\n")
    with pytest.raises(ValueError, match="already exists and is not empty"):
        claim_output_dir(other)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_cache_entries_follow_the_umask(tmp_path, monkeypatch, umask, mode):
    """Hub downloads (the Hugging Face cache layout) and plain-URL downloads alike."""
    import functools
    import http.server
    import threading

    from local_hub import LocalHub

    from jaxformers.file_utils import cached_path, hub_file

    for variable in ("JAXFORMERS_CACHE", "JAXFORMERS_ENDPOINT", "JAXFORMERS_OFFLINE", "HF_HUB_OFFLINE",
                     "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    repo = tmp_path / "hub" / "some-org" / "tiny"
    repo.mkdir(parents=True)
    (repo / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(repo))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    previous = os.umask(umask)
    try:
        with LocalHub(tmp_path / "hub") as hub:
            monkeypatch.setenv("HF_ENDPOINT", hub.url)
            from_hub = Path(hub_file("some-org/tiny", "vocab.txt")).resolve()  # the blob behind the snapshot link
        plain = Path(cached_path(f"http://127.0.0.1:{server.server_address[1]}/vocab.txt"))
    finally:
        os.umask(previous)
        server.shutdown()
        server.server_close()
    assert from_hub.read_text() == "[PAD]\n[UNK]\n"
    assert from_hub.stat().st_mode & 0o777 == mode
    assert plain.stat().st_mode & 0o777 == mode
