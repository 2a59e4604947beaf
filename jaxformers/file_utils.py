"""Where pretrained files live: Hugging Face hub repositories, the Hugging Face cache, atomic writes.

A name given to ``from_pretrained`` is, in this order: a 0.6.x shortcut name (``bert-base-uncased``, ``gpt2``...,
mapped by `SHORTCUT_REPOS` to the hub repository that holds those files today), a local directory or file, an
http(s) URL, or a hub repository id (``openai-community/gpt2``). Hub files are fetched with ``huggingface_hub``
into its standard cache layout (``models--<org>--<name>/blobs|snapshots|refs``), so what ``transformers``
already downloaded is reused and what we download is reused by it.

The cache directory is, in order: the ``cache_dir`` argument, ``$JAXFORMERS_CACHE``,
``$PYTORCH_PRETRAINED_BERT_CACHE`` (the 0.6.x variable), ``$HF_HUB_CACHE``, ``$HF_HOME/hub``, and
``~/.cache/huggingface/hub`` (under ``$XDG_CACHE_HOME`` when set). The hub address is ``$JAXFORMERS_ENDPOINT``,
else ``$HF_ENDPOINT``, else https://huggingface.co. ``local_files_only=True``, or ``JAXFORMERS_OFFLINE``,
``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set to 1/true/yes/on, answers from the cache only. ``token=``
(else ``$HF_TOKEN`` or the saved login) authenticates; ``revision=`` picks a branch, tag or commit.

Every transport failure is an OSError naming the URL, and a download enters the cache only complete: sizes are
checked by ``huggingface_hub``, and a file we just fetched must also hash to the ETag the hub gave it (sha256
for large files, git's blob sha1 for small ones), else it is removed again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import secrets
import time
from pathlib import Path
from typing import IO, Any, Iterator, MutableMapping
from urllib.parse import quote, unquote, urlparse

HUB_ENDPOINT = "https://huggingface.co"
_TRUE_SPELLINGS = ("1", "true", "yes", "on")

_BERT_SHORTCUTS = (
    "bert-base-uncased", "bert-large-uncased", "bert-base-cased", "bert-large-cased",
    "bert-base-multilingual-uncased", "bert-base-multilingual-cased", "bert-base-chinese",
    "bert-base-german-cased", "bert-large-uncased-whole-word-masking", "bert-large-cased-whole-word-masking",
    "bert-large-uncased-whole-word-masking-finetuned-squad", "bert-large-cased-whole-word-masking-finetuned-squad",
    "bert-base-cased-finetuned-mrpc",
)
# The 0.6.x shortcut names -> the hub repositories holding those checkpoints today (the hub moved the
# unprefixed legacy repositories under the organisations that published them).
SHORTCUT_REPOS: dict[str, str] = {
    **{name: f"google-bert/{name}" for name in _BERT_SHORTCUTS},
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "openai-gpt": "openai-community/openai-gpt",
    "transfo-xl-wt103": "transfo-xl/transfo-xl-wt103",
}
_LEGACY_REPOS = {repo: repo for repo in SHORTCUT_REPOS.values()} | SHORTCUT_REPOS
# What the hub accepts as a repository id: "name" or "namespace/name".
_REPO_ID = re.compile(r"^(?:[\w.-]+/)?[\w.-]+$")
_HUB_FILE_URL = re.compile(r"^/(?P<repo>(?:[\w.-]+/)?[\w.-]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")


def env_flag(name: str) -> bool:
    """True when environment variable `name` says so (1, true, yes, on; any case), as huggingface_hub reads."""
    return os.environ.get(name, "").strip().lower() in _TRUE_SPELLINGS


def is_offline() -> bool:
    return any(env_flag(name) for name in ("JAXFORMERS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def default_cache_dir() -> Path:
    """The hub cache used when no ``cache_dir`` is given (order in the module docstring).

    Read at call time, not import time, so changing the environment in a running process takes effect."""
    for variable in ("JAXFORMERS_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE", "HF_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home).expanduser() / "huggingface" / "hub"


def hub_endpoint() -> str:
    return (os.environ.get("JAXFORMERS_ENDPOINT") or os.environ.get("HF_ENDPOINT") or HUB_ENDPOINT).rstrip("/")


def hub_url(repo: str, filename: str, revision: str | None = None) -> str:
    """URL of `filename` in hub repository `repo` at `revision` (default ``main``) on the configured endpoint."""
    return f"{hub_endpoint()}/{repo}/resolve/{quote(revision or 'main', safe='')}/{filename}"


def is_remote(url_or_filename: str | os.PathLike) -> bool:
    return urlparse(str(url_or_filename)).scheme in ("http", "https")


def hub_repo_for(name: str) -> str | None:
    """The hub repository a from_pretrained name stands for: shortcut names mapped, repo ids as given, and
    None for anything that exists locally or cannot be a repository id."""
    if name in SHORTCUT_REPOS:
        return SHORTCUT_REPOS[name]
    if os.path.exists(name) or is_remote(name) or not _REPO_ID.match(name) or name.startswith((".", "/")):
        return None
    if name.count("/") == 1 and os.path.isdir(name.split("/")[0]):
        return None  # "some_dir/missing": a path the user mistyped, not a repository
    return name


@dataclasses.dataclass(frozen=True)
class HubOptions:
    """How to fetch hub files: the from_pretrained keyword arguments of the same names."""

    cache_dir: str | os.PathLike | None = None
    revision: str | None = None
    token: str | bool | None = None
    local_files_only: bool = False
    force_download: bool = False

    @classmethod
    def pop_from(cls, kwargs: MutableMapping[str, Any], cache_dir: str | os.PathLike | None = None) -> HubOptions:
        """Take the hub options out of from_pretrained's ``**kwargs`` (the rest go to the constructor)."""
        fields = {field.name: kwargs.pop(field.name) for field in dataclasses.fields(cls) if field.name in kwargs}
        fields.setdefault("cache_dir", cache_dir)
        kwargs.pop("resume_download", None)  # transformers' old flag; huggingface_hub always resumes
        return cls(**fields)

    def download_kwargs(self) -> dict[str, Any]:
        """Every option but cache_dir, as keyword arguments for another from_pretrained."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if field.name != "cache_dir"}

    @property
    def cache_root(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir is not None else default_cache_dir()

    @property
    def offline(self) -> bool:
        return self.local_files_only or is_offline()


class HubFileMissing(FileNotFoundError):
    """The repository (or the cache, offline) answers that it has no such file: try another file name."""


def hub_file(repo: str, filename: str, options: HubOptions = HubOptions()) -> str:
    """Local path (in the hub cache) of `filename` from hub repository `repo`, downloaded when needed.

    Raises HubFileMissing when the repository has no such file, and OSError naming the URL for everything else
    (offline and not cached, unknown repository or revision, refused token, any transport failure)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError, RepositoryNotFoundError

    url = hub_url(repo, filename, options.revision)
    if not options.offline:
        _probe_uncached(repo, filename, url, options)
    started = time.time()
    try:
        path = hf_hub_download(
            repo, filename, revision=options.revision, cache_dir=str(options.cache_root), token=options.token,
            local_files_only=options.offline, force_download=options.force_download, endpoint=hub_endpoint(),
            library_name="jaxformers",
        )
    except RemoteEntryNotFoundError as error:
        raise HubFileMissing(f"{url} does not exist (the repository has no {filename})") from error
    except LocalEntryNotFoundError as error:
        raise _not_cached_error(url, options, error) from error
    except RepositoryNotFoundError as error:
        raise OSError(f"could not download {url}: no repository {repo!r} on {hub_endpoint()} (or it is private "
                      f"or gated: pass token=... or log in with `hf auth login`)") from error
    except Exception as error:  # httpx errors, http.client errors, huggingface_hub's own: all transport failures
        raise OSError(f"could not download {url}: {type(error).__name__}: {error}") from error
    _verify_fresh_blob(path, url, started)
    return path


