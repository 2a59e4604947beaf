"""A model hub on 127.0.0.1 for download tests: serves ``/<repo>/resolve/main/<file>`` from a directory."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path


class LocalHub:
    """Context manager; ``url`` is the endpoint to put in ``JAXFORMERS_ENDPOINT``; ``requests`` lists the paths
    asked for, so tests can check what was downloaded and when the cache answered instead."""

    def __init__(self, root: Path):
        self.requests: list[str] = []
        hub = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def translate_path(self, path):
                hub.requests.append(path)
                repo, _, rest = path.lstrip("/").partition("/resolve/main/")
                return str(root / repo / rest)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "LocalHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
