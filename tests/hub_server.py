"""A local Hugging Face Hub for tests: the real `huggingface_hub` client talks HTTP to it, nothing is mocked.

The server follows the HTTP API that huggingface_hub 2.4 uses (the range pinned in the `test` extra), read from
the client's own source: repo creation and info, tree listings, the preupload / LFS batch / ndjson commit upload
path, branches and tags, and `resolve` downloads with the headers `hf_hub_download` checks. Each repo is a small
git-like store: commits are full snapshots (path -> file entry), branches and tags point at 40-hex commit ids,
file contents live in a content-addressed folder.

The client reads its configuration once, at import, so it must be started with the environment already set;
[`HubServer.client_env`] returns it (`HF_ENDPOINT`, `HF_HUB_DISABLE_XET=1`, `HF_TOKEN`, an empty `HF_HOME`...).
The simplest way is a subprocess:

```py
def test_upload(hub_server, tmp_path):
    code = "from huggingface_hub import HfApi; HfApi().create_repo('test-org/tiny')"
    subprocess.run([sys.executable, "-c", code], env=hub_server.client_env(tmp_path / "hf"), check=True)
    assert hub_server.repo_files("test-org/tiny") == [".gitattributes"]
```

Or as a process of its own, e.g. for manual runs (`--storage` keeps the file contents; repo metadata lives in
memory as long as the process):

```bash
python tests/hub_server.py --port 8123 --storage /tmp/hub
```

Deliberately left out: Xet storage (clients must set `HF_HUB_DISABLE_XET=1`), multipart LFS, pull requests,
pagination (every listing fits in one page), gated repos, and per-namespace write rights (one user, whose
valid token may write anywhere).
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import json
import os
import re
import signal
import sys
import tempfile
import threading
import traceback
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

DEFAULT_TOKEN = "hf_local_test_server_token"

# URL segment -> repo type, as in `/api/datasets/...` and `/datasets/{repo_id}/resolve/...`.
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}

# Like the Hub: weights, arrays, archives and images go to LFS, and so does anything large or binary.
LFS_PATTERNS = (
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.onnx", "*.h5", "*.msgpack", "*.pkl", "*.pickle",
    "*.npy", "*.npz", "*.arrow", "*.parquet", "*.zip", "*.tar", "*.gz", "*.tgz", "*.zst", "*tfevents*",
    "*.png", "*.jpg", "*.jpeg", "*.gif", "*.webp",
)  # fmt: skip
LFS_MIN_SIZE = 10 * 1024 * 1024

GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS).encode()

# Env vars that would send a client subprocess to another cache, token or Hub than the test's.
_CLIENT_ENV_OVERRIDES = (
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE",
    "HF_XET_CACHE", "HF_DATASETS_CACHE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
    "HUGGINGFACE_CO_STAGING", "HF_HUB_ENABLE_HF_TRANSFER",
)  # fmt: skip

_REPO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


def _now() -> str:
    # The one date format `huggingface_hub.utils.parse_datetime` is written for.
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_oid(data: bytes) -> str:
    """The git object id of `data`: what the Hub calls a file's `oid` or `blobId`, and the ETag of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The pointer git stores in place of an LFS file, see https://github.com/git-lfs/git-lfs/blob/main/docs/spec.md."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _is_private(payload: Mapping[str, Any]) -> bool:
    # huggingface_hub 2.x sends "visibility"; older clients sent "private".
    return payload.get("visibility", "private" if payload.get("private") else "public") != "public"


def needs_lfs(path: str, size: int, sample: bytes) -> bool:
    """Whether the Hub would ask for this file through LFS rather than inline in the commit."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS) or size >= LFS_MIN_SIZE or b"\0" in sample


class HubError(Exception):
    """An error as the Hub reports it: the client picks its exception type from `code` (sent as `X-Error-Code`)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class FileEntry:
    """A file in a commit: `sha256` addresses its content, `oid` is its git blob id (of the pointer if `lfs`)."""

    sha256: str
    size: int
    oid: str
    lfs: bool

    def tree_json(self, path: str) -> dict[str, Any]:
        item: dict[str, Any] = {"type": "file", "path": path, "oid": self.oid, "size": self.size}
        if self.lfs:
            pointer_size = len(lfs_pointer(self.sha256, self.size))
            item["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": pointer_size}
        return item


