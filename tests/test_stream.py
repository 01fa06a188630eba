"""Streamed training data (issue 17): `ddpm-hub prepare`, `--train_shards`, `--dataset_name --streaming`, the split
over processes and workers, exact resume after SIGTERM and SIGKILL, and bad input."""

from __future__ import annotations

import io
import json
import logging
import os
import re
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

from ddpm_hub.prepare import main as prepare_main
from ddpm_hub.train import main as train_main

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


@pytest.fixture
def run_log(caplog):
    """The log of training runs in this process (`train_main`, no interpreter start-up): INFO and above."""
    caplog.set_level(logging.INFO)
    return caplog


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """512 seeded shapes at 16 px in 8 shards of 64, with a manifest, made by `ddpm-hub prepare`."""
    out = tmp_path_factory.mktemp("shards") / "shapes"
    assert prepare_main(["shapes", str(out), "--resolution", "16", "--shard_size", "64"]) == 0
    return out


def test_prepare_writes_shards_and_a_manifest_that_train_by_epochs(shards, tmp_path, run_log):
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
    args = ["--train_shards", str(shards / PATTERN), "--num_epochs", "1", "--dataloader_num_workers", "2"]
    assert train_main([*TINY, *args, "--output_dir", str(out)]) == 0
    config = json.loads((out / "training_config.json").read_text())
    # 2 workers x 4 shards x 64 images, 8 a batch: the epoch length comes from the manifest.
    assert config["steps_per_epoch"] == 64 and config["max_train_steps"] == 64
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert "8 shards of" in run_log.text


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
    # The uninterrupted run and the resume train in this process; only the run that is stopped needs its own.
    assert train_main([*args, "--checkpointing_steps", "1000", "--output_dir", str(straight)]) == 0
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
    assert train_main([*args, *every, "--output_dir", str(stopped), "--resume_from_checkpoint", "latest"]) == 0
    return straight, stopped


# The two-process test below stops both ways as well; one process with SIGKILL is its subset, run with -m slow.
@pytest.mark.parametrize("how", ["SIGTERM", pytest.param("SIGKILL", marks=pytest.mark.slow)])
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
        args = ["--dataset_name", str(name), "--streaming", *extra, "--dataloader_num_workers", "1"]
        assert train_main([*TINY, *args, "--output_dir", str(out)]) == 0
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


