"""A model hub on 127.0.0.1 for download tests, answering what ``huggingface_hub`` asks.

``/<repo>/resolve/<revision>/<file>`` (HEAD and GET) is served from ``root/<repo>/<file>`` for revision ``main``
(or its commit hash) and from ``root/<repo>@<revision>/<file>`` for any other branch or tag, with the headers the
real hub sends: ``X-Repo-Commit`` (a commit hash per repo and revision), ``ETag`` (sha256 of the content for
weight files, as for LFS files; git's blob sha1 for small text files) and ``Content-Length``. Missing files and
repositories get the hub's 404s (``X-Error-Code: EntryNotFound`` / ``RepoNotFound``).

Faults for failure tests, per file name in ``hub.faults``: ``"truncate-chunked"`` (a chunked body cut off before
its last chunk) and ``"truncate-unsized"`` (half the body, no Content-Length, connection closed: only the ETag
can tell). ``hub.token`` makes the hub answer 401 unless ``Authorization: Bearer <token>`` is sent.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from pathlib import Path

_RESOLVE = re.compile(r"^/(?P<repo>(?:[\w.-]+/)?[\w.-]+)/resolve/(?P<revision>[^/]+)/(?P<filename>[^?]+)")
_LFS_SUFFIXES = (".bin", ".safetensors", ".msgpack", ".h5", ".npz", ".pkl", ".gz")


def commit_hash(repo: str, revision: str = "main") -> str:
    return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


def etag_of(filename: str, content: bytes) -> str:
    if filename.endswith(_LFS_SUFFIXES):
        return hashlib.sha256(content).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class LocalHub:
    """Context manager; ``url`` is the endpoint to put in ``HF_ENDPOINT`` (or ``JAXFORMERS_ENDPOINT``);
    ``requests`` lists the paths fetched with GET (the downloads), ``log`` every ``(method, path)``, and
    ``authorizations`` the Authorization headers received."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[str] = []
        self.log: list[tuple[str, str]] = []
        self.authorizations: list[str | None] = []
        self.faults: dict[str, str] = {}
        self.token: str | None = None
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self):
                hub._answer(self, with_body=False)

            def do_GET(self):
                hub._answer(self, with_body=True)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # ---------------------------------------------------------------------------------------------------------
    def _locate(self, repo: str, revision: str) -> Path:
        if revision in ("main", commit_hash(repo)):
            return self.root / repo
        return self.root / f"{repo}@{revision}"

    def _answer(self, handler: http.server.BaseHTTPRequestHandler, with_body: bool) -> None:
        self.log.append((handler.command, handler.path))
        self.authorizations.append(handler.headers.get("Authorization"))
        if with_body:
            self.requests.append(handler.path)
        match = _RESOLVE.match(handler.path)
        if match is None:
            return _send_error(handler, 404, "RepoNotFound", None)
        repo, revision, filename = match["repo"], match["revision"], match["filename"]
        if self.token is not None and handler.headers.get("Authorization") != f"Bearer {self.token}":
            return _send_error(handler, 401, "RepoNotFound", None)
        directory = self._locate(repo, revision)
        if not directory.is_dir():
            code = "RevisionNotFound" if (self.root / repo).is_dir() else "RepoNotFound"
            return _send_error(handler, 404, code, None)
        commit = commit_hash(repo) if revision in ("main", commit_hash(repo)) else commit_hash(repo, revision)
        path = directory / filename
        if not path.is_file():
            return _send_error(handler, 404, "EntryNotFound", commit)
        content = path.read_bytes()
        fault = self.faults.get(filename)
        handler.send_response(200)
        handler.send_header("X-Repo-Commit", commit)
        handler.send_header("ETag", f'"{etag_of(filename, content)}"')
        if fault == "truncate-chunked":
            handler.send_header("Transfer-Encoding", "chunked")
        elif fault == "truncate-unsized":
            handler.send_header("Connection", "close")
        else:
            handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        if not with_body:
            handler.close_connection = fault == "truncate-unsized"  # announced by its Connection: close
            return
        half = content[: len(content) // 2]
        if fault == "truncate-chunked":
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(half), half))  # and never the final 0-length chunk
            handler.close_connection = True
        elif fault == "truncate-unsized":
            handler.wfile.write(half)
            handler.close_connection = True
        else:
            handler.wfile.write(content)

    def __enter__(self) -> "LocalHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _send_error(handler: http.server.BaseHTTPRequestHandler, status: int, code: str, commit: str | None) -> None:
    body = b'{"error": "%s"}' % code.encode()
    handler.send_response(status)
    handler.send_header("X-Error-Code", code)
    if commit is not None:
        handler.send_header("X-Repo-Commit", commit)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)
