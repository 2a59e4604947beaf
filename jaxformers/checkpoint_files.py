"""Checkpoint files on disk: every weight format jaxformers reads, and where a ``from_pretrained`` name's files are.

* Readers return ``{key: numpy array}``: ``pytorch_model.bin`` (read without running pickled code),
  ``model.safetensors``, ``flax_model.msgpack`` (ours, or Hugging Face's Flax layout converted to PyTorch names and
  layouts), and sharded checkpoints through their ``*.index.json``. The writers are in :mod:`jaxformers.saving`.
* :class:`resolved_checkpoint` turns a shortcut name, hub repository id, directory or model archive into the
  directory holding the config and the weights file to read (downloads through the hub cache, archives
  extracted safely into a temporary directory that is removed afterwards).

Nothing here knows about models beyond the few class declarations the resolver reads (archive map, legacy
config names); the conversion between these arrays and a model is :mod:`jaxformers.checkpoint_io`.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .atomic_save import consistent_reads
from .file_utils import SHORTCUT_REPOS, HubFileMissing, HubOptions, cached_path, hub_file, hub_repo_for, is_remote

logger = logging.getLogger("jaxformers")

CONFIG_NAMES = ("config.json",)
FLAX_WEIGHTS_NAME = "flax_model.msgpack"
SAFETENSORS_NAME = "model.safetensors"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
TORCH_INDEX_NAME = "pytorch_model.bin.index.json"
# Top-level entry of the flax_model.msgpack jaxformers writes: tells it apart from Hugging Face's Flax files,
# which share the file name but hold kernel/scale/embedding leaves in Flax layouts.
MSGPACK_MARKER_KEY = "__jaxformers__"
MSGPACK_MARKER = "jaxformers-msgpack-v1"
CONFIG_NAME = "config.json"


# Preference when a directory or hub repository holds several: safetensors (no pickle, memory-mapped), our own
# msgpack, then PyTorch pickles; a sharded form comes right after its single-file form.
WEIGHT_NAMES_IN_ORDER = (
    SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME, FLAX_WEIGHTS_NAME, TORCH_WEIGHTS_NAME, TORCH_INDEX_NAME,
)


# ------------------------------------------------------------------------------------------------------------------
# Reading weight files into {key: numpy array}


def _torch_to_numpy(tensor: Any) -> np.ndarray:
    import torch

    if tensor.dtype == torch.bfloat16:
        return tensor.detach().float().numpy().astype(jnp.bfloat16)
    return tensor.detach().cpu().numpy()


def read_torch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A ``pytorch_model.bin`` (zip or legacy ``torch.save`` layout) as numpy arrays, read by
    :mod:`jaxformers.safe_pickle`: no pickled code runs, sizes are checked before anything is allocated (torch's
    own ``weights_only`` loader allocates what a corrupt header claims), and torch is not needed. Every entry
    must be a tensor (ValueError naming it); bfloat16 stays bfloat16 (ml_dtypes)."""
    from .safe_pickle import load_pickled_data

    path = str(path)
    try:
        state = load_pickled_data(path)
    except pickle.UnpicklingError as error:  # unsafe, corrupt or oversized; the message names the file
        raise OSError(f"cannot read PyTorch weights {path!r} safely: {error}") from error
    if not isinstance(state, Mapping):
        raise ValueError(f"{path!r} holds a {type(state).__name__}, expected a state dict of tensors")
    arrays: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{path!r}: entry {key!r} is a {type(value).__name__}, not a tensor")
        arrays[key] = value
    return arrays


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A ``.safetensors`` file as numpy arrays; a file safetensors cannot parse is an OSError naming it."""
    from safetensors import safe_open

    arrays: dict[str, np.ndarray] = {}
    try:
        with safe_open(str(path), framework="numpy") as reader:
            for key in reader.keys():
                arrays[key] = reader.get_tensor(key)
    except MemoryError:
        raise
    except Exception as error:
        raise OSError(f"cannot read safetensors file {str(path)!r}: {error}") from error
    return arrays


def read_msgpack(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A flax msgpack file as ``{dotted key: array}`` (nested dicts flattened); no layout conversion."""
    from flax import serialization

    with open(path, "rb") as reader:
        try:
            tree = serialization.msgpack_restore(reader.read())
        except MemoryError:
            raise
        except Exception as error:
            raise OSError(f"cannot read flax msgpack file {str(path)!r}: {error}") from error
    if not isinstance(tree, Mapping):
        raise ValueError(f"{str(path)!r} holds a {type(tree).__name__} at the top level, expected a dict of arrays")
    try:
        return flatten_tree(tree)
    except ValueError as error:
        raise ValueError(f"{str(path)!r}: {error}") from None