def test_a_corrupt_member_and_an_unreadable_image_are_skipped_and_counted(tmp_path, capsys):
    import torch

    from ddpm_hub.cli import main as cli_main
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
    capsys.readouterr()
    status = cli_main(["prepare", str(folder), str(tmp_path / "out"), "--resolution", "16", "--shard_size", "4"])
    printed = capsys.readouterr()
    assert status == 0, printed.err[-3000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["num_images"] == 5 and manifest["num_skipped"] == 1
    assert "(1 unreadable files skipped)" in printed.out


@pytest.mark.parametrize(
    "shards_arg, expected",
    [
        ("{root}/missing-{{000000..000003}}.tar", "does not exist"),
        ("{root}/nothing-*.tar", "matches no .tar shard"),
        ("hf://datasets/nobody/nothing/train-{{000000..000001}}.tar", "could not be read"),
        ("http://127.0.0.1:9/train-{{000000..000001}}.tar", "could not be read"),
    ],
)
def test_bad_shards_are_one_line_before_training(tmp_path, capsys, run_log, shards_arg, expected):
    # In this process (offline, as conftest.py sets it): the exit status through the script is test_train's.
    args = ["--train_shards", shards_arg.format(root=tmp_path), "--max_train_steps", "2"]
    status = train_main([*TINY, *args, "--output_dir", str(tmp_path / "run")])
    stderr = capsys.readouterr().err + run_log.text
    assert status == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and expected in errors[0], stderr[-3000:]
    assert "Traceback" not in stderr and "Training" not in stderr


def test_epochs_of_a_stream_without_manifest_are_refused(shards, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    for tar in sorted(shards.glob("train-*.tar"))[:2]:
        shutil.copy(tar, bare)
    status = train_main([*TINY, "--train_shards", str(bare), "--output_dir", str(tmp_path / "run")])
    stderr = capsys.readouterr().err
    assert status == 2 and "--max_train_steps" in stderr, stderr[-3000:]


def test_an_interrupted_prepare_leaves_no_partial_shard_and_resumes(tmp_path, capsys, run_log):
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
    # A writer killed in the middle of a record leaves its temporary file (made here, whatever the kill hit).
    (out / ".prepare-progress.json.0badc0de.tmp").write_text('{"shards": [')
    # The resume needs no process of its own: the CLI in this process.
    from ddpm_hub.cli import main as cli_main

    assert cli_main(["prepare", *args]) == 0, capsys.readouterr().err[-3000:]
    assert "Resuming" in run_log.text
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


def _stop_two(args: list[str], output_dir: Path, cwd: Path, after_step: int, how: str) -> tuple[int, str]:
    """Start a two-process run, stop it with `how` once it has logged `after_step`; its exit status and output."""
    process = subprocess.Popen(
        _accelerate_two(*args, "--output_dir", str(output_dir)),
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + SUBPROCESS_TIMEOUT
    while time.time() < deadline and _steps_logged(output_dir) < after_step and process.poll() is None:
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
    return process.returncode, output


def test_a_two_process_streamed_run_stopped_by_sigterm_then_killed_resumes_bit_identically(
    small_shards, straight_two, tmp_path
):
    # One run stopped both ways: SIGTERM, a resume of it killed with SIGKILL, and a last resume to the end. Each
    # resume must restore the exact stream position of 2 processes x 2 workers for the weights to match.
    args = _two_process_args(small_shards)
    resume = ["--resume_from_checkpoint", "latest"]
    stopped = tmp_path / "stopped"
    # Into the second epoch (steps 5-8), so that the resumed run starts from a position within a later epoch.
    status, output = _stop_two(args, stopped, tmp_path, 5, "SIGTERM")
    assert status == 0 and "Stopped by SIGTERM" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert not (stopped / "model_index.json").exists()
    termed = _checkpoint_steps(stopped)
    assert termed and 4 <= termed[-1] < SMALL_STEPS, (termed, output[-3000:])

    _, output = _stop_two([*args, *resume], stopped, tmp_path, termed[-1] + 5, "SIGKILL")
    assert f"checkpoint-{termed[-1]}" in output, output[-3000:]  # resumed from the SIGTERM's checkpoint
    assert "approximately" not in output  # the same 2 processes x 2 workers: the exact position
    steps = _checkpoint_steps(stopped)
    assert termed[-1] < steps[-1] < SMALL_STEPS, (steps, output[-3000:])
    # Resume within an epoch: from the last checkpoint that is not on an epoch's boundary.
    per_epoch = json.loads((straight_two / "training_config.json").read_text())["steps_per_epoch"]
    assert per_epoch == 4
    while steps[-1] % per_epoch == 0:
        shutil.rmtree(stopped / f"checkpoint-{steps.pop()}")
    assert steps[-1] > termed[-1], steps
    resumed = ok(launch(*args, "--output_dir", str(stopped), *resume, cwd=tmp_path, processes=2))
    assert f"checkpoint-{steps[-1]}" in resumed.stderr
    assert "approximately" not in resumed.stderr
    assert _checkpoint_steps(stopped)[-1] == SMALL_STEPS  # the resumed run did all the steps
    last = f"checkpoint-{SMALL_STEPS}/model.safetensors"
    assert_same_weights(straight_two / last, stopped / last)
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert_same_weights(straight_two / unet, stopped / unet)


def test_a_resume_on_another_number_of_processes_warns_that_the_position_is_approximate(
    small_shards, straight_two, tmp_path, run_log
):
    out = tmp_path / "one"
    out.mkdir()
    shutil.copytree(straight_two / "checkpoint-6", out / "checkpoint-6")
    args = [*_two_process_args(small_shards), "--max_train_steps", "10"]
    assert train_main([*args, "--output_dir", str(out), "--resume_from_checkpoint", "latest"]) == 0
    # The checkpoint is of 2 processes x 2 workers, this run 1 x 2: allowed, and said in one warning.
    warnings = [r.getMessage() for r in run_log.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "stream position is of 2 processes x 2 workers, this run has 1 x 2" in w]) == 1
    assert "approximately, not exactly" in run_log.text
    assert "approximately, not exactly" in (out / "train.log").read_text()
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert _checkpoint_steps(out)[-1] == 10


# ---- evaluation during a streamed run ---------------------------------------------------------------------------

SMALL = "efficientnet-lite0-40"  # 40-dimensional features: FID from 41+ images, fast on a CPU
EVAL = ["--eval_num_samples", "44", "--eval_features", SMALL, "--eval_num_inference_steps", "2"]


def test_eval_steps_on_a_stream_score_its_first_images_keep_the_best_and_leave_training_alone(
    small_shards, tmp_path, capsys, monkeypatch
):
    from test_train import metrics_log

    from ddpm_hub.cli import main as cli_main

    cache = tmp_path / "cache"
    monkeypatch.setenv("DDPM_HUB_CACHE", str(cache))
    args = [*TINY, "--train_shards", str(small_shards / PATTERN), "--max_train_steps", "4"]
    args += ["--dataloader_num_workers", "1", "--eval_batch_size", "22", "--checkpointing_steps", "4"]
    out, plain = tmp_path / "run", tmp_path / "plain"
    assert train_main([*args, "--eval_steps", "2", *EVAL, "--output_dir", str(out)]) == 0
    fids = [line for line in metrics_log(out) if "eval_fid" in line]
    assert [line["step"] for line in fids] == [2, 4] and all(line["eval_fid"] > 0 for line in fids)
    assert (out / "best" / "model_index.json").is_file() and (out / "best" / "unet").is_dir()
    best = json.loads((out / "best" / "eval_results.json").read_text())
    assert best["fid"] == pytest.approx(min(line["eval_fid"] for line in fids)) and best["extractor"] == SMALL
    assert best["reference"] == f"8 shards of {small_shards}"
    card = json.loads((out / "metrics.json").read_text())
    assert f"8 shards of {small_shards} (64 images)" in card["eval_settings"] and "best_fid" in card
    stats = sorted((cache / "reference_stats").glob("*.npz"))
    assert len(stats) == 1

    # Reading the references and evaluating leave the training stream (and every draw) as they were.
    assert train_main([*args, "--output_dir", str(plain)]) == 0
    weights = "checkpoint-4/model.safetensors"
    assert_same_weights(out / weights, plain / weights)

    # `ddpm-hub eval --reference SHARDS` keys the same shards the same way: one cache for both.
    evaluation = ["eval", str(out), "--reference", str(small_shards / PATTERN), "--features", SMALL]
    evaluation += ["--num_samples", "44", "--num_inference_steps", "2", "--cache_dir", str(cache / "reference_stats")]
    status = cli_main([*evaluation, "--output", str(tmp_path / "eval.json")])
    assert status == 0, capsys.readouterr().err[-3000:]
    assert json.loads((tmp_path / "eval.json").read_text())["reference_images"] == 64
    assert sorted((cache / "reference_stats").glob("*.npz")) == stats


def test_stream_reference_statistics_are_keyed_by_the_shard_set_and_the_resolution(small_shards, tmp_path):
    import torch

    from ddpm_hub.data import open_streamed_images
    from ddpm_hub.evaluation.features import get_extractor
    from ddpm_hub.evaluation.reference import reference_statistics

    extractor = get_extractor(SMALL, torch.device("cpu"), 64)
    cache = tmp_path / "cache"

    def statistics(pattern: str, resolution: int):
        stream = open_streamed_images(train_shards=str(small_shards / pattern), resolution=resolution)
        return reference_statistics(
            extractor, stream.identity(), resolution=resolution, channels=stream.channels, cache_dir=cache,
            images=stream.reference_images,
        )  # fmt: skip

    first = statistics(PATTERN, 16)
    assert not first.from_cache and first.num_images == 64
    assert statistics(PATTERN, 16).from_cache  # the same shards at the same size: the cache
    subset = statistics("train-{000000..000005}.tar", 16)  # another shard set: its own statistics
    assert not subset.from_cache and subset.num_images == 48
    smaller = statistics(PATTERN, 8)  # another resolution: its own statistics
    assert not smaller.from_cache and smaller.num_images == 64
    assert len({first.cache_file, subset.cache_file, smaller.cache_file}) == 3
    assert len(list(cache.glob("*.npz"))) == 3


# ---- a stream shorter than its manifest --------------------------------------------------------------------------


def _short_shards(root: Path, unreadable: int, shard: int = 1) -> Path:
    """16 images at 16 px in 2 shards of 8 with a manifest, then `unreadable` members of shard `shard` garbled (the
    manifest still counts 8 images there)."""
    from ddpm_hub.data import draw_shapes

    (root / "images").mkdir(parents=True)
    for i, image in enumerate(draw_shapes(16, size=16, seed=5)):
        image.save(root / "images" / f"{i:03d}.png")
    assert prepare_main([str(root / "images"), str(root / "shards"), "--resolution", "16", "--shard_size", "8"]) == 0
    shard = root / "shards" / f"train-{shard:06d}.tar"
    with tarfile.open(shard) as tar:
        members = {member.name: tar.extractfile(member).read() for member in tar.getmembers()}
    for name in list(members)[:unreadable]:
        members[name] = b"\x89PNG\r\n\x1a\n not a PNG"
    _tar(shard, members)
    return root / "shards"


def test_a_short_stream_repeats_samples_warns_once_runs_the_manifest_steps_and_resumes_exactly(tmp_path, run_log):
    # Shard 0 is short; with seed 0 worker 0 reads it in epochs 0 and 1, so its repeat is in the epoch's 3rd batch.
    shards = _short_shards(tmp_path / "data", unreadable=1, shard=0)
    # 2 workers, a shard each: 8 images (2 batches of 4) per reader by the manifest, 4 steps an epoch.
    args = [*TINY, "--train_shards", str(shards), "--num_epochs", "2", "--train_batch_size", "4"]
    args += ["--dataloader_num_workers", "2", "--shuffle_buffer_size", "4", "--checkpointing_steps", "1"]
    straight = tmp_path / "straight"
    assert train_main([*args, "--output_dir", str(straight)]) == 0
    assert json.loads((straight / "metrics.json").read_text())["optimizer_steps"] == 8
    warnings = [r.getMessage() for r in run_log.records if r.levelno == logging.WARNING and "fewer samples" in r.msg]
    assert len(warnings) == 1, run_log.text[-3000:]
    assert "epoch 0: process 0 repeated 1 sample (1 unreadable image skipped)" in warnings[0]
    assert "the manifest's 4 batches an epoch" in warnings[0]
    assert "INFO ddpm_hub.data.stream" in (straight / "train.log").read_text()  # epoch 1: a line of the log

    # Resumes end bit-identically: after step 3 (worker 0 has repeated a sample: its position says so) and after
    # step 5 (worker 1 has not yet delivered a batch of epoch 1: its position is the start of epoch 1, not 0).
    for step in (3, 5):
        resumed = tmp_path / f"resumed-{step}"
        resumed.mkdir()
        shutil.copytree(straight / f"checkpoint-{step}", resumed / f"checkpoint-{step}")
        assert train_main([*args, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"]) == 0
        assert_same_weights(straight / "checkpoint-8/model.safetensors", resumed / "checkpoint-8/model.safetensors")


def test_a_split_without_a_readable_image_is_one_line(tmp_path, capsys, run_log):
    shards = _short_shards(tmp_path / "data", unreadable=8)
    args = [*TINY, "--train_shards", str(shards), "--num_epochs", "1", "--train_batch_size", "4"]
    args += ["--dataloader_num_workers", "2", "--output_dir", str(tmp_path / "run")]
    status = train_main(args)
    stderr = capsys.readouterr().err + run_log.text
    assert status == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "found no readable image in its split of epoch 0" in errors[0], stderr[-3000:]
    assert "ddpm-hub prepare" in errors[0] and "Traceback" not in stderr


def test_two_processes_one_with_a_short_split_finish_without_hanging(tmp_path):
    shards = _short_shards(tmp_path / "data", unreadable=2)
    # 2 processes x 1 worker, a shard each: 2 batches of 4 per process by the manifest; one process is 2 short.
    args = [*TINY, "--train_shards", str(shards), "--num_epochs", "2", "--train_batch_size", "4"]
    args += ["--dataloader_num_workers", "1", "--output_dir", str(tmp_path / "run")]
    result = ok(launch(*args, cwd=tmp_path, processes=2))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["optimizer_steps"] == 4
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line and "fewer samples" in line]
    assert len(warnings) == 1, result.stderr[-3000:]
    assert re.search(r"epoch 0: process [01] repeated 2 samples \(2 unreadable images skipped\)\.", warnings[0])
