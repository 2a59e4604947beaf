"""Where pretrained files live: the local cache, downloads with a progress bar, atomic writes.

Shortcut names (``bert-base-uncased``, ``gpt2``...) map to URLs on the public model hub. Those URLs are
fetched once into a cache directory chosen, in order, from the ``cache_dir`` argument, ``$JAXFORMERS_CACHE``,
``$PYTORCH_PRETRAINED_BERT_CACHE`` (the 0.6.x variable, so an existing cache keeps working) and
``~/.cache/jaxformers``. ``$JAXFORMERS_ENDPOINT`` replaces the hub's address (a mirror, or a test server),
and ``$JAXFORMERS_OFFLINE=1`` forbids any network access.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Iterator
from urllib.parse import urlparse

HUB_ENDPOINT = "https://huggingface.co"
_DOWNLOAD_TIMEOUT_S = 30
_CHUNK_BYTES = 1 << 20


def default_cache_dir() -> Path:
    for variable in ("JAXFORMERS_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    return Path.home() / ".cache" / "jaxformers"


def hub_url(repo: str, filename: str) -> str:
    """URL of `filename` in hub repository `repo` (e.g. ``bert-base-uncased``)."""
    return f"{HUB_ENDPOINT}/{repo}/resolve/main/{filename}"


def is_remote(url_or_filename: str | os.PathLike) -> bool:
    return urlparse(str(url_or_filename)).scheme in ("http", "https")


def _effective_url(url: str) -> str:
    # Shortcut maps hold the public hub address; an endpoint override redirects them without editing maps.
    endpoint = os.environ.get("JAXFORMERS_ENDPOINT")
    if endpoint and url.startswith(HUB_ENDPOINT):
        return endpoint.rstrip("/") + url[len(HUB_ENDPOINT):]
    return url


def url_to_cache_name(url: str) -> str:
    """Cache file name for `url`: a hash (stable, filesystem-safe) plus the original basename for humans."""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]
    basename = os.path.basename(urlparse(url).path) or "file"
    return f"{digest}.{basename}"


def cached_path(url_or_filename: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """Local path of a file given as a local path or an http(s) URL (downloaded into the cache once).

    Raises FileNotFoundError for a missing local file, and OSError naming the URL and the cache file to create
    when a download is impossible (offline, server error).
    """
    if not is_remote(url_or_filename):
        path = Path(url_or_filename).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"file {str(path)!r} does not exist")
        return str(path)

    url = str(url_or_filename)
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache_root / url_to_cache_name(url)
    if target.exists():
        return str(target)

    offline_hint = (
        f"It is needed as {str(target)!r}: download {url} by hand and save it under that name, "
        f"or pass a local directory/file instead of a shortcut name."
    )
    if os.environ.get("JAXFORMERS_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise OSError(f"offline mode (JAXFORMERS_OFFLINE) and {url} is not in the cache. {offline_hint}")

    cache_root.mkdir(parents=True, exist_ok=True)
    source = _effective_url(url)
    try:
        _download(source, target)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise OSError(f"could not download {source} ({error}). {offline_hint}") from error
    metadata = {"url": url, "source": source}
    with atomic_write(target.with_name(target.name + ".json"), "w") as meta_file:
        json.dump(metadata, meta_file)
    return str(target)


def _download(url: str, target: Path) -> None:
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "jaxformers"})
    with urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_S) as response:
        total = response.headers.get("Content-Length")
        expected = int(total) if total is not None else None
        received = 0
        with atomic_write(target, "wb") as out, tqdm(
            total=expected, unit="B", unit_scale=True, desc=os.path.basename(urlparse(url).path)
        ) as progress:
            while chunk := response.read(_CHUNK_BYTES):
                out.write(chunk)
                received += len(chunk)
                progress.update(len(chunk))
            if expected is not None and received != expected:
                raise OSError(f"truncated download: got {received} of {expected} bytes")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside `path` and rename it into place only if the block succeeds.

    A crash or exception leaves any previous file intact and no partial file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def copy_atomic(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    with open(source, "rb") as src, atomic_write(destination, "wb") as dst:
        shutil.copyfileobj(src, dst)