def _probe_uncached(repo: str, filename: str, url: str, options: HubOptions) -> None:
    """For a file not in the cache, one HEAD request without retries: huggingface_hub retries an unreachable hub
    with backoff for about 25 s per file, and from_pretrained asks for several files."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import (
        HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    if isinstance(try_to_load_from_cache(repo, filename, str(options.cache_root), options.revision), str):
        return
    try:
        get_hf_file_metadata(hf_hub_url(repo, filename, revision=options.revision, endpoint=hub_endpoint()),
                             token=options.token, retry_on_errors=False)
    except RemoteEntryNotFoundError as error:  # the usual answer while looking for a weights format
        raise HubFileMissing(f"{url} does not exist (the repository has no {filename})") from error
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return  # hf_hub_download raises these again, typed, and the caller turns them into clear errors
    except HfHubHTTPError as error:
        if error.response is not None and error.response.status_code in (401, 403):
            raise OSError(f"could not download {url}: access refused (HTTP {error.response.status_code}); pass "
                          f"token=... or log in with `hf auth login`") from error
        raise OSError(f"could not download {url}: {error}") from error
    except Exception as error:  # unreachable, refused, server error: nothing to fall back on
        raise OSError(f"{url} is not in the cache {str(options.cache_root)!r} and the hub could not be reached "
                      f"({type(error).__name__}: {error}). Download it once with network access (or `hf download`), "
                      f"or pass a local directory instead of a hub name.") from error


def _not_cached_error(url: str, options: HubOptions, error: Exception) -> OSError:
    cause = error.__cause__
    why = "offline mode is on" if options.offline else f"the hub could not be reached ({cause or error})"
    message = (f"{url} is not in the cache {str(options.cache_root)!r} and {why}. Download it once with network "
               f"access (or `hf download`), or pass a local directory instead of a hub name.")
    # Offline, a file absent from the cache is as good as missing: the search over weight formats moves on to
    # the next name quietly. Online, the hub failed us: the caller warns before trying another name.
    return HubFileMissing(message) if options.offline else OSError(message)


def _verify_fresh_blob(path: str, url: str, started: float) -> None:
    """A blob written during this call must hash to its name (the hub's ETag), else it leaves the cache.

    huggingface_hub checks the size only when the server states one; a response cut short without a
    Content-Length would otherwise stay cached as complete."""
    blob = os.path.realpath(path)
    name = os.path.basename(blob)
    if blob == os.path.abspath(path) or os.path.getmtime(blob) < started - 1:
        return  # no symlinked blob (copy mode), or one that was already cached: checked when it arrived
    if _hashes_to(blob, name) is False:
        received = os.path.getsize(blob)
        for stale in (path, blob):  # the snapshot link, then the blob: nothing of it stays cached
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        raise OSError(f"could not download {url}: the {received} bytes received do not hash to the ETag {name} "
                      f"(truncated or corrupted in transit); nothing was cached, try again")


def _hashes_to(path: str, etag: str) -> bool | None:
    """Whether the file hashes to `etag` when that is a content hash as the hub gives them (sha256 for large
    files, git's blob sha1 for small ones); None when it is not one (nothing to check)."""
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        return _file_digest(path, hashlib.sha256()) == etag
    if re.fullmatch(r"[0-9a-f]{40}", etag):
        return _file_digest(path, hashlib.sha1(b"blob %d\0" % os.path.getsize(path))) == etag  # git's object id
    return None


def _file_digest(path: str, hasher: Any) -> str:
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def _parse_hub_file_url(url: str) -> tuple[str, str, str] | None:
    """(repo, revision, filename) of a ``.../<repo>/resolve/<revision>/<file>`` URL on the hub or the endpoint."""
    parsed = urlparse(url)
    hosts = {urlparse(HUB_ENDPOINT).netloc, urlparse(hub_endpoint()).netloc}
    match = _HUB_FILE_URL.match(parsed.path) if parsed.netloc in hosts else None
    if match is None:
        return None
    return _LEGACY_REPOS.get(match["repo"], match["repo"]), unquote(match["revision"]), match["filename"]


def url_to_cache_name(url: str) -> str:
    """Cache file name for a plain URL: a hash (stable, filesystem-safe) plus the original basename for humans."""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]
    return f"{digest}.{os.path.basename(urlparse(url).path) or 'file'}"


def cached_path(url_or_filename: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                **hub_options: Any) -> str:
    """Local path of a local file, a hub file URL (``<endpoint>/<repo>/resolve/<revision>/<file>``, fetched into
    the hub cache) or any other http(s) URL (fetched once into ``<cache>/urls``).

    `hub_options` are HubOptions' fields (revision, token, local_files_only, force_download). Raises
    FileNotFoundError for a missing local file and OSError naming the URL when a download is impossible."""
    options = HubOptions(cache_dir=cache_dir, **hub_options)
    if not is_remote(url_or_filename):
        path = Path(url_or_filename).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"file {str(path)!r} does not exist")
        return str(path)
    url = str(url_or_filename)
    hub_location = _parse_hub_file_url(url)
    if hub_location is not None:
        repo, revision, filename = hub_location
        return hub_file(repo, filename, dataclasses.replace(options, revision=options.revision or revision))
    return _download_plain_url(url, options)