def flatten_tree(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts of arrays -> ``{"a.b.c": array}``; any other leaf is a ValueError naming its key."""
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_tree(value, name + "."))
        elif isinstance(value, (np.ndarray, np.generic, jax.Array, int, float, str)):  # str: the format marker
            flat[name] = np.asarray(value)
        else:
            raise ValueError(f"entry {name!r} is a {type(value).__name__}, not an array")
    return flat


def unflatten_keys(flat: Mapping[str, np.ndarray]) -> dict:
    """``{"a.b.c": array}`` -> nested dicts (the inverse of :func:`flatten_tree`)."""
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


# ------------------------------------------------------------------------------------------------------------------
# Hugging Face's layouts: its Flax msgpack files, sharded checkpoints

# Leaf names of Hugging Face's Flax parameters (Dense kernel, LayerNorm scale, Embed embedding).
_HF_FLAX_LEAVES = ("kernel", "scale", "embedding")


def jaxformers_msgpack_tree(flat: Mapping[str, np.ndarray]) -> dict:
    """The tree to write as flax_model.msgpack: our per-layer arrays plus the marker entry saying the file is in
    jaxformers' layout (PyTorch key names, our shapes), never Hugging Face Flax's."""
    return {**unflatten_keys(flat), MSGPACK_MARKER_KEY: MSGPACK_MARKER}


def read_msgpack_with_layout(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """A flax_model.msgpack as ``(arrays, layout)``: ours (marked, or unmarked from before the marker existed)
    as ``"ours"``, Hugging Face's Flax files converted to PyTorch names and layouts as ``"torch"``."""
    flat = read_msgpack(path)
    marker = flat.pop(MSGPACK_MARKER_KEY, None)
    if marker is not None:
        if str(marker) != MSGPACK_MARKER:
            raise ValueError(f"{str(path)!r} is a jaxformers msgpack of format {str(marker)!r}; this version reads "
                             f"{MSGPACK_MARKER!r} (upgrade jaxformers)")
        return flat, "ours"
    if any(key.rpartition(".")[2] in _HF_FLAX_LEAVES for key in flat):
        return hf_flax_to_torch(flat), "torch"
    return flat, "ours"


def hf_flax_to_torch(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Hugging Face Flax names and layouts -> PyTorch's (the inverse of transformers' PyTorch->Flax rules).

    ``kernel`` is a Dense weight, stored transposed from PyTorch's (nn.Linear [out, in] -> kernel [in, out]; GPT-2's
    Conv1D [in, out] -> its Flax kernel [out, in]), and a 4-d kernel is a convolution ([H, W, in, out] vs PyTorch's
    [out, in, H, W]); ``scale`` is a LayerNorm weight and ``embedding`` an embedding table, both unchanged."""
    torch_arrays: dict[str, np.ndarray] = {}
    for key, value in flat.items():
        parent, _, leaf = key.rpartition(".")
        array = np.asarray(value)
        if leaf == "kernel" and array.ndim == 2:
            array = array.T
        elif leaf == "kernel" and array.ndim == 4:
            array = array.transpose(3, 2, 0, 1)
        if leaf in _HF_FLAX_LEAVES:
            key = f"{parent}.weight" if parent else "weight"
        torch_arrays[key] = array
    return torch_arrays


def read_sharded(index_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A sharded checkpoint (``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``): the index's
    ``weight_map`` names, per key, the shard file beside the index that holds it."""
    index_path = Path(index_path)
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OSError(f"cannot read the shard index {str(index_path)!r}: {error!r}") from error
    if not isinstance(weight_map, Mapping) or not all(isinstance(shard, str) for shard in weight_map.values()):
        raise ValueError(f"{str(index_path)!r}: weight_map must map each key to a shard file name")
    arrays: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        if os.path.basename(shard) != shard or shard in ("", ".", ".."):
            raise ValueError(f"{str(index_path)!r} names shard {shard!r}, which is not a file beside the index")
        if not (index_path.parent / shard).is_file():
            raise FileNotFoundError(f"shard {str(index_path.parent / shard)!r} named by {str(index_path)!r} is missing")
        reader = read_safetensors if shard.endswith(".safetensors") else read_torch_bin
        arrays.update(reader(index_path.parent / shard))
    absent = sorted(key for key in weight_map if key not in arrays)
    if absent:
        raise ValueError(f"{str(index_path)!r} lists keys its shards do not hold: {absent[:5]}")
    return arrays


def _shard_names(index_path: str | os.PathLike) -> list[str]:
    try:
        weight_map = json.loads(Path(index_path).read_text(encoding="utf-8"))["weight_map"]
        return sorted({shard for shard in weight_map.values() if isinstance(shard, str) and "/" not in shard})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []  # read_sharded reports what is wrong with the index, naming the file


