"""What a push never does: follow links out of the folder, publish local paths, or leave snapshots behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from conftest import make_tiny_pipeline
from test_hub import ddpm_hub_cli, hub_env


def saved_run(folder, tmp_path):
    make_tiny_pipeline().save_pretrained(folder)
    settings = {"output_dir": str(folder), "train_data_dir": str(tmp_path / "my photos"),
                "cache_dir": str(tmp_path / "cache"), "model_source": f"fine-tuned from {tmp_path}/models/base",
                "dataset_name": "None", "resolution": 16}  # fmt: skip
    (folder / "training_config.json").write_text(json.dumps(settings))
    return folder


def test_push_skips_links_out_of_the_folder_and_strips_local_paths(hub_server, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the password is hunter2")
    out = saved_run(tmp_path / "run", tmp_path)
    (out / "unet" / "notes.txt").symlink_to(secret)
    (out / "metrics.json").symlink_to(secret)
    result = ddpm_hub_cli(
        "push", str(out), "--repo_id", "test-org/linked", env=hub_env(hub_server, tmp_path), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    files = hub_server.repo_files("test-org/linked")
    assert "unet/notes.txt" not in files and "metrics.json" not in files and "unet/config.json" in files
    assert "symbolic link to a file outside" in result.stderr
    for path in files:
        data = hub_server.read_file("test-org/linked", path)
        assert b"hunter2" not in data and str(tmp_path).encode() not in data, path
    pushed = json.loads(hub_server.read_file("test-org/linked", "training_config.json"))
    assert pushed["output_dir"] == "run" and pushed["train_data_dir"] == "my photos" and pushed["cache_dir"] == "cache"
    assert pushed["model_source"] == "fine-tuned from base" and pushed["resolution"] == 16
    assert json.loads((out / "training_config.json").read_text())["output_dir"] == str(out)  # the local file as it was


def test_an_interrupted_push_leaves_no_snapshot_and_the_next_push_cleans_old_ones(hub_server, tmp_path):
    out = saved_run(tmp_path / "run", tmp_path)
    (out / ".hub-push-999999999-old").mkdir()  # left by a push killed before this version
    (out / ".hub-push-abc123").mkdir()
    env = {**hub_env(hub_server, tmp_path), "DDPM_HUB_RETRY_DELAY": "60"}
    hub_server.fail_next(4, method="POST", path_contains="/commit/", status=503)
    push = subprocess.Popen([sys.executable, "-m", "ddpm_hub.cli", "push", str(out), "--repo_id", "test-org/killed"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.monotonic() + 600
    while not [r for r in hub_server.requests if "/commit/" in r.path] and time.monotonic() < deadline:
        time.sleep(0.2)
    # The old snapshots are gone (their processes are not running); this push's own waits with it for the retry.
    assert {p.name.split("-")[2] for p in out.glob(".hub-push-*")} == {str(push.pid)}
    push.send_signal(signal.SIGTERM)
    _, stderr = push.communicate(timeout=900)
    assert push.returncode != 0
    assert not list(out.glob(".hub-push-*")), stderr[-2000:]
