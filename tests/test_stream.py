"""Streamed training data (issue 17): `ddpm-hub prepare`, `--train_shards`, `--dataset_name --streaming`, the split
over processes and workers, exact resume after SIGTERM and SIGKILL, and bad input."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from conftest import SUBPROCESS_TIMEOUT, clean_env
from test_train import ACCELERATE, SCRIPT, _free_port, assert_same_weights, launch, ok

from ddpm_hub.data.prepare import main as prepare_main

TINY = [
    "--model",
    "tiny",
    "--resolution",
    "16",
    "--train_batch_size",
    "8",
    "--ddpm_num_inference_steps",
    "2",
    "--eval_batch_size",
    "4",
    "--logging_steps",
    "2",
    "--logger",
    "none",
    "--save_images_epochs",
    "100",
]
PATTERN = "train-{000000..000007}.tar"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """512 seeded shapes at 16 px in 8 shards of 64, with a manifest, made by `ddpm-hub prepare`."""
    out = tmp_path_factory.mktemp("shards") / "shapes"
    assert prepare_main(["shapes", str(out), "--resolution", "16", "--shard_size", "64"]) == 0
    return out


def _prepare_cli(*args, timeout=900, **popen):
    command = [sys.executable, "-c", "from ddpm_hub.cli import main; raise SystemExit(main())", "prepare", *args]
    return subprocess.run(
        command, check=False, env=clean_env(), capture_output=True, text=True, timeout=timeout, **popen
    )


def test_prepare_writes_shards_and_a_manifest_that_train_by_epochs(shards, tmp_path):
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["num_images"] == 512 and manifest["resolution"] == 16 and manifest["source"] == "shapes (built in)"
    assert [entry["num_images"] for entry in manifest["shards"]] == [64] * 8
    import hashlib

    for entry in manifest["shards"]:
        assert hashlib.sha256((shards / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]
    with tarfile.open(shards / "train-000000.tar") as tar:
        first = tar.extractfile(tar.getmembers()[0]).read()
    assert PIL.Image.open(io.BytesIO(first)).size == (16, 16)

    out = tmp_path / "run"
    result = ok(
        launch(
            *TINY,
            "--train_shards",
            str(shards / PATTERN),
            "--num_epochs",
            "1",
            "--output_dir",
            str(out),
            "--dataloader_num_workers",
            "2",
            cwd=tmp_path,
            python=True,
            timeout=900,
        )
    )
    config = json.loads((out / "training_config.json").read_text())
    # 2 workers x 4 shards x 64 images, 8 a batch: the epoch length comes from the manifest.
    assert config["steps_per_epoch"] == 64 and config["max_train_steps"] == 64
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert "8 shards of" in result.stderr


SPLIT_CHECK = """
import json, sys, torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from ddpm_hub.data import open_streamed_images
accelerator = Accelerator(cpu=True)
source = open_streamed_images(train_shards=sys.argv[1], resolution=16, shuffle_buffer_size=16, num_workers=2)
source.make_loader(accelerator, batch_size=4, seed=0)
keys = []
for epoch in (0, 1):
    for batch in source.epoch_batches(epoch, 0):
        assert batch.shape == (4, 3, 16, 16) and batch.dtype == torch.uint8
        keys.append((epoch, source.last_keys))
keys = gather_object([keys])
if accelerator.is_main_process:
    print("KEYS" + json.dumps(keys))
