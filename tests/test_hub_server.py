"""Tests of the local test Hub (tests/hub_server.py), driven by the real, unpatched huggingface_hub client.

The client reads `HF_ENDPOINT` and the rest of its configuration at import, so its calls run in fresh
interpreters started with `hub_server.client_env(...)`; each test batches its calls into one or two of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

from conftest import SUBPROCESS_TIMEOUT
from hub_server import DEFAULT_TOKEN, HubServer, hub_server  # noqa: F401  (the fixture, until conftest has it)

CLIENT_PRELUDE = '''
import json, sys
from pathlib import Path
from huggingface_hub import HfApi, hf_hub_download, snapshot_download

api = HfApi()

def error_of(call):
    """[exception class name, HTTP status] of what `call()` raises, or None if it succeeds."""
    try:
        call()
    except Exception as e:
        return [type(e).__name__, getattr(getattr(e, "response", None), "status_code", None)]
    return None
'''


def run_client(server: HubServer, hf_home: Path, code: str, *args: str, token: bool | str = True) -> dict:
    """Run `code` (after `CLIENT_PRELUDE`) in a fresh interpreter pointed at `server`; return the JSON it prints."""
    result = subprocess.run(
        [sys.executable, "-c", CLIENT_PRELUDE + textwrap.dedent(code), *args],
        env=server.client_env(hf_home, token=token),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert result.returncode == 0, f"client failed:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_create_repo_visibility_and_exist_ok(hub_server, tmp_path):
    out = run_client(
        hub_server,
        tmp_path,
        """
        me = api.whoami()
        out = {
            "whoami": [me["name"], [org["name"] for org in me["orgs"]]],
            "public": api.create_repo("test-org/public").repo_id,
            # No namespace: the Hub puts it under the token's user.
            "private": api.create_repo("secret", private=True).repo_id,
            "exist_ok": api.create_repo("test-org/public", exist_ok=True).repo_id,
            "exists": error_of(lambda: api.create_repo("test-org/public")),
            "private_info": api.model_info("test-user/secret").private,
            "public_info": api.model_info("test-org/public").private,
        }
        print(json.dumps(out))
        """,
    )
    assert out == {
        "whoami": ["test-user", ["test-org"]],
        "public": "test-org/public",
        "private": "test-user/secret",
        "exist_ok": "test-org/public",
        "exists": ["HfHubHTTPError", 409],
        "private_info": True,
        "public_info": False,
    }
    assert hub_server.is_private("test-user/secret") and not hub_server.is_private("test-org/public")
    # Like on the Hub, a new repo has one commit with the LFS rules.
    assert hub_server.repo_files("test-org/public") == [".gitattributes"]


def test_upload_folder_then_download_into_empty_cache(hub_server, tmp_path):
    folder = tmp_path / "pipeline"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text('{"_class_name": "DDPMPipeline"}')
    weights = bytes(range(256)) * 8
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(weights)

    out = run_client(
        hub_server,
        tmp_path / "hf_home",
        """
        folder = Path(sys.argv[1])
        api.create_repo("test-org/tiny")
        commit = api.upload_folder(repo_id="test-org/tiny", folder_path=folder, commit_message="Upload tiny")
        info = api.model_info("test-org/tiny", files_metadata=True)
        snapshot = Path(snapshot_download("test-org/tiny"))
        out = {
            "commit": commit.oid,
            "sha": info.sha,
            "siblings": {s.rfilename: [s.size, s.lfs is not None] for s in info.siblings},
            "files": api.list_repo_files("test-org/tiny"),
            "index": Path(hf_hub_download("test-org/tiny", "model_index.json")).read_text(),
            "snapshot": snapshot.name,
            "same_weights": (snapshot / "unet/diffusion_pytorch_model.safetensors").read_bytes()
            == (folder / "unet/diffusion_pytorch_model.safetensors").read_bytes(),
        }
        print(json.dumps(out))
        """,
        str(folder),
    )
    assert len(out["commit"]) == 40 and out["sha"] == out["snapshot"] == out["commit"]
    assert out["files"] == [".gitattributes", "model_index.json", "unet/diffusion_pytorch_model.safetensors"]
    assert out["siblings"]["unet/diffusion_pytorch_model.safetensors"] == [len(weights), True]
    assert out["siblings"]["model_index.json"] == [31, False]
    assert out["index"] == '{"_class_name": "DDPMPipeline"}' and out["same_weights"]
    assert hub_server.is_lfs("test-org/tiny", "unet/diffusion_pytorch_model.safetensors")
    assert hub_server.read_file("test-org/tiny", "unet/diffusion_pytorch_model.safetensors") == weights
    assert [c.title for c in hub_server.commits("test-org/tiny")] == ["Upload tiny", "initial commit"]

    requests = hub_server.requests
    assert all(hub_server.token not in r.path + r.query for r in requests)
    # The weights went through LFS: one PUT to the storage URL, which gets no token (on the Hub it is S3).
    (lfs_put,) = [r for r in requests if r.method == "PUT"]
    assert "authorization" not in lfs_put.headers
    assert all(r.headers["authorization"] == f"Bearer {hub_server.token}" for r in requests if r.method != "PUT")


def test_branch_and_commit_revisions(hub_server, tmp_path):
    out = run_client(
        hub_server,
        tmp_path,
        """
        upload = lambda text, **kw: api.upload_file(
            path_or_fileobj=text.encode(), path_in_repo="notes.txt", repo_id="test-org/tiny", **kw
        ).oid
        read = lambda **kw: Path(hf_hub_download("test-org/tiny", "notes.txt", **kw)).read_text()
        api.create_repo("test-org/tiny")
        v1 = upload("v1")
        api.create_branch("test-org/tiny", branch="dev")
        api.create_branch("test-org/tiny", branch="dev", exist_ok=True)
        dev = upload("dev", revision="dev")
        upload("v2")
        out = {
            "v1": v1,
            "dev": dev,
            # First download of the file: the cache is empty, so this asks the server at the commit id.
            "at_v1": read(revision=v1),
            "at_dev": read(revision="dev"),
            "at_main": read(),
            "snapshot_dev": Path(snapshot_download("test-org/tiny", revision="dev")).name,
            "branches": sorted(b.name for b in api.list_repo_refs("test-org/tiny").branches),
            "dev_history": [c.title for c in api.list_repo_commits("test-org/tiny", revision="dev")],
        }
        print(json.dumps(out))
        """,
    )
    assert [out["at_v1"], out["at_dev"], out["at_main"]] == ["v1", "dev", "v2"]
    assert out["snapshot_dev"] == out["dev"] == hub_server.branches("test-org/tiny")["dev"]
    assert out["branches"] == ["dev", "main"]
    assert out["dev_history"] == ["Upload notes.txt with huggingface_hub"] * 2 + ["initial commit"]
    assert hub_server.read_file("test-org/tiny", "notes.txt", out["v1"]) == b"v1"
    assert any(r.method == "HEAD" and r.path.endswith(f"/resolve/{out['v1']}/notes.txt") for r in hub_server.requests)


def test_missing_things_raise_typed_errors(hub_server, tmp_path):
    hub_server.create_repo("test-org/tiny")
    hub_server.commit_files("test-org/tiny", {"config.json": "{}", "extra.txt": "x"})
    out = run_client(
        hub_server,
        tmp_path,
        """
        repo = "test-org/tiny"
        add = lambda **kw: api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo, **kw)
        out = {
            "repo_info": error_of(lambda: api.model_info("test-org/missing")),
            "repo_download": error_of(lambda: hf_hub_download("test-org/missing", "config.json")),
            "file_download": error_of(lambda: hf_hub_download(repo, "missing.json")),
            "folder_listing": error_of(lambda: list(api.list_repo_tree(repo, "missing"))),
            "file_delete": error_of(lambda: api.delete_file("missing.json", repo_id=repo)),
            "revision_download": error_of(lambda: hf_hub_download(repo, "config.json", revision="missing")),
            "revision_info": error_of(lambda: api.model_info(repo, revision="missing")),
            "revision_upload": error_of(lambda: add(revision="missing")),
            "stale_parent": error_of(lambda: add(parent_commit="0" * 40)),
            "exists": [api.repo_exists(repo), api.repo_exists("test-org/missing"), api.file_exists(repo, "x.y")],
        }
        api.delete_file("extra.txt", repo_id=repo)
        print(json.dumps(out))
        """,
    )
    assert out == {
        "repo_info": ["RepositoryNotFoundError", 404],
        "repo_download": ["RepositoryNotFoundError", 404],
        # RemoteEntryNotFoundError subclasses huggingface_hub.errors.EntryNotFoundError.
        "file_download": ["RemoteEntryNotFoundError", 404],
        "folder_listing": ["RemoteEntryNotFoundError", 404],
        "file_delete": ["RemoteEntryNotFoundError", 404],
        "revision_download": ["RevisionNotFoundError", 404],
        "revision_info": ["RevisionNotFoundError", 404],
        "revision_upload": ["RevisionNotFoundError", 404],
        "stale_parent": ["HfHubHTTPError", 412],
        "exists": [True, False, False],
    }
    assert hub_server.repo_files("test-org/tiny") == [".gitattributes", "config.json"]


def test_private_repo_is_hidden_without_token(hub_server, tmp_path):
    hub_server.create_repo("test-org/secret", private=True)
    hub_server.commit_files("test-org/secret", {"config.json": '{"a": 1}'})
    out = run_client(
        hub_server,
        tmp_path,
        """
        repo = "test-org/secret"
        out = {
            # Before any authenticated download: a cached copy would be returned when the server says no.
            "anonymous_download": error_of(lambda: hf_hub_download(repo, "config.json", token=False)),
            "anonymous_info": error_of(lambda: api.model_info(repo, token=False)),
            "wrong_token": error_of(lambda: api.model_info(repo, token="hf_wrong")),
            "private": api.model_info(repo).private,
            "content": Path(hf_hub_download(repo, "config.json")).read_text(),
        }
        print(json.dumps(out))
        """,
    )
    assert out == {
        "anonymous_download": ["RepositoryNotFoundError", 401],
        "anonymous_info": ["RepositoryNotFoundError", 401],
        "wrong_token": ["HfHubHTTPError", 401],
        "private": True,
        "content": '{"a": 1}',
    }


def test_failure_injection_reaches_the_client(hub_server, tmp_path):
    hub_server.create_repo("test-org/tiny")
    hub_server.fail_next(1, method="POST", path_contains="/commit/")
    hub_server.fail_next(1, method="POST", path_contains="/preupload/", status=503)
    out = run_client(
        hub_server,
        tmp_path,
        """
        upload = lambda: api.upload_file(path_or_fileobj=b"hi", path_in_repo="a.txt", repo_id="test-org/tiny")
        print(json.dumps({"first": error_of(upload), "second": error_of(upload)}))
        """,
    )
    assert out == {"first": ["HfHubHTTPError", 500], "second": None}
    # The client retried the preupload after the 503 (1 s back-off) but not the commit: a lost
    # commit response could otherwise create the commit twice.
    statuses = [(r.path.split("/")[-2], r.status) for r in hub_server.requests]
    assert statuses == [("preupload", 503), ("preupload", 200), ("commit", 500), ("preupload", 200), ("commit", 200)]
    assert hub_server.repo_files("test-org/tiny") == [".gitattributes", "a.txt"]


def _http(url: str, *, method: str = "GET", headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_resolve_headers_and_ranges(hub_server):
    weights = bytes(range(100))
    hub_server.create_repo("test-org/tiny")
    commit = hub_server.commit_files("test-org/tiny", {"model.safetensors": weights, "a.txt": "hello"})
    base = f"{hub_server.url}/test-org/tiny/resolve/main"

    status, headers, body = _http(f"{base}/model.safetensors", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["X-Repo-Commit"] == commit and headers["Content-Length"] == "100"
    assert headers["X-Linked-Size"] == "100" and len(headers["X-Linked-Etag"].strip('"')) == 64  # sha256
    assert _http(f"{base}/a.txt", method="HEAD")[1]["ETag"] == '"b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0"'

    status, headers, body = _http(f"{base}/model.safetensors", headers={"Range": "bytes=10-19"})
    assert (status, headers["Content-Range"], body) == (206, "bytes 10-19/100", weights[10:20])
    assert _http(f"{base}/model.safetensors", headers={"Range": "bytes=-5"})[2] == weights[-5:]
    assert _http(f"{base}/model.safetensors", headers={"Range": "bytes=100-"})[0] == 416

    status, headers, _ = _http(f"{base}/missing.txt")
    assert (status, headers["X-Error-Code"], headers["X-Repo-Commit"]) == (404, "EntryNotFound", commit)
    assert _http(f"{hub_server.url}/api/whoami-v2")[0] == 401
    assert _http(f"{hub_server.url}/api/whoami-v2", headers={"Authorization": "Bearer hf_wrong"})[0] == 401


def test_runs_as_its_own_process(tmp_path):
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("hub_server.py")), "--port", "0", "--storage", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        endpoint = server.stdout.readline().strip().removeprefix("HF_ENDPOINT=")
        status, _, body = _http(f"{endpoint}/api/whoami-v2", headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"})
        assert (status, json.loads(body)["name"]) == (200, "test-user")
        assert (tmp_path / "blobs").is_dir()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_diffusers_pipeline_round_trip(hub_server, tmp_path):
    upload = """
        import torch
        from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

        torch.manual_seed(0)
        unet = UNet2DModel(
            sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 8),
            norm_num_groups=4, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
        )
        DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(sys.argv[1])
        api.create_repo("test-org/tiny-ddpm")
        print(json.dumps({"commit": api.upload_folder(repo_id="test-org/tiny-ddpm", folder_path=sys.argv[1]).oid}))
    """
    download = """
        import torch
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained("test-org/tiny-ddpm")
        pipe.set_progress_bar_config(disable=True)
        images = pipe(num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)).images
        print(json.dumps({"pipeline": type(pipe).__name__, "shape": list(images.shape)}))
    """
    commit = run_client(hub_server, tmp_path / "uploader", upload, str(tmp_path / "pipeline"))["commit"]
    out = run_client(hub_server, tmp_path / "downloader", download)
    assert out == {"pipeline": "DDPMPipeline", "shape": [1, 8, 8, 3]}
    assert hub_server.is_lfs("test-org/tiny-ddpm", "unet/diffusion_pytorch_model.safetensors")
    # from_pretrained pinned every download to the commit it resolved first.
    downloads = [r.path for r in hub_server.requests if "/resolve/" in r.path]
    assert downloads and all(f"/resolve/{commit}/" in path for path in downloads)
