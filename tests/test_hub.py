"""Sharing on the Hub, end to end against the local Hub server with the real huggingface_hub client.

Training pushes with --push_to_hub; then the repo is loaded three ways from an empty cache, checked for what it
must and must not hold, and pushed to and sampled from with the `ddpm-hub` command.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, SUBPROCESS_TIMEOUT, clean_env, run_python
from huggingface_hub import ModelCard

SCRIPT = str(REPO_ROOT / "train_unconditional.py")
REPO = "test-org/cats-ddpm"
TINY = [
    "--dataset_name", "shapes", "--model", "tiny", "--max_train_samples", "32", "--train_batch_size", "8",
    "--ddpm_num_inference_steps", "2", "--eval_batch_size", "4", "--logger", "tensorboard", "--logging_steps", "1",
]  # fmt: skip
PIPELINE_FILES = [
    ".gitattributes", "README.md", "metrics.json", "model_index.json", "pipeline.py", "pipeline_editing.py",
    "pipeline_guidance.py", "pipeline_parameterization.py", "pipeline_steps.py", "pipeline_superres.py",
    "pipeline_variance.py", "sample_grid.png",
    "scheduler/scheduler_config.json", "training_config.json", "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
]  # fmt: skip


def hub_env(server, tmp_path: Path, name: str = "hf") -> dict:
    env = server.client_env(tmp_path / name, base_env=clean_env())
    env["DDPM_HUB_RETRY_DELAY"] = "0.05"
    return env


def run(command: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)


def ddpm_hub_cli(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "ddpm_hub.cli", *args], env, cwd)


def test_train_push_and_load_three_ways(hub_server, tmp_path):
    out = tmp_path / "cats"
    # The first commit to main fails once: the upload must be retried, not lost.
    hub_server.fail_next(1, method="POST", path_contains="/commit/main", status=500)
    result = run(
        [sys.executable, SCRIPT, *TINY, "--output_dir", str(out), "--max_train_steps", "8",
         "--checkpointing_steps", "4", "--save_model_epochs", "1", "--push_to_hub", "--hub_model_id", REPO,
         "--hub_private_repo", "--hub_push_checkpoints"],
        hub_env(hub_server, tmp_path), tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Pushed to the Hub: {hub_server.url}/{REPO}/commit/" in result.stderr
    assert "retrying in" in result.stderr
    commits_to_main = [r for r in hub_server.requests if r.method == "POST" and r.path.endswith("/commit/main")]
    assert [r.status for r in commits_to_main] == [500, 200, 200]
    # The export after epoch 0 (of 2) was pushed in the background, then the final one.
    titles = [commit.title for commit in hub_server.commits(REPO)]
    assert titles[:2] == ["Training finished at step 8", "Epoch 0, step 4"]

    # The repo holds the pipeline and its card, private; checkpoints only on their own branch; no logs anywhere.
    assert hub_server.repo_files(REPO) == PIPELINE_FILES
    assert hub_server.is_private(REPO)
    checkpoint_files = hub_server.repo_files(REPO, revision="checkpoints")
    assert "checkpoint-4/model.safetensors" in checkpoint_files and "checkpoint-8/optimizer.bin" in checkpoint_files
    assert not [f for f in checkpoint_files if "tfevents" in f or f.endswith(".log")]
    assert not list(out.glob(".hub-push-*"))  # upload snapshots are cleaned up

    card = ModelCard(hub_server.read_file(REPO, "README.md").decode())
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "unconditional-image-generation"
    assert card.data.license == "cc0-1.0" and "ddpm-hub" in card.data.tags
    assert (
        f'DiffusionPipeline.from_pretrained("{REPO}")' in card.text
        and "| prediction_type | v_prediction |" in card.text
    )
    assert "![Samples from the EMA weights](sample_grid.png)" in card.text

    # The token is never printed, logged, written, or sent where it does not belong.
    token = hub_server.token
    assert token not in result.stdout + result.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    for path in hub_server.repo_files(REPO):
        assert token.encode() not in hub_server.read_file(REPO, path)
    assert not [r for r in hub_server.requests if token in r.path or token in r.query]

    # Loading by repo id from an empty cache: stock diffusers (no flags) and the custom-pipeline mechanism in a
    # process without ddpm_hub, then our class.
    env = hub_env(hub_server, tmp_path, "fresh-cache")
    stock = run_python(
        f"from diffusers import DiffusionPipeline\n"
        f"pipe = DiffusionPipeline.from_pretrained({REPO!r})\n"
        f"print(type(pipe).__name__, pipe(num_inference_steps=2, output_type='np').images.shape)\n"
        f"pipe = DiffusionPipeline.from_pretrained({REPO!r}, custom_pipeline={REPO!r}, trust_remote_code=True)\n"
        f"out = pipe.set_sampler('unipc')(batch_size=2, num_inference_steps=2, output_type='np',"
        f" return_trajectory=True)\n"
        f"print(type(pipe).__name__, out.images.shape, len(out.trajectory))\n",
        without_ddpm_hub=True,
        env=env,
    )
    assert "DDPMPipeline (1, 16, 16, 3)" in stock and "DDPMHubPipeline (2, 16, 16, 3) 2" in stock
    # Private: without a token (token=False sends none) and with an empty cache, the repo is not there.
    ours = run_python(
        f"from ddpm_hub import DDPMHubPipeline\n"
        f"pipe = DDPMHubPipeline.from_pretrained({REPO!r})\n"
        f"print(type(pipe).__name__, pipe(num_inference_steps=2, output_type='np').images.shape)\n"
        f"from diffusers import DiffusionPipeline\n"
        f"try:\n"
        f"    DiffusionPipeline.from_pretrained({REPO!r}, token=False, cache_dir={str(tmp_path / 'anon')!r})\n"
        f"except Exception as error:\n"
        f"    chain = []\n"
        f"    while error is not None:\n"
        f"        chain, error = [*chain, type(error).__name__, str(error)], error.__cause__ or error.__context__\n"
        f"    print('denied:', ' '.join(chain).replace(chr(10), ' '))\n"
        f"else:\n"
        f"    print('loaded without a token')\n",
        env=hub_env(hub_server, tmp_path, "fresh-cache-2"),
    )
    assert "DDPMHubPipeline (1, 16, 16, 3)" in ours
    denied = [line for line in ours.splitlines() if line.startswith("denied:")]
    assert denied and ("RepositoryNotFoundError" in denied[0] or "401" in denied[0]), ours[-3000:]


def test_failed_push_keeps_the_results_and_says_how_to_retry(hub_server, tmp_path):
    out = tmp_path / "kept"
    hub_server.fail_next(4, method="POST", path_contains="/commit/", status=503)  # every attempt of the retry loop
    env = hub_env(hub_server, tmp_path)
    del env["HF_TOKEN"]  # the token comes from the flag this time
    result = run(
        [sys.executable, SCRIPT, *TINY, "--output_dir", str(out), "--max_train_steps", "2", "--push_to_hub",
         "--hub_model_id", "test-org/unlucky", "--hub_token", hub_server.token],
        env, tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert hub_server.token not in result.stdout + result.stderr
    assert not [p for p in out.rglob("*") if p.is_file() and hub_server.token.encode() in p.read_bytes()]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("train_unconditional.py: error: training finished and the pipeline is saved in")
    assert f"ddpm-hub push {out} --repo_id test-org/unlucky" in last
    assert (out / "unet/diffusion_pytorch_model.safetensors").is_file() and (out / "checkpoint-2").is_dir()
    assert hub_server.repo_files("test-org/unlucky") == [".gitattributes"]
    assert result.stderr.count("retrying in") == 3
    # Once the Hub is back, the standalone command pushes the kept folder.
    pushed = ddpm_hub_cli(
        "push", str(out), "--repo_id", "test-org/unlucky", env=hub_env(hub_server, tmp_path), cwd=tmp_path
    )
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert "Pushed: " in pushed.stdout and hub_server.repo_files("test-org/unlucky") == PIPELINE_FILES


@pytest.fixture
def trained(tmp_path_factory) -> Path:
    """A trained pipeline folder, trained in this process (the Hub is only in the commands that follow)."""
    from ddpm_hub.train import main as train_main

    out = tmp_path_factory.mktemp("trained") / "pipe"
    assert train_main([*TINY, "--output_dir", str(out), "--max_train_steps", "2"]) == 0
    return out


def test_push_command_branches_user_notes_and_sampling(hub_server, trained, tmp_path):
    env = hub_env(hub_server, tmp_path)
    first = ddpm_hub_cli("push", str(trained), "--repo_id", "test-org/shapes", "--private", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert hub_server.is_private("test-org/shapes") and hub_server.repo_files("test-org/shapes") == PIPELINE_FILES

    # Someone edits the notes on the Hub; the next push regenerates the card but keeps them.
    card = hub_server.read_file("test-org/shapes", "README.md").decode()
    edited = card.replace("_Add your own notes about this model here._", "Trained for the shapes tutorial, part 2.")
    hub_server.commit_files("test-org/shapes", {"README.md": edited})
    second = ddpm_hub_cli("push", str(trained), "--repo_id", "test-org/shapes", "--revision", "dev",
                          "--commit_message", "Second take", env=env, cwd=tmp_path)  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    assert (
        "Trained for the shapes tutorial, part 2."
        in hub_server.read_file("test-org/shapes", "README.md", "dev").decode()
    )
    assert hub_server.commits("test-org/shapes", "dev")[0].title == "Second take"

    # revision= reaches the branch; a missing repo, revision or file is the client's own error, not ours. Then, in
    # the same fresh process (a cache without main's files), `ddpm-hub sample` pulls and renders without retraining.
    grid = tmp_path / "grids" / "shapes.png"
    sample = ["sample", "test-org/shapes", "--output", str(grid), "--num_images", "4", "--num_inference_steps", "2",
              "--sampler", "dpmpp_2m"]  # fmt: skip
    probe = run_python(
        "import traceback\n"
        "from ddpm_hub import DDPMHubPipeline\n"
        "pipe = DDPMHubPipeline.from_pretrained('test-org/shapes', revision='dev')\n"
        "print('dev ok', pipe.unet.config.sample_size)\n"
        "for kwargs in (dict(pretrained_model_name_or_path='test-org/missing'),\n"
        "               dict(pretrained_model_name_or_path='test-org/shapes', revision='no-such-branch')):\n"
        "    try:\n"
        "        DDPMHubPipeline.from_pretrained(**kwargs)\n"
        "    except OSError as error:\n"
        "        frames = [f.filename for f in traceback.extract_tb(error.__traceback__)]\n"
        "        print(type(error.__cause__).__name__, any('ddpm_hub' in f for f in frames))\n"
        "from ddpm_hub.cli import main\n"
        f"print('sample status', main({sample!r}))\n",
        env=hub_env(hub_server, tmp_path, "probe-cache"),
    )
    assert "dev ok 16" in probe
    # diffusers reports both as OSError caused by the client's typed error; no frame of ours is involved.
    assert "RepositoryNotFoundError False" in probe and "RevisionNotFoundError False" in probe
    assert "sample status 0" in probe, probe[-3000:]
    from PIL import Image

    with Image.open(grid) as image:
        assert image.size == (32, 32)  # a 2 x 2 grid of 16 px samples


def test_push_command_errors_are_one_line(hub_server, tmp_path, capsys):
    from ddpm_hub.cli import main as cli_main

    empty = tmp_path / "empty"
    empty.mkdir()
    # Refused before the Hub is asked: in this process (which is offline).
    with pytest.raises(SystemExit) as refused:  # argparse's error: exit status 2
        cli_main(["push", str(empty), "--repo_id", "test-org/x"])
    assert refused.value.code == 2
    assert "holds no saved pipeline (model_index.json is missing)" in capsys.readouterr().err
    bad_token = hub_server.client_env(tmp_path / "bad", token="hf_wrong", base_env=clean_env())
    (empty / "model_index.json").write_text("{}")
    result = ddpm_hub_cli("push", str(empty), "--repo_id", "test-org/x", env=bad_token, cwd=tmp_path)
    assert result.returncode == 2 and "Cannot push to the Hub repo 'test-org/x'" in result.stderr
    assert "Traceback" not in result.stderr and "hf_wrong" not in result.stderr


def test_hub_dataset_trains_online_then_offline_from_the_cache(hub_server, tmp_path, capsys):
    import io

    from PIL import Image

    hub_server.create_repo("test-org/tiny-images", repo_type="dataset")
    pngs = {}
    for i in range(8):
        buffer = io.BytesIO()
        Image.new("RGB", (20, 20), (i * 30, 100, 200)).save(buffer, format="PNG")
        pngs[f"train/img{i}.png"] = buffer.getvalue()
    hub_server.commit_files("test-org/tiny-images", pngs, repo_type="dataset")
    args = [SCRIPT, "--dataset_name", "test-org/tiny-images", "--model", "tiny", "--train_batch_size", "4",
            "--max_train_steps", "2", "--eval_batch_size", "1", "--ddpm_num_inference_steps", "1",
            "--logger", "none"]  # fmt: skip
    online = hub_env(hub_server, tmp_path)
    first = run([sys.executable, *args, "--output_dir", str(tmp_path / "online")], online, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "on 8 images of dataset test-org/tiny-images" in (tmp_path / "online" / "train.log").read_text()
    card = ModelCard.load(tmp_path / "online" / "README.md")
    assert card.data.datasets == ["test-org/tiny-images"]

    hub_server.stop()  # the Hub is gone: the cached copy must do
    offline = dict(online, HF_HUB_OFFLINE="1")
    second = run([sys.executable, *args, "--output_dir", str(tmp_path / "offline")], offline, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    # A data set never downloaded, offline (as this process is): one line, exit status 2.
    from ddpm_hub.train import main as train_main

    capsys.readouterr()
    missing = train_main(["--dataset_name", "test-org/never-downloaded", "--output_dir", str(tmp_path / "missing")])
    stderr = capsys.readouterr().err
    assert missing == 2, stderr[-3000:]
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith("train_unconditional.py: error: --dataset_name 'test-org/never-downloaded'")
    )