"""


def test_an_epoch_over_two_processes_with_two_workers_sees_every_sample_once(shards, tmp_path):
    script = tmp_path / "split.py"
    script.write_text(SPLIT_CHECK)
    command = [
        ACCELERATE,
        "launch",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--multi_gpu",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(script),
        str(shards / PATTERN),
    ]
    result = subprocess.run(command, check=False, env=clean_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    per_process = json.loads(result.stdout.split("KEYS", 1)[1])
    orders = []
    for epoch in (0, 1):
        keys = [key for batches in per_process for e, batch in batches if e == epoch for key in batch]
        assert len(keys) == 512 and len(set(keys)) == 512  # every sample exactly once
        orders.append(keys)
        # the processes read disjoint shards (a key starts with its shard's index)
        shards_of = [
            {key.split("/")[0] for e, batch in batches if e == epoch for key in batch} for batches in per_process
        ]
        assert not shards_of[0] & shards_of[1]
    assert orders[0] != orders[1]  # shard order and buffer are reshuffled each epoch


def _straight_and_interrupted(tmp_path, shards, how: str):
    args = [
        *TINY,
        "--train_shards",
        str(shards / PATTERN),
        "--max_train_steps",
        "80",
        "--random_flip",
        "--dataloader_num_workers",
        "2",
        "--shuffle_buffer_size",
        "32",
        "--logging_steps",
        "1",
    ]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    ok(
        launch(
            *args,
            "--checkpointing_steps",
            "1000",
            "--output_dir",
            str(straight),
            cwd=tmp_path,
            python=True,
            timeout=900,
        )
    )
    every = ["--checkpointing_steps", "1000"] if how == "SIGTERM" else ["--checkpointing_steps", "7"]
    process = subprocess.Popen(
        [sys.executable, SCRIPT, *args, *every, "--output_dir", str(stopped)],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 600
    ready = (
        (lambda: (stopped / "metrics.jsonl").exists())
        if how == "SIGTERM"
        else (lambda: any(int(p.name.split("-")[1]) >= 14 for p in stopped.glob("checkpoint-*")))
    )
    while time.time() < deadline and not ready() and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGKILL)
    output, _ = process.communicate(timeout=600)
    if how == "SIGTERM":
        assert process.returncode == 0 and "Stopped by SIGTERM" in output, output[-3000:]
    steps = sorted(int(p.name.split("-")[1]) for p in stopped.glob("checkpoint-*"))
    assert steps and steps[-1] < 80, steps
    ok(
        launch(
            *args,
            *every,
            "--output_dir",
            str(stopped),
            "--resume_from_checkpoint",
            "latest",
            cwd=tmp_path,
            python=True,
            timeout=900,
        )
    )
    return straight, stopped


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_stopped_streamed_run_resumes_bit_identically(shards, tmp_path, how):
    straight, stopped = _straight_and_interrupted(tmp_path, shards, how)
    # 80 steps cross the end of the first epoch (64 steps): the position in the stream, the shuffle buffer and the
    # worker order must all be restored for the weights to match.
    assert_same_weights(
        straight / "checkpoint-80" / "model.safetensors", stopped / "checkpoint-80" / "model.safetensors"
    )
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert_same_weights(straight / unet, stopped / unet)


def test_dataset_name_of_a_local_folder_streams_and_trains(tmp_path):
    import datasets

    from ddpm_hub.data import draw_shapes

    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"image": draw_shapes(64, size=20)}).save_to_disk(str(saved))
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(draw_shapes(24, size=20, seed=1)):
        image.save(folder / f"{i}.png")
    for name, extra in ((saved, ["--num_epochs", "1"]), (folder, ["--max_train_steps", "3"])):
        out = tmp_path / f"run-{name.name}"
        ok(
            launch(
                *TINY,
                "--dataset_name",
                str(name),
                "--streaming",
                *extra,
                "--output_dir",
                str(out),
                "--dataloader_num_workers",
                "1",
                cwd=tmp_path,
                python=True,
                timeout=900,
            )
        )
        config = json.loads((out / "training_config.json").read_text())
        assert config["max_train_steps"] == (8 if name == saved else 3)
        assert (out / "model_index.json").is_file()


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 20, 4), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_corrupt_member_and_an_unreadable_image_are_skipped_and_counted(tmp_path):
    import torch

    from ddpm_hub.data import open_streamed_images

    for shard in range(2):
        members = {"1000.png": b"\x89PNG\r\n\x1a\n this is not a PNG"} if shard == 1 else {}  # a corrupt member
        members.update({f"{shard}{i:03d}.png": _png(shard * 100 + i) for i in range(1, 9)})
        _tar(tmp_path / f"bad-{shard}.tar", members)
    source = open_streamed_images(
        train_shards=str(tmp_path / "bad-{0..1}.tar"), resolution=16, num_workers=0, shuffle_buffer_size=0
    )

    class OneProcess:
        num_processes, process_index, device = 1, 0, torch.device("cpu")

    source.make_loader(OneProcess(), batch_size=1, seed=0)
    keys = [key for _ in source.epoch_batches(0, 0) for key in source.last_keys]  # one pass (no manifest)
    assert len(keys) == 16 and len(set(keys)) == 16 and source.num_skipped == 1
    assert source.reference_images(5).shape == (5, 3, 16, 16)  # alpha composited: RGB

    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.png").write_bytes(_png(i))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    result = _prepare_cli(str(folder), str(tmp_path / "out"), "--resolution", "16", "--shard_size", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["num_images"] == 5 and manifest["num_skipped"] == 1
    assert "(1 unreadable files skipped)" in result.stdout


@pytest.mark.parametrize(
    "shards_arg, expected",
    [
        ("{root}/missing-{{000000..000003}}.tar", "does not exist"),
        ("{root}/nothing-*.tar", "matches no .tar shard"),
        ("hf://datasets/nobody/nothing/train-{{000000..000001}}.tar", "could not be read"),
        ("http://127.0.0.1:9/train-{{000000..000001}}.tar", "could not be read"),
    ],
)
def test_bad_shards_are_one_line_before_training(tmp_path, shards_arg, expected):
    result = launch(
        *TINY,
        "--train_shards",
        shards_arg.format(root=tmp_path),
        "--max_train_steps",
        "2",
        "--output_dir",
        str(tmp_path / "run"),
        cwd=tmp_path,
        python=True,
        env=clean_env(HF_HUB_OFFLINE="1"),
        timeout=900,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Training" not in result.stderr


def test_epochs_of_a_stream_without_manifest_are_refused(shards, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for tar in sorted(shards.glob("train-*.tar"))[:2]:
        shutil.copy(tar, bare)
    result = launch(
        *TINY,
        "--train_shards",
        str(bare),
        "--output_dir",
        str(tmp_path / "run"),
        cwd=tmp_path,
        python=True,
        timeout=900,
    )
    assert result.returncode == 2 and "--max_train_steps" in result.stderr, result.stderr[-3000:]


def test_an_interrupted_prepare_leaves_no_partial_shard_and_resumes(tmp_path):
    out = tmp_path / "emoji"
    args = ["twemoji", str(out), "--resolution", "16", "--shard_size", "100"]
    command = [sys.executable, "-c", "from ddpm_hub.cli import main; raise SystemExit(main())", "prepare", *args]
    process = subprocess.Popen(command, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and len(list(out.glob("train-*.tar"))) < 2 and process.poll() is None:
        time.sleep(0.05)
    process.kill()
    process.communicate(timeout=60)
    written = sorted(out.glob("train-*.tar"))
    assert written and not (out / "manifest.json").exists()
    for shard in written:  # every shard that exists is whole: written to a temporary file, then renamed
        with tarfile.open(shard) as tar:
            assert len(tar.getmembers()) == 100
    result = _prepare_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_images"] + manifest["num_skipped"] == 4009 and len(manifest["shards"]) == 41
    assert not list(out.glob(".*.tmp")) and not (out / "prepare-progress.json").exists()


# ---- two processes: exact resume after SIGTERM and SIGKILL, and a resume on another number of processes ----------

# 64 images in 8 shards of 8; 2 processes x 2 workers = 4 readers of 2 shards: 2 batches of 8 per reader, 4 steps an
# epoch. 40 steps are 10 epochs: a stop lands mid-epoch or on a boundary, and the resumed run crosses epochs.
SMALL_STEPS = 40


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory) -> Path:
    from ddpm_hub.data import draw_shapes

    root = tmp_path_factory.mktemp("small")
    (root / "images").mkdir()
    for i, image in enumerate(draw_shapes(64, size=16, seed=3)):
        image.save(root / "images" / f"{i:03d}.png")
    assert prepare_main([str(root / "images"), str(root / "shards"), "--resolution", "16", "--shard_size", "8"]) == 0
    assert len(list((root / "shards").glob("train-*.tar"))) == 8
    return root / "shards"


def _two_process_args(shards: Path) -> list[str]:
    return [
        *TINY,
        "--train_shards",
        str(shards / PATTERN),
        "--max_train_steps",
        str(SMALL_STEPS),
        "--random_flip",
        "--dataloader_num_workers",
        "2",
        "--shuffle_buffer_size",
        "8",
        "--logging_steps",
        "1",
        "--checkpointing_steps",
        "2",
    ]


def _accelerate_two(*args) -> list[str]:
    return [
        ACCELERATE,
        "launch",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--multi_gpu",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        SCRIPT,
        *args,
    ]


@pytest.fixture(scope="module")
def straight_two(small_shards, tmp_path_factory) -> Path:
    """An uninterrupted two-process run of `SMALL_STEPS` steps, a checkpoint every 2 steps."""
    out = tmp_path_factory.mktemp("straight2") / "run"
    ok(launch(*_two_process_args(small_shards), "--output_dir", str(out), cwd=out.parent, processes=2))
    return out


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the training processes of an `accelerate launch`)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _descendants(pid: int) -> list[int]:
    children = _children(pid)
    return [*children, *(grandchild for child in children for grandchild in _descendants(child))]


def _steps_logged(output_dir: Path) -> int:
    try:
        lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return max((json.loads(line).get("step", 0) for line in lines if line.strip().endswith("}")), default=0)


def _checkpoint_steps(output_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in output_dir.glob("checkpoint-*") if p.name.split("-")[1].isdigit())


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_stopped_two_process_streamed_run_resumes_bit_identically(small_shards, straight_two, tmp_path, how):
    args = _two_process_args(small_shards)
    stopped = tmp_path / "stopped"
    process = subprocess.Popen(
        _accelerate_two(*args, "--output_dir", str(stopped)),
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + SUBPROCESS_TIMEOUT
    # Into the second epoch (steps 5-8), so that the resumed run starts from a position within a later epoch.
    while time.time() < deadline and _steps_logged(stopped) < 5 and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()[0][-3000:]
    if how == "SIGTERM":  # as a cluster scheduler does: every training process gets it
        ranks = _children(process.pid)
        assert len(ranks) == 2, ranks
        for rank in ranks:
            os.kill(rank, signal.SIGTERM)
    else:  # as a crash does: the launcher, the training processes and their DataLoader workers at once
        # (torch's launcher starts each training process in a session of its own: a process group is not enough)
        for pid in [process.pid, *_descendants(process.pid)]:
            os.kill(pid, signal.SIGKILL)
    output, _ = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    steps = _checkpoint_steps(stopped)
    if how == "SIGTERM":
        assert process.returncode == 0 and "Stopped by SIGTERM" in output, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        assert not (stopped / "model_index.json").exists()
    assert steps and 4 <= steps[-1] < SMALL_STEPS, (steps, output[-3000:])
    if how == "SIGKILL":  # resume within an epoch: from the last checkpoint that is not on an epoch's boundary
        per_epoch = json.loads((straight_two / "training_config.json").read_text())["steps_per_epoch"]
        assert per_epoch == 4
        while steps[-1] % per_epoch == 0:
            shutil.rmtree(stopped / f"checkpoint-{steps.pop()}")
    resumed = ok(
        launch(*args, "--output_dir", str(stopped), "--resume_from_checkpoint", "latest", cwd=tmp_path, processes=2)
    )
    assert f"checkpoint-{steps[-1]}" in resumed.stderr
    assert "approximately" not in resumed.stderr  # the same 2 processes x 2 workers: the exact position
    assert _checkpoint_steps(stopped)[-1] == SMALL_STEPS  # the resumed run did all the steps
    last = f"checkpoint-{SMALL_STEPS}/model.safetensors"
    assert_same_weights(straight_two / last, stopped / last)
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert_same_weights(straight_two / unet, stopped / unet)


def test_a_resume_on_another_number_of_processes_warns_that_the_position_is_approximate(
    small_shards, straight_two, tmp_path
):
    out = tmp_path / "one"
    out.mkdir()
    shutil.copytree(straight_two / "checkpoint-6", out / "checkpoint-6")
    args = [*_two_process_args(small_shards), "--max_train_steps", "10"]
    result = ok(
        launch(*args, "--output_dir", str(out), "--resume_from_checkpoint", "latest", cwd=tmp_path, python=True)
    )
    # The checkpoint is of 2 processes x 2 workers, this run 1 x 2: allowed, and said in one warning.
    assert "stream position is of 2 processes x 2 workers, this run has 1 x 2" in result.stderr, result.stderr[-3000:]
    assert "approximately, not exactly" in result.stderr
    assert "approximately, not exactly" in (out / "train.log").read_text()
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert _checkpoint_steps(out)[-1] == 10