def read_weights(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """Any weights file from_pretrained finds, as ``(arrays, layout)`` (see `PreTrainedModel.load_state_dict`)."""
    name = os.path.basename(path)
    if name == FLAX_WEIGHTS_NAME:
        return read_msgpack_with_layout(path)
    if name.endswith(".index.json"):
        return read_sharded(path), "torch"
    if name.endswith(".safetensors"):
        return read_safetensors(path), "torch"
    return read_torch_bin(path), "torch"


def describe_layout(keys: list[str]) -> str:
    """A guess, for error messages, at what a weights file holds, from its key names."""
    leaves = {key.rpartition(".")[2] for key in keys}
    sample = ", ".join(sorted(keys)[:3])
    if leaves & set(_HF_FLAX_LEAVES):
        return f"Hugging Face's Flax layout (kernel/scale/embedding names: {sample})"
    if any("/" in key for key in keys):
        return f"a TensorFlow checkpoint's names ({sample}; pass from_tf=True with a TF checkpoint directory)"
    families = (("BERT", ("bert.", "embeddings.word_embeddings", "encoder.layer.")),
                ("GPT-2", ("wte.", "transformer.wte.", "h.0.attn.c_attn")),
                ("OpenAI GPT", ("tokens_embed.", "transformer.tokens_embed.")),
                ("Transformer-XL", ("word_emb.", "transformer.word_emb.", "layers.0.dec_attn")))
    for family, markers in families:
        if any(marker in key for key in keys for marker in markers):
            return f"{family} PyTorch names ({sample})"
    return f"unrecognised names ({sample})"



# ------------------------------------------------------------------------------------------------------------------
# Model archives and from_pretrained names


# What a model archive (.tar.gz) may hold: a few regular files (config, weights, vocabulary).
ARCHIVE_MAX_MEMBERS = 1000
ARCHIVE_SIZE_FACTOR = 8  # total uncompressed size <= 8 x the archive's size + 16 MiB (weights barely compress)
ARCHIVE_SIZE_SLACK = 16 << 20


def extract_model_archive(archive: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Extract a model archive, refusing (ValueError naming archive and member) links, special files, paths
    leaving `destination`, more than ARCHIVE_MAX_MEMBERS members, or members expanding past
    ``ARCHIVE_SIZE_FACTOR x archive size + ARCHIVE_SIZE_SLACK`` bytes. Headers are checked before any extraction."""
    archive = str(archive)
    limit = ARCHIVE_SIZE_FACTOR * os.path.getsize(archive) + ARCHIVE_SIZE_SLACK
    try:
        with tarfile.open(archive) as tar:
            members, total = [], 0
            for member in tar:  # headers one at a time: stops at the first offending member
                name = member.name
                if len(members) >= ARCHIVE_MAX_MEMBERS:
                    raise ValueError(f"refusing archive {archive!r}: more than {ARCHIVE_MAX_MEMBERS} members")
                if not (member.isfile() or member.isdir()):
                    raise ValueError(f"refusing archive {archive!r}: member {name!r} is a link or special file")
                if name.startswith("/") or ".." in Path(name).parts:
                    raise ValueError(f"refusing archive {archive!r}: member {name!r} points outside the archive")
                total += member.size
                if total > limit:
                    raise ValueError(f"refusing archive {archive!r}: member {name!r} takes its contents past "
                                     f"{limit} bytes ({ARCHIVE_SIZE_FACTOR} x the archive's size + "
                                     f"{ARCHIVE_SIZE_SLACK >> 20} MiB)")
                members.append(member)
            tar.extractall(destination, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:  # corrupt or truncated archive
        raise OSError(f"cannot extract model archive {archive!r}: {error}") from error


class resolved_checkpoint:
    """Context manager yielding (directory with the config, weights file path or None); cleans extracted archives
    and, for a local directory, holds off saves into it until exit (:func:`jaxformers.atomic_save.consistent_reads`).

    ``cls`` is the model class: its ``pretrained_model_archive_map`` (shortcut names), ``legacy_config_names`` and
    name for messages are all that is read from it. With ``has_state_dict`` no weights file is looked for; with
    ``from_tf`` the TensorFlow checkpoint prefix is returned instead."""

    def __init__(self, cls: type, name_or_path: str | os.PathLike, hub: HubOptions, from_tf: bool,
                 has_state_dict: bool):
        self.cls, self.name, self.hub, self.cache_dir = cls, str(name_or_path), hub, hub.cache_dir
        self.from_tf, self.has_state_dict = from_tf, has_state_dict
        self._temporary: str | None = None
        self._reading: Any = None  # consistent_reads() of a local directory, held until __exit__

    def __enter__(self) -> tuple[Path, str | None]:
        name = self.name
        repo = self.hub_repo()
        if repo is not None:
            return self._download_repo(repo)
        if is_remote(name) or name.endswith((".tar.gz", ".tgz", ".tar")):
            archive = cached_path(name, self.cache_dir)
            self._temporary = tempfile.mkdtemp(prefix="jaxformers-")
            try:
                extract_model_archive(archive, self._temporary)
            except BaseException:
                self.__exit__(None, None, None)  # __exit__ does not run when __enter__ raises
                raise
            directory = Path(self._temporary)
            children = [child for child in directory.iterdir() if child.is_dir()]
            if not any(directory.glob("*.json")) and len(children) == 1:
                directory = children[0]
        else:
            directory = Path(name).expanduser()
            if not directory.is_dir():
                known = ", ".join(sorted(self.cls.pretrained_model_archive_map)) or "none"
                raise FileNotFoundError(
                    f"{name!r} is neither a directory, an archive, a hub repository id, nor a shortcut name of "
                    f"{self.cls.__name__} "
                    f"(known shortcut names: {known})"
                )
            # Until __exit__: no save can switch files under us, and an interrupted one is finished first.
            self._reading = consistent_reads(directory)
            self._reading.__enter__()
        try:
            return directory, self._weights_in(directory)
        except BaseException:
            self.__exit__(None, None, None)  # __exit__ does not run when __enter__ raises
            raise

    def _weights_in(self, directory: Path) -> str | None:
        if self.has_state_dict:
            return None
        if self.from_tf:
            from .tf_checkpoints import find_tf_checkpoint

            return find_tf_checkpoint(directory)
        for weights_name in WEIGHT_NAMES_IN_ORDER:
            if (directory / weights_name).is_file():
                return str(directory / weights_name)
        raise FileNotFoundError(
            f"no weights in {str(directory)!r}: expected one of {', '.join(WEIGHT_NAMES_IN_ORDER)} "
            f"(or from_tf=True for a TensorFlow checkpoint)"
        )

    def hub_repo(self) -> str | None:
        """The hub repository the name stands for (shortcut names mapped to today's repositories), if any."""
        mapped = self.cls.pretrained_model_archive_map.get(self.name)
        if mapped is not None:
            return SHORTCUT_REPOS.get(mapped, mapped)
        return hub_repo_for(self.name)

    def _download_repo(self, repo: str) -> tuple[Path, str | None]:
        """Config and weights of a hub repository, from the hub cache (fetched when needed). All files come from
        one snapshot directory of the cache, the config's."""
        if self.from_tf:
            raise ValueError(f"from_tf=True reads a TensorFlow checkpoint directory, and {self.name!r} is a hub "
                             f"repository: download its TF checkpoint and pass that directory")
        config = self._first_hub_file(repo, CONFIG_NAMES + self.cls.legacy_config_names, "config")
        if self.has_state_dict:
            return Path(config).parent, None
        weights = self._first_hub_file(repo, WEIGHT_NAMES_IN_ORDER, "weights")
        if weights.endswith(".index.json"):
            for shard in _shard_names(weights):
                hub_file(repo, shard, self.hub)
        return Path(config).parent, weights

    def _first_hub_file(self, repo: str, names: tuple[str, ...], what: str) -> str:
        errors = []
        for name in names:
            try:
                return hub_file(repo, name, self.hub)
            except HubFileMissing as error:
                errors.append(f"  {name}: {error}")
            except OSError as error:  # a transport failure: another file name may still come through
                logger.warning("%s; trying the next file", error)
                errors.append(f"  {name}: {error}")
        raise OSError(f"could not get the {what} of {self.name!r} (hub repository {repo}):\n" + "\n".join(errors))

    def read_weights(self, path: str) -> tuple[dict[str, np.ndarray], str]:
        """:func:`read_weights`; a corrupt file that came from the download cache is named as the cache file it is
        (not the snapshot link), with how to fetch it again."""
        try:
            return read_weights(path)
        except (OSError, ValueError) as error:
            if self.hub_repo() is None:
                raise
            cached = os.path.realpath(path)
            raise OSError(f"the cached file {cached!r} ({os.path.basename(path)} of {self.name!r}) cannot be read: "
                          f"{error}. Delete it, or pass force_download=True, to download it again.") from error

    def __exit__(self, *exc_info) -> None:
        if self._reading is not None:
            self._reading.__exit__(None, None, None)
            self._reading = None
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            error = exc_info[1] if len(exc_info) > 1 else None
            if isinstance(error, (OSError, ValueError)) and self._temporary in str(error):
                # The message names a file of the extraction directory, which is gone now: say where it came from.
                error.add_note(f"{self._temporary} was the temporary extraction of the archive {self.name!r}")