@dataclass(frozen=True)
class Commit:
    """A full snapshot of a repo, git-style: its id, its parent and every file at that point."""

    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    files: Mapping[str, FileEntry]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    # LFS objects uploaded to this repo (by sha256): a commit may only reference these.
    lfs_objects: set[str] = field(default_factory=set)

    def resolve(self, revision: str) -> Commit:
        """The commit a branch, a tag or a full commit id names; `RevisionNotFound` otherwise."""
        oid = self.branches.get(revision) or self.tags.get(revision) or revision
        if oid not in self.commits:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return self.commits[oid]

    def history(self, revision: str) -> Iterator[Commit]:
        commit: Commit | None = self.resolve(revision)
        while commit is not None:
            yield commit
            commit = self.commits.get(commit.parent) if commit.parent else None


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it. `headers` keys are lower-case; `path` and `query` are not decoded."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    status: int


@dataclass
class _Failure:
    remaining: int
    method: str | None
    path_contains: str
    status: int

    def matches(self, method: str, path: str) -> bool:
        return self.remaining > 0 and self.method in (None, method) and self.path_contains in path


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})


@dataclass
class _Request:
    method: str
    path: str
    raw_query: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as e:
            raise HubError(400, f"Request body is not JSON: {e}") from e

    def flag(self, name: str) -> bool:
        # httpx sends booleans as "true"/"false"; older clients sent "True"/"1".
        return self.query.get(name, ["false"])[0].lower() in ("true", "1")