def _download_plain_url(url: str, options: HubOptions) -> str:
    from huggingface_hub.file_download import http_get

    target = options.cache_root / "urls" / url_to_cache_name(url)
    if target.exists() and not options.force_download:
        return str(target)
    if options.offline:
        raise OSError(f"offline mode and {url} is not in the cache: it is needed as {str(target)!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = create_temporary_file(target.parent, f".{target.name}.")
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                etag = _unsized_etag(url)
                http_get(url, out)  # raises on a size other than the stated Content-Length
                out.flush()
                os.fsync(out.fileno())
        except Exception as error:
            raise OSError(f"could not download {url}: {type(error).__name__}: {error}") from error
        # Without a Content-Length a body cut short looks complete: a content-hash ETag is the only witness.
        if etag is not None and _hashes_to(temporary, etag) is False:
            raise OSError(f"could not download {url}: the {os.path.getsize(temporary)} bytes received do not hash "
                          f"to the ETag {etag} (truncated or corrupted in transit); nothing was cached, try again")
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return str(target)


def _unsized_etag(url: str) -> str | None:
    """The strong ETag a HEAD of `url` states when it states no Content-Length (None otherwise). Weak ETags and
    encoded bodies (the ETag describes the encoded bytes) give None: they cannot be checked against the file."""
    from huggingface_hub.utils import get_session

    response = get_session().head(url, follow_redirects=True, timeout=30)
    headers = response.headers
    etag = (headers.get("X-Linked-Etag") or headers.get("ETag") or "").strip()
    if response.status_code >= 400 or "Content-Length" in headers and headers.get("Content-Length") != "0" \
            or headers.get("Content-Encoding", "identity") != "identity" or etag.startswith("W/"):
        return None
    return etag.strip('"') or None


# What a tokenizer may read from a model directory (the tokenizers' from_directory picks among them).
TOKENIZER_FILES = (
    "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.json",
    "special_tokens.txt", "vocab.bin",
)


def hub_snapshot(repo: str, filenames: tuple[str, ...], options: HubOptions = HubOptions()) -> str:
    """The cache's snapshot directory of `repo` holding those of `filenames` the repository has (fetched when
    needed), so code that reads a model directory reads a hub repository the same way. OSError, naming the
    repository and each failure, when it has none of them."""
    found, errors = [], []
    for filename in filenames:
        try:
            found.append(hub_file(repo, filename, options))
        except HubFileMissing:
            continue
        except OSError as error:
            errors.append(str(error))
    if not found:
        details = "".join(f"\n  {error}" for error in errors)
        raise OSError(f"hub repository {repo!r} has none of {', '.join(filenames)}{details}")
    if errors:
        raise OSError(f"could not fetch every file of hub repository {repo!r}:\n  " + "\n  ".join(errors))
    return os.path.dirname(found[0])


def pretrained_file(name: str, filename: str, options: HubOptions = HubOptions()) -> str:
    """Local path of `filename` for a from_pretrained `name`: inside a local directory, the file itself, or
    fetched from the hub repository the name stands for. Tokenizers use this for their vocabulary files."""
    repo = hub_repo_for(name)
    if repo is not None:
        return hub_file(repo, filename, options)
    location = os.path.join(name, filename) if os.path.isdir(name) else name
    return cached_path(location, options.cache_dir, revision=options.revision, token=options.token,
                       local_files_only=options.local_files_only, force_download=options.force_download)


def create_temporary_file(directory: str | os.PathLike, prefix: str) -> tuple[int, str]:
    """``(fd, path)`` of a new, empty file in `directory` that follows the umask (0644 under umask 022).

    ``tempfile.mkstemp`` always creates mode 0600, which would make saved models and cache entries unreadable
    by the other users of a shared cache or output directory; here the kernel applies the umask to 0666.
    """
    for _ in range(100):
        path = os.path.join(directory, f"{prefix}{secrets.token_hex(6)}.tmp")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {str(directory)!r}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside `path` and rename it into place only if the block succeeds.

    A crash or exception leaves any previous file intact; an exception leaves no partial file behind (a kill
    can leave a hidden ``.<name>.*.tmp``). The file's mode follows the umask, as ``open()``'s would.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = create_temporary_file(path.parent, f".{path.name}.")
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
