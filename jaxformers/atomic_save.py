"""All-or-nothing replacement of a set of files in a directory (a model save), and reads that never mix two saves.

A model directory holds several files that belong together (``config.json``, ``flax_model.msgpack``,
``model.safetensors``...). Renaming each file atomically is not enough: a kill between two renames leaves the
new weights beside the old config. This module makes the whole set switch at one instant, while the files keep
their ordinary names in a plain directory (so ``ls``, transformers and pytorch-pretrained-bert read it as before).

The protocol, for a save into directory ``D`` (every step holds an exclusive ``flock`` on ``D`` itself, so two
saves never interleave; no lock file is left behind):

1. Finish or discard what an earlier, killed save left (see *recovery* below).
2. Write every new file into ``D/.jaxformers-staging/`` and fsync it. Then write ``journal.json`` there: the
   names (and sizes) of the files to install and the names of the old save's files the new one does not
   replace (stale weights that a loader could otherwise pick up), and fsync the staging directory.
3. **Commit point**: rename ``D/.jaxformers-staging`` to ``D/.jaxformers-commit`` (one ``rename(2)``, atomic)
   and fsync ``D``.
4. Move each staged file over its final name (``rename(2)``), delete the stale files, delete ``journal.json``,
   remove ``D/.jaxformers-commit``.

Recovery, run by the next save and by every jaxformers load (holding the lock, so no save is running): a
``.jaxformers-staging`` directory (killed before the commit point) is deleted, so ``D`` holds exactly the old
save; a ``.jaxformers-commit`` directory with a journal (killed after it) is rolled forward by repeating step 4,
which is idempotent, so ``D`` holds exactly the new save; one without a journal (killed while removing it) is
deleted.

The guarantee, precisely: whenever a kill happens, every later jaxformers load of ``D`` sees the complete old
save or the complete new save, never a mix, because loads take a shared lock on ``D`` (waiting for a running
save) and recover first. A reader that does not take the lock (transformers, ``ls``) sees the old set during
steps 1-3 and the new set after step 4; only during step 4 itself (a few renames, milliseconds) or after a kill
inside it, until the next jaxformers load or save of ``D`` finishes the switch, can it see part of each.
Files other than the save's own (``vocab.txt``, ``eval_results.txt``, checkpoints) are never touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: no flock; saves are then only atomic per file (documented in the README)
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("jaxformers")

STAGING_DIR = ".jaxformers-staging"
COMMIT_DIR = ".jaxformers-commit"
JOURNAL_NAME = "journal.json"
# Entries a save may leave in a directory it was killed in; scripts that refuse non-empty output
# directories ignore them (see is_save_internal).
INTERNAL_NAMES = (STAGING_DIR, COMMIT_DIR)

Writer = Callable[[IO[bytes]], None]


def is_save_internal(name: str) -> bool:
    """Whether a directory entry is bookkeeping of an interrupted save (or of ``atomic_write``), not a result."""
    return name in INTERNAL_NAMES or (name.startswith(".") and name.endswith(".tmp"))


def _fsync_directory(directory: Path) -> None:
    # Makes the renames and creations inside `directory` durable across a power loss (a kill does not need it).
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def directory_lock(directory: str | os.PathLike, *, exclusive: bool) -> Iterator[int | None]:
    """Hold ``flock`` on the directory itself (shared for reading, exclusive for saving) for the block.

    Locking the directory's own file descriptor needs no lock file, works on a read-only directory, and is
    released by the kernel when the process dies, so a killed save never leaves a stale lock.
    """
    if fcntl is None:
        yield None
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process saving to %s", directory)
            fcntl.flock(fd, mode)
        except OSError as error:  # a filesystem without flock (some FUSE/network mounts)
            logger.warning("cannot lock %s (%s): concurrent saves to it are not serialised", directory, error)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def recover(directory: str | os.PathLike) -> str | None:
    """Finish (roll forward) or discard (roll back) a save killed in ``directory``; the caller holds the
    exclusive lock. Returns ``"rolled back"``, ``"rolled forward"`` or None when there was nothing to do."""
    directory = Path(directory)
    for name in INTERNAL_NAMES:
        if (directory / name).is_symlink():  # ours are real directories; a link could reach other files
            raise OSError(f"refusing to recover {str(directory / name)!r}: it is a symbolic link")
    outcome = None
    staging = directory / STAGING_DIR
    if staging.exists():
        shutil.rmtree(staging)
        outcome = "rolled back"
    commit = directory / COMMIT_DIR
    if commit.exists():
        if (commit / JOURNAL_NAME).exists():
            _roll_forward(directory)
            outcome = "rolled forward"
        else:  # killed while removing the finished commit directory: the switch itself was complete
            shutil.rmtree(commit)
    if outcome:
        logger.warning("%s: finished an interrupted save (%s)", directory, outcome)
    return outcome


def _roll_forward(directory: Path) -> None:
    """Step 4 of the protocol; every action is idempotent, so a kill inside it is finished by running it again."""
    commit = directory / COMMIT_DIR
    journal_path = commit / JOURNAL_NAME
    try:
        journal = json.loads(journal_path.read_text(encoding="utf-8"))
        install, remove = [entry["name"] for entry in journal["install"]], list(journal["remove"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OSError(f"cannot finish the interrupted save in {str(directory)!r}: unreadable journal "
                      f"{str(journal_path)!r} ({error})") from error
    # Loads run this: a planted journal must not move or delete anything outside the directory's own files.
    bad = [name for name in install + remove if not _is_plain_name(name)]
    if bad:
        raise OSError(f"refusing the journal {str(journal_path)!r}: {bad[0]!r} is not a plain file name")
    for name in install:
        staged = commit / name
        if staged.exists():  # absent: installed before the kill
            os.replace(staged, directory / name)
    _fsync_directory(directory)
    for name in remove:
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    journal_path.unlink()
    shutil.rmtree(commit)
    _fsync_directory(directory)


def _is_plain_name(name: object) -> bool:
    """A file name directly inside the directory: no separator, not hidden, not ``.``/``..``."""
    return (isinstance(name, str) and bool(name) and not name.startswith(".") and "/" not in name
            and "\\" not in name and "\0" not in name)


def replace_files(directory: str | os.PathLike, writers: Mapping[str, Writer],
                  stale: Callable[[str], bool] = lambda name: False) -> None:
    """Replace a set of files in ``directory`` all at once (see the module docstring for the protocol).

    ``writers`` maps each file name to a function writing its bytes into an open binary stream. Existing
    files for which ``stale(name)`` is true and that are not in ``writers`` are deleted in the same switch.
    An exception while writing leaves ``directory`` as it was.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"cannot save into {str(directory)!r}: it is a file, not a directory")
    for name in writers:
        if not _is_plain_name(name) or name == JOURNAL_NAME:
            raise ValueError(f"invalid file name for a save: {name!r}")
    directory.mkdir(parents=True, exist_ok=True)
    with directory_lock(directory, exclusive=True):
        recover(directory)
        staging = directory / STAGING_DIR
        os.mkdir(staging)  # mode from the umask, like the files
        try:
            installed = [_write_staged(staging / name, write) for name, write in writers.items()]
            removed = sorted(entry.name for entry in directory.iterdir()
                             if entry.name not in writers and not is_save_internal(entry.name)
                             and entry.is_file() and stale(entry.name))
            _write_journal(staging, installed, removed)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        os.rename(staging, directory / COMMIT_DIR)  # the commit point
        _fsync_directory(directory)
        _roll_forward(directory)