class HubServer:
    """A Hub-compatible HTTP server on 127.0.0.1 with hooks for tests: seeding, inspection, a request log and
    failure injection.

    Args:
        port (`int`, defaults to 0): port to listen on; 0 picks a free one (read it back from `url`).
        storage_dir (`str` or `os.PathLike`, *optional*): folder for file contents; a temporary folder, removed by
            `stop()`, if not given.
        token (`str`, defaults to `DEFAULT_TOKEN`): the one valid access token. Requests with another token get
            401 "Invalid credentials in Authorization header", as on the Hub.
        user (`str`, defaults to `"test-user"`): the token's owner, namespace of repos created without one.
        orgs (`tuple[str, ...]`, defaults to `("test-org",)`): organizations `whoami` reports for the user.

    Example:
    ```py
    with HubServer() as server:
        server.create_repo("test-org/tiny", private=True)
        server.commit_files("test-org/tiny", {"config.json": "{}"})
        env = server.client_env(tmp_path)  # for a subprocess running the real client
    ```
    """

    def __init__(
        self,
        *,
        port: int = 0,
        storage_dir: str | os.PathLike | None = None,
        token: str = DEFAULT_TOKEN,
        user: str = "test-user",
        orgs: tuple[str, ...] = ("test-org",),
    ):
        self.token = token
        self.user = user
        self.orgs = orgs
        self._port = port
        self._tmp_dir = tempfile.TemporaryDirectory(prefix="hub_server_") if storage_dir is None else None
        self._blob_dir = Path(storage_dir or self._tmp_dir.name) / "blobs"
        self._blob_dir.mkdir(parents=True, exist_ok=True)
        self._repos: dict[tuple[str, str], Repo] = {}
        self._failures: list[_Failure] = []
        self._requests: list[RequestRecord] = []
        # Tracebacks of unexpected exceptions (server bugs); the `hub_server` fixture fails the test on any.
        self.errors: list[str] = []
        # Requests are handled one at a time: simple and safe, and the repos in tests are tiny.
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> HubServer:
        """Listen and serve from a daemon thread; returns `self`."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), _Handler)
        self._httpd.hub = self  # type: ignore[attr-defined]
        # A short poll interval: `stop()` waits up to one interval, at the end of every test.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and remove the temporary storage, if the server made one."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self._httpd = None
        if self._tmp_dir is not None:
            self._tmp_dir.cleanup()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The endpoint to use as `HF_ENDPOINT`, e.g. `http://127.0.0.1:43121`."""
        if self._httpd is None:
            raise RuntimeError("HubServer is not started: call start() first.")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def client_env(
        self, hf_home: str | os.PathLike, *, token: bool | str = True, base_env: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The environment for a subprocess that uses `huggingface_hub` or `diffusers` against this server.

        Args:
            hf_home (`str` or `os.PathLike`): `HF_HOME` of the subprocess; an empty folder means an empty cache.
            token (`bool` or `str`, defaults to `True`): `True` sends the server's valid token as `HF_TOKEN`,
                `False` sends none (anonymous), a string sends that token.
            base_env (`Mapping[str, str]`, *optional*): the variables to start from, `os.environ` if not given.
        """
        base_env = os.environ if base_env is None else base_env
        env = {k: v for k, v in base_env.items() if k not in _CLIENT_ENV_OVERRIDES}
        env.update(
            HF_ENDPOINT=self.url,
            HF_HOME=str(hf_home),
            # Explicitly online, so that this env also wins when merged into one that says offline.
            HF_HUB_OFFLINE="0",
            # hf_xet is installed: without this the client uploads and downloads through Xet, which we lack.
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            # The HEAD before each download; a hung server should fail the test fast, not in 10 s per file.
            HF_HUB_ETAG_TIMEOUT="5",
        )
        # A proxy from the environment must not intercept requests to the loopback server.
        no_proxy = ",".join(filter(None, [base_env.get("NO_PROXY"), base_env.get("no_proxy"), "127.0.0.1,localhost"]))
        env.update(NO_PROXY=no_proxy, no_proxy=no_proxy)
        if token:
            env["HF_TOKEN"] = self.token if token is True else token
        return env

    # --- test hooks ------------------------------------------------------------------------------------------

    def fail_next(
        self, count: int = 1, *, method: str | None = None, path_contains: str = "", status: int = 500
    ) -> None:
        """Answer the next `count` matching requests with `status` instead of handling them.

        Args:
            count (`int`, defaults to 1): how many matching requests fail.
            method (`str`, *optional*): only requests with this HTTP method (e.g. `"POST"`); any if `None`.
            path_contains (`str`, defaults to `""`): only requests whose URL path contains this, e.g. `"/commit/"`.
            status (`int`, defaults to 500): status of the failed responses. The client retries 408, 429 and 5xx
                on some endpoints (preupload, LFS, downloads) with 1 s, 2 s, 4 s... back-off, not on the commit.
        """
        with self._lock:
            self._failures.append(_Failure(count, method and method.upper(), path_contains, status))

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def create_repo(self, repo_id: str, *, private: bool = False, repo_type: str = "model") -> None:
        """Create a repo directly (no HTTP), with the Hub's initial commit holding `.gitattributes`."""
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                raise ValueError(f"The test Hub already has a {repo_type} repo {repo_id!r}.")
            self._create_repo(repo_type, repo_id, private)

    def commit_files(
        self,
        repo_id: str,
        files: Mapping[str, bytes | str],
        *,
        revision: str = "main",
        message: str = "Upload files",
        repo_type: str = "model",
    ) -> str:
        """Commit `files` (path -> content) directly on branch `revision`; returns the new commit id."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            changes = {}
            for path, content in files.items():
                data = content.encode() if isinstance(content, str) else content
                entry = self._store(data)
                if needs_lfs(path, len(data), data[:512]):
                    repo.lfs_objects.add(entry.sha256)
                    entry = self._lfs_entry(entry.sha256, entry.size)
                changes[path] = entry
            return self._commit(repo, revision, message, "", changes, deletions=()).oid

    def repo_files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> list[str]:
        """Sorted paths of the files at `revision` (a branch, tag or commit id)."""
        with self._lock:
            return sorted(self._get_repo(repo_type, repo_id).resolve(revision).files)

    def read_file(self, repo_id: str, path: str, revision: str = "main", *, repo_type: str = "model") -> bytes:
        """Content of `path` at `revision`."""
        with self._lock:
            entry = self._get_repo(repo_type, repo_id).resolve(revision).files[path]
            return (self._blob_dir / entry.sha256).read_bytes()

    def is_lfs(self, repo_id: str, path: str, revision: str = "main", *, repo_type: str = "model") -> bool:
        """Whether `path` was committed as an LFS file."""
        with self._lock:
            return self._get_repo(repo_type, repo_id).resolve(revision).files[path].lfs

    def is_private(self, repo_id: str, *, repo_type: str = "model") -> bool:
        with self._lock:
            return self._get_repo(repo_type, repo_id).private

    def branches(self, repo_id: str, *, repo_type: str = "model") -> dict[str, str]:
        """Branch name -> head commit id."""
        with self._lock:
            return dict(self._get_repo(repo_type, repo_id).branches)

    def commits(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> list[Commit]:
        """History of `revision`, newest first; the last one is the repo's initial commit."""
        with self._lock:
            return list(self._get_repo(repo_type, repo_id).history(revision))

    # --- storage ---------------------------------------------------------------------------------------------

    def _get_repo(self, repo_type: str, repo_id: str) -> Repo:
        try:
            return self._repos[(repo_type, repo_id)]
        except KeyError:
            raise KeyError(f"No {repo_type} repo {repo_id!r} on the test Hub; it has {sorted(self._repos)}.") from None

    def _store(self, data: bytes) -> FileEntry:
        sha256 = hashlib.sha256(data).hexdigest()
        blob = self._blob_dir / sha256
        if not blob.exists():
            blob.write_bytes(data)
        return FileEntry(sha256=sha256, size=len(data), oid=git_blob_oid(data), lfs=False)

    @staticmethod
    def _lfs_entry(sha256: str, size: int) -> FileEntry:
        return FileEntry(sha256=sha256, size=size, oid=git_blob_oid(lfs_pointer(sha256, size)), lfs=True)

    def _create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now())
        self._repos[(repo_type, repo_id)] = repo
        initial = self._new_commit(None, "initial commit", "", {".gitattributes": self._store(GITATTRIBUTES)})
        repo.commits[initial.oid] = initial
        repo.branches["main"] = initial.oid
        return repo

    @staticmethod
    def _new_commit(parent: str | None, title: str, message: str, files: Mapping[str, FileEntry]) -> Commit:
        date = _now()
        # A sha1 of the commit's content, as in git, plus a nonce so that two identical commits still differ.
        tree = sorted((path, entry.oid) for path, entry in files.items())
        content = json.dumps([parent, title, message, date, uuid.uuid4().hex, tree])
        oid = hashlib.sha1(content.encode()).hexdigest()
        return Commit(oid=oid, parent=parent, title=title, message=message, date=date, files=dict(files))

    def _commit(
        self,
        repo: Repo,
        branch: str,
        title: str,
        message: str,
        changes: Mapping[str, FileEntry],
        deletions: tuple[str, ...],
        parent_commit: str | None = None,
    ) -> Commit:
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch}", code="RevisionNotFound")
        head = repo.commits[repo.branches[branch]]
        if parent_commit is not None and parent_commit != head.oid:
            raise HubError(412, f"A commit has happened since {parent_commit}. Please refresh and try again.")
        files = dict(head.files)
        for path in deletions:
            if path.endswith("/"):
                inside = [p for p in files if p.startswith(path)]
                if not inside:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", code="EntryNotFound")
                for p in inside:
                    del files[p]
            elif files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
        files.update(changes)
        commit = self._new_commit(head.oid, title, message, files)
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    # --- HTTP ------------------------------------------------------------------------------------------------

    def _handle(self, request: _Request) -> _Response:
        with self._lock:
            failure = next((f for f in self._failures if f.matches(request.method, request.path)), None)
            if failure is not None:
                failure.remaining -= 1
                response = _json({"error": "Failure injected by the test Hub"}, failure.status)
            else:
                try:
                    response = self._route(request)
                except HubError as e:
                    headers = {"X-Error-Message": e.message, **e.headers}
                    if e.code is not None:
                        headers["X-Error-Code"] = e.code
                    response = _json({"error": e.message}, e.status, headers)
                except Exception:
                    self.errors.append(traceback.format_exc())
                    response = _json({"error": f"Test Hub crashed:\n{self.errors[-1]}"}, 500)
            record = RequestRecord(request.method, request.path, request.raw_query, request.headers, response.status)
            self._requests.append(record)
            return response

    def _route(self, request: _Request) -> _Response:
        segments = [unquote(s) for s in request.path.strip("/").split("/")]
        method = request.method
        if segments[0] == "api":
            api = segments[1:]
            if api == ["whoami-v2"] and method == "GET":
                return self._whoami(request)
            if api == ["repos", "create"] and method == "POST":
                return self._create_repo_api(request)
            if api == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo_api(request)
            if api == ["validate-yaml"] and method == "POST":
                return _json({"errors": [], "warnings": []})
            if len(api) >= 3 and api[0] in REPO_TYPES:
                return self._repo_api(request, REPO_TYPES[api[0]], f"{api[1]}/{api[2]}", api[3:])
        else:
            repo_type = "model"
            if segments[0] in REPO_TYPES:
                repo_type = REPO_TYPES[segments.pop(0)]
            if len(segments) >= 5 and segments[2] == "resolve" and method in ("GET", "HEAD"):
                repo_id = f"{segments[0]}/{segments[1]}"
                return self._resolve(request, repo_type, repo_id, segments[3], "/".join(segments[4:]))
            if len(segments) == 6 and segments[1].endswith(".git") and segments[2:5] == ["info", "lfs", "objects"]:
                repo_id = f"{segments[0]}/{segments[1].removesuffix('.git')}"
                if segments[5] == "batch" and method == "POST":
                    return self._lfs_batch(request, repo_type, repo_id)
                if segments[5] == "verify" and method == "POST":
                    return self._lfs_verify(request, repo_type, repo_id)
                if method == "PUT":
                    return self._lfs_put(request, repo_type, repo_id, segments[5])
        raise HubError(404, f"The test Hub does not implement {method} {request.path}")

    def _authenticated(self, request: _Request) -> bool:
        authorization = request.headers.get("authorization")
        if authorization is None:
            return False
        if authorization != f"Bearer {self.token}":
            # This exact message makes the client raise a plain 401 instead of RepositoryNotFoundError.
            raise HubError(401, "Invalid credentials in Authorization header")
        return True

    def _repo_for(self, request: _Request, repo_type: str, repo_id: str, *, write: bool = False) -> Repo:
        """The repo if this request may see it; otherwise what the Hub answers (401 anonymous, 404 with a token)."""
        authenticated = self._authenticated(request)
        repo = self._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authenticated):
            raise HubError(404 if authenticated else 401, "Repository not found", code="RepoNotFound")
        if write and not authenticated:
            raise HubError(401, "Invalid username or password.")
        return repo

    def _whoami(self, request: _Request) -> _Response:
        if not self._authenticated(request):
            raise HubError(401, "Invalid username or password.")
        orgs = [{"type": "org", "name": org, "fullname": org, "roleInOrg": "admin"} for org in self.orgs]
        access_token = {"displayName": "test token", "role": "write", "createdAt": _now()}
        return _json(
            {
                "type": "user",
                "id": hashlib.sha1(self.user.encode()).hexdigest()[:24],
                "name": self.user,
                "fullname": self.user,
                "email": f"{self.user}@example.com",
                "emailVerified": True,
                "isPro": False,
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": access_token},
            }
        )

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.url}/{prefix}{repo_id}"

    def _create_repo_api(self, request: _Request) -> _Response:
        if not self._authenticated(request):
            raise HubError(401, "Invalid username or password.")
        payload = request.json()
        name, namespace = payload.get("name", ""), payload.get("organization") or self.user
        repo_type = payload.get("type") or "model"
        if not _REPO_NAME.fullmatch(name) or repo_type not in REPO_TYPES.values():
            raise HubError(400, f"Invalid repo name {name!r} or type {repo_type!r}.")
        repo_id = f"{namespace}/{name}"
        url = self._repo_url(repo_type, repo_id)
        if (repo_type, repo_id) in self._repos:
            # `create_repo(exist_ok=True)` accepts a 409 and reads `url` from its body.
            return _json({"error": f"You already created this {repo_type} repo", "url": url}, 409)
        self._create_repo(repo_type, repo_id, _is_private(payload))
        return _json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo_api(self, request: _Request) -> _Response:
        payload = request.json()
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.user}/{payload.get('name')}"
        self._repo_for(request, repo_type, repo_id, write=True)
        del self._repos[(repo_type, repo_id)]
        return _Response(200)

    def _repo_api(self, request: _Request, repo_type: str, repo_id: str, rest: list[str]) -> _Response:
        method, action, args = request.method, (rest[0] if rest else ""), rest[1:]
        write = method != "GET" and action != "paths-info"
        repo = self._repo_for(request, repo_type, repo_id, write=write)
        if method == "GET" and (action, len(args)) in (("", 0), ("revision", 1)):
            return self._repo_info(request, repo, args[0] if args else "main")
        if method == "GET" and action == "tree" and args:
            return self._tree(request, repo, args[0], "/".join(args[1:]))
        if method == "POST" and action == "paths-info" and len(args) == 1:
            return self._paths_info(request, repo, args[0])
        if method == "POST" and action == "preupload" and len(args) == 1:
            return self._preupload(request, repo, args[0])
        if method == "POST" and action == "commit" and len(args) == 1:
            return self._commit_api(request, repo, args[0])
        if method == "GET" and action == "commits" and len(args) == 1:
            return self._commits_api(repo, args[0])
        if method == "GET" and action == "refs" and not args:
            return self._refs(repo)
        if action in ("branch", "tag") and len(args) == 1 and method in ("POST", "DELETE"):
            return self._ref_api(request, repo, action, args[0])
        if method == "PUT" and action == "settings" and not args:
            settings = request.json()
            if "visibility" in settings or "private" in settings:
                repo.private = _is_private(settings)
            return _json({})
        raise HubError(404, f"The test Hub does not implement {method} {request.path}")

    def _repo_info(self, request: _Request, repo: Repo, revision: str) -> _Response:
        commit = repo.resolve(revision)
        with_blobs = request.flag("blobs")  # `files_metadata=True`: the Hub adds sizes and oids only then
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    lfs = entry.tree_json(path)["lfs"]
                    sibling["lfs"] = {"sha256": lfs["oid"], "size": lfs["size"], "pointerSize": lfs["pointerSize"]}
            siblings.append(sibling)
        namespace = repo.repo_id.split("/")[0]
        return _json(
            {
                "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "author": namespace,
                "sha": commit.oid,
                "lastModified": commit.date,
                "createdAt": repo.created_at,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
            }
        )

    @staticmethod
    def _folder_json(path: str, files: Mapping[str, FileEntry]) -> dict[str, Any]:
        inside = sorted((p, e.oid) for p, e in files.items() if p.startswith(path + "/"))
        return {"type": "directory", "path": path, "oid": hashlib.sha1(json.dumps(inside).encode()).hexdigest()}

    def _tree(self, request: _Request, repo: Repo, revision: str, folder: str) -> _Response:
        files = repo.resolve(revision).files
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        recursive = request.flag("recursive")
        entries, folders = [], set()
        for path, entry in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            # Folders are entries of their own, as on the Hub: all of them if recursive, else the first level.
            if recursive:
                folders.update(prefix + "/".join(parts[:i]) for i in range(1, len(parts)))
                entries.append(entry.tree_json(path))
            elif len(parts) > 1:
                folders.add(prefix + parts[0])
            else:
                entries.append(entry.tree_json(path))
        if prefix and not entries and not folders:
            raise HubError(404, f"Folder {folder!r} not found at {revision}", code="EntryNotFound")
        return _json([self._folder_json(f, files) for f in sorted(folders)] + entries)

    def _paths_info(self, request: _Request, repo: Repo, revision: str) -> _Response:
        files = repo.resolve(revision).files
        form = parse_qs(request.body.decode(), keep_blank_values=True)
        found = []
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in files:
                found.append(files[path].tree_json(path))
            elif any(p.startswith(path + "/") for p in files):
                found.append(self._folder_json(path, files))
        return _json(found)

    def _preupload(self, request: _Request, repo: Repo, revision: str) -> _Response:
        if request.flag("create_pr"):
            raise HubError(400, "The test Hub does not support pull requests (create_pr=True).")
        commit = repo.resolve(revision)
        answers = []
        for item in request.json().get("files", []):
            path, size = item["path"], int(item["size"])
            lfs = needs_lfs(path, size, base64.b64decode(item.get("sample", "")))
            existing = commit.files.get(path)
            # The client skips files whose oid is unchanged: sha256 for LFS files, the git blob id otherwise.
            oid = None if existing is None else existing.sha256 if existing.lfs else existing.oid
            mode = "lfs" if lfs else "regular"
            answers.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return _json({"files": answers, "commitOid": commit.oid})

    def _commit_api(self, request: _Request, repo: Repo, branch: str) -> _Response:
        if request.flag("create_pr"):
            raise HubError(400, "The test Hub does not support pull requests (create_pr=True).")
        try:
            lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise HubError(400, f"Commit payload is not ndjson: {e}") from e
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "A commit payload starts with a header line.")
        header = lines[0]["value"]
        changes: dict[str, FileEntry] = {}
        deletions: list[str] = []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = value.get("path", "")
            if key == "file":
                data = base64.b64decode(value["content"])
                if data and needs_lfs(path, len(data), data[:512]):
                    raise HubError(400, f"Your push was rejected because {path} must be stored with LFS.")
                changes[path] = self._store(data)
            elif key == "lfsFile":
                sha256 = value["oid"]
                if sha256 not in repo.lfs_objects:
                    raise HubError(400, f"LFS object {sha256} of {path} was never uploaded to {repo.repo_id}.")
                changes[path] = self._lfs_entry(sha256, (self._blob_dir / sha256).stat().st_size)
            elif key in ("deletedFile", "deletedFolder"):
                deletions.append(path.rstrip("/") + "/" if key == "deletedFolder" else path)
            else:
                raise HubError(400, f"Unknown commit operation {key!r}.")
        commit = self._commit(
            repo,
            branch,
            header.get("summary") or "Update",
            header.get("description", ""),
            changes,
            tuple(deletions),
            parent_commit=header.get("parentCommit"),
        )
        commit_url = f"{self._repo_url(repo.repo_type, repo.repo_id)}/commit/{commit.oid}"
        return _json({"success": True, "commitOid": commit.oid, "commitUrl": commit_url, "pullRequestUrl": None})

    def _commits_api(self, repo: Repo, revision: str) -> _Response:
        return _json(
            [
                {"id": c.oid, "title": c.title, "message": c.message, "date": c.date, "authors": [{"user": self.user}]}
                for c in repo.history(revision)
            ]
        )

    def _refs(self, repo: Repo) -> _Response:
        def refs(kind: str, names: dict[str, str]) -> list[dict[str, str]]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": oid} for n, oid in sorted(names.items())]

        branches, tags = refs("heads", repo.branches), refs("tags", repo.tags)
        return _json({"branches": branches, "tags": tags, "converts": [], "pullRequests": []})

    def _ref_api(self, request: _Request, repo: Repo, kind: str, name: str) -> _Response:
        refs = repo.branches if kind == "branch" else repo.tags
        if request.method == "DELETE":
            if name not in refs:
                raise HubError(404, f"Invalid rev id: {name}", code="RevisionNotFound")
            if kind == "branch" and name == "main":
                raise HubError(403, "Cannot delete the default branch main.")
            del refs[name]
            return _json({})
        payload = request.json()
        if kind == "branch":  # POST .../branch/{name} {"startingPoint": revision}
            start = payload.get("startingPoint") or "main"
        else:  # POST .../tag/{revision} {"tag": name}: the URL names the revision, not the tag
            start, name = name, payload.get("tag", "")
        if name in refs:
            raise HubError(409, f"Reference already exists: refs/{'heads' if kind == 'branch' else 'tags'}/{name}")
        refs[name] = repo.resolve(start).oid
        return _json({})

    def _resolve(self, request: _Request, repo_type: str, repo_id: str, revision: str, path: str) -> _Response:
        commit = self._repo_for(request, repo_type, repo_id).resolve(revision)
        entry = commit.files.get(path)
        if entry is None:
            # The client caches "absent at this commit" under the commit id of the 404.
            raise HubError(404, f"Entry not found: {path}", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        # The headers `hf_hub_download` reads: the commit, the ETag (git oid; sha256 for LFS, sent as
        # X-Linked-Etag as the Hub does on its CDN redirects) and the size.
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry.oid}"', "Accept-Ranges": "bytes"}
        headers["Content-Type"] = "application/octet-stream"
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        start, end = 0, entry.size - 1
        range_header = request.headers.get("range")
        if range_header:
            match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", range_header)
            if match is None or match.groups() == ("", ""):
                raise HubError(400, f"Unsupported Range header {range_header!r}")
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last), entry.size - 1) if last else entry.size - 1
            else:  # "bytes=-N": the last N bytes
                start = max(entry.size - int(last), 0)
            if start > end:
                return _Response(416, b"", {**headers, "Content-Range": f"bytes */{entry.size}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        headers["Content-Length"] = str(end - start + 1)
        status = 206 if range_header else 200
        if request.method == "HEAD":
            return _Response(status, b"", headers)
        with open(self._blob_dir / entry.sha256, "rb") as blob:
            blob.seek(start)
            return _Response(status, blob.read(end - start + 1), headers)

    def _lfs_batch(self, request: _Request, repo_type: str, repo_id: str) -> _Response:
        repo = self._repo_for(request, repo_type, repo_id, write=True)
        payload = request.json()
        if payload.get("operation") != "upload":
            raise HubError(400, "The test Hub only implements LFS uploads; downloads go through /resolve/.")
        objects_url = f"{self._repo_url(repo_type, repo_id)}.git/info/lfs/objects"
        objects = []
        for obj in payload.get("objects", []):
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            # An object the repo already has gets no actions: the client then skips its upload.
            if obj["oid"] not in repo.lfs_objects:
                answer["actions"] = {
                    "upload": {"href": f"{objects_url}/{obj['oid']}"},
                    "verify": {"href": f"{objects_url}/verify"},
                }
            objects.append(answer)
        return _json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_put(self, request: _Request, repo_type: str, repo_id: str, sha256: str) -> _Response:
        # Like a presigned storage URL, the upload target takes no token (the client sends none): the
        # content must simply hash to the oid.
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", code="RepoNotFound")
        if hashlib.sha256(request.body).hexdigest() != sha256:
            raise HubError(400, f"Uploaded content does not match its LFS oid {sha256}.")
        self._store(request.body)
        repo.lfs_objects.add(sha256)
        return _Response(200)

    def _lfs_verify(self, request: _Request, repo_type: str, repo_id: str) -> _Response:
        repo = self._repo_for(request, repo_type, repo_id, write=True)
        payload = request.json()
        blob = self._blob_dir / payload.get("oid", "")
        if payload.get("oid") not in repo.lfs_objects or blob.stat().st_size != payload.get("size"):
            raise HubError(404, f"LFS object {payload.get('oid')} of size {payload.get('size')} was not uploaded.")
        return _json({})


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP/1.1 requests into `_Request`s for the `HubServer` and writes its answers back."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    timeout = 60  # an idle kept-alive connection must not hold its thread forever

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        # Streamed uploads (file objects of unknown length) arrive chunked.
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers
            pass
        return b"".join(chunks)

    def _serve(self) -> None:
        url = urlsplit(self.path)
        request = _Request(
            method=self.command,
            path=url.path,
            raw_query=url.query,
            query=parse_qs(url.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            # Read even if the answer is an error: the next request on this connection starts after it.
            body=self._read_body(),
        )
        response = self.server.hub._handle(request)  # type: ignore[attr-defined]
        self.send_response(response.status)
        headers = {"Content-Length": str(len(response.body)), **response.headers}
        if "x-amzn-trace-id" in request.headers:
            headers["X-Request-Id"] = request.headers["x-amzn-trace-id"]  # shown in the client's error messages
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # `HubServer.requests` is the log; stderr noise would only clutter test output


@pytest.fixture
def hub_server():
    """A fresh, empty `HubServer` for one test, serving from a thread on a free port.

    Fails the test if the server itself crashed while handling a request (a bug in the server, not in the client).
    """
    with HubServer() as server:
        yield server
        assert not server.errors, "The test Hub crashed:\n" + "\n".join(server.errors)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a local Hugging Face Hub for tests (huggingface_hub 2.4).")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--storage", default=None, help="folder for file contents (default: a temporary folder)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the one valid access token")
    args = parser.parse_args()
    server = HubServer(port=args.port, storage_dir=args.storage, token=args.token).start()
    # Stop cleanly (and remove a temporary storage) when the parent process terminates us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # One line a parent process can read to learn the endpoint.
    print(f"HF_ENDPOINT={server.url}", flush=True)
    try:
        server._thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
