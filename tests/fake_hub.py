"""A Hugging Face hub on 127.0.0.1 for tests: real HTTP, real huggingface_hub on the client side.

It serves folders as model repositories with the routes huggingface_hub 2.x calls (read in its
``_snapshot_download.py``, ``hf_api.py`` and ``file_download.py``):

    GET  /api/models/{repo}/revision/{rev}   repo_info -> {"id", "sha", "siblings"}
    GET  /api/models/{repo}/tree/{rev}       list_repo_tree -> [{"type", "path", "size", "oid", "lfs"}]
    HEAD /{repo}/resolve/{rev}/{file}        file metadata: X-Repo-Commit, ETag / X-Linked-Etag, sizes
    GET  /{repo}/resolve/{rev}/{file}        the bytes, honouring ``Range: bytes=N-``

``*.safetensors`` files are LFS files (ETag and tree ``lfs.oid`` = sha256), the others plain git
files (ETag and ``oid`` = git blob id). Faults to inject, per file name:

    drop_after[name] = n     the next GET of it sends n bytes of a full-length answer, then hangs up
    fail[name] = k           the next k GETs of it answer 500
    corrupt.add(name)        every GET serves it with one byte changed (same size)

``requests`` records (method, path, Range header) of every request.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors",)


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class FakeHub:
    """``with FakeHub({"acme/tiny": folder}) as hub: hub.url`` -> ``http://127.0.0.1:PORT``."""

    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = {repo: {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file() and not p.name.startswith(".")}
                      for repo, folder in repos.items()}
        self.drop_after: dict[str, int] = {}
        self.fail: dict[str, int] = {}
        self.corrupt: set[str] = set()
        self.requests: list[tuple[str, str, str | None]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def gets(self, name: str) -> list[str | None]:
        """The Range headers of every GET of file ``name`` (None: the whole file)."""
        return [rng for method, path, rng in self.requests if method == "GET" and path.endswith("/" + name)
                and "/resolve/" in path]

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- routes -----------------------------------------------------------------------------------
    def _entry(self, name: str, data: bytes) -> dict:
        entry = {"type": "file", "path": name, "size": len(data), "oid": git_blob_id(data)}
        if name.endswith(LFS_SUFFIXES):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def _etag(self, name: str, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest() if name.endswith(LFS_SUFFIXES) else git_blob_id(data)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _route(self) -> tuple[str, str, str, str] | None:
                """(kind, repo, revision, rest) of the request path."""
                path = unquote(urlparse(self.path).path)
                for repo in hub.repos:
                    for kind, prefix in (("info", f"/api/models/{repo}/revision/"),
                                         ("tree", f"/api/models/{repo}/tree/"), ("file", f"/{repo}/resolve/")):
                        if path.startswith(prefix):
                            revision, _, rest = path[len(prefix):].partition("/")
                            return kind, repo, revision, rest
                return None

            def _json(self, value: object) -> None:
                body = json.dumps(value).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _missing(self) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self) -> None:  # noqa: N802
                self._serve(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                route = self._route()
                if route is None:
                    return self._missing()
                kind, repo, revision, rest = route
                files = hub.repos[repo]
                if kind == "info":
                    return self._json({"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                                       "siblings": [{"rfilename": name} for name in files]})
                if kind == "tree":
                    return self._json([hub._entry(name, data) for name, data in files.items()])
                if rest not in files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                data = files[rest]
                if body and hub.fail.get(rest, 0) > 0:
                    hub.fail[rest] -= 1
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                if body and rest in hub.corrupt:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                start = 0
                ranged = self.headers.get("Range")
                if body and ranged and ranged.startswith("bytes="):
                    start = int(ranged[len("bytes="):].split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                etag = f'"{hub._etag(rest, files[rest])}"'
                self.send_header("ETag", etag)
                if rest.endswith(LFS_SUFFIXES):
                    self.send_header("X-Linked-Etag", etag)
                    self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if not body:
                    return None
                cut = hub.drop_after.pop(rest, None)
                if cut is not None:  # a dropped connection half-way through the answer
                    self.wfile.write(data[start:start + cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return None
                self.wfile.write(data[start:])
                return None

        return Handler