def _write_staged(path: Path, write: Writer) -> dict[str, object]:
    # O_EXCL with mode 0666: the kernel applies the umask (files end up 0644 under umask 022).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    with os.fdopen(fd, "wb") as stream:
        write(stream)
        stream.flush()
        os.fsync(stream.fileno())
    return {"name": path.name, "size": path.stat().st_size}


def _write_journal(staging: Path, installed: Iterable[dict[str, object]], removed: list[str]) -> None:
    journal = {"format": "jaxformers-save-journal", "version": 1, "install": list(installed), "remove": removed}
    _write_staged(staging / JOURNAL_NAME, lambda stream: stream.write(json.dumps(journal, indent=1).encode()))
    _fsync_directory(staging)


@contextlib.contextmanager
def consistent_reads(directory: str | os.PathLike) -> Iterator[None]:
    """Hold a shared lock on ``directory`` for the block, after finishing any interrupted save in it.

    Inside the block no save can switch files, so reading several files (config, then weights) gives one
    save's files. A directory that cannot be locked or written (a read-only mount) is read as it is, unless an
    interrupted save needs finishing, which is an error naming the directory.
    """
    directory = Path(directory)
    if fcntl is None or not directory.is_dir():
        yield
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:  # a filesystem without flock: read as it is (saves there warn that they cannot lock)
            yield
            return
        # Holding the lock, no save is running: what a save left behind belongs to a killed one.
        while any((directory / name).exists() for name in INTERNAL_NAMES):
            # Upgrading is not atomic: another process may recover first; recover() then finds nothing.
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                recover(directory)
            except PermissionError as error:
                if (directory / COMMIT_DIR).exists():
                    raise OSError(f"{str(directory)!r} holds a save that was interrupted while switching files; "
                                  f"load it once with write access to finish it ({error})") from error
                fcntl.flock(fd, fcntl.LOCK_SH)  # only a discarded staging directory: harmless to read past
                break
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)
