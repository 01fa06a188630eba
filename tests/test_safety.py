"""When things go wrong: a diverged run, a full disk, a read-only folder, a checkpoint that would run code on resume.

Each case ends in one line saying what happened and what to do, and never costs the user what was already saved.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel
from safetensors.torch import load_file
from test_train import TINY

from ddpm_hub import train
from ddpm_hub.checkpointing import LEGACY_EMA_STATE, resolve_checkpoint
from ddpm_hub.files import WriteError
from ddpm_hub.training import trainer as trainer_module

SHORT = [*TINY, "--max_train_steps", "4", "--checkpointing_steps", "2", "--logging_steps", "100"]


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "error:" in line]


def train_in_process(args: list[str], capsys) -> tuple[int, list[str]]:
    """train_unconditional.py's `main` in this process (so tests can inject faults): (exit status, error lines)."""
    capsys.readouterr()
    status = train.main(args)
    return status, error_lines(capsys.readouterr().err)


def assert_finite_file(path: Path) -> None:
    assert all(torch.isfinite(t).all() for t in load_file(str(path)).values()), path


# ---------------------------------------------------------------------------------------------------------------
# A diverged run exports nothing and keeps its last good checkpoint.
# ---------------------------------------------------------------------------------------------------------------


def test_absurd_learning_rate_stops_with_one_line_and_saves_nothing_non_finite(tmp_path, capsys):
    out = tmp_path / "run"
    capsys.readouterr()
    status = train.main([*TINY, "--learning_rate", "1e8", "--max_train_steps", "12", "--checkpointing_steps", "2",
                         "--checkpoints_total_limit", "1", "--output_dir", str(out)])  # fmt: skip
    stderr = capsys.readouterr().err
    assert status != 0, stderr[-3000:]
    lines = error_lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert re.search(r"step \d+", lines[0]) and re.search(r"learning.rate", lines[0]), lines
    assert "--resume_from_checkpoint latest" in lines[0]
    # No pipeline was exported; every checkpoint left is finite and `latest` picks one of them.
    assert not (out / "model_index.json").exists() and not (out / "unet").exists()
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert checkpoints and not list(out.glob(".checkpoint-*"))
    for checkpoint in checkpoints:
        assert_finite_file(checkpoint / "model.safetensors")
        assert_finite_file(checkpoint / "ema.safetensors")
    assert resolve_checkpoint(out, "latest") == checkpoints[-1]


# ---------------------------------------------------------------------------------------------------------------
# Resume never unpickles: EMA as safetensors, old checkpoints read safely, code-running pickles refused or ignored.
# ---------------------------------------------------------------------------------------------------------------


class RunsCode:
    """Unpickling this creates `marker`: what a malicious checkpoint file would do (with any code instead)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_code_running_pickle(path: Path, marker: Path) -> None:
    payload = marker.with_name("payload.pkl")
    torch.save({"decay": 0.9999, "optimization_step": RunsCode(marker)}, payload)
    torch.load(payload, weights_only=False)  # the payload is live: an unsafe load would run it
    assert marker.exists()
    marker.unlink()
    shutil.copyfile(payload, path)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    assert train.main([*SHORT, "--output_dir", str(out)]) == 0
    return out


def test_checkpoints_hold_ema_as_safetensors_and_no_pickled_custom_state(straight_run):
    checkpoint = straight_run / "checkpoint-2"
    assert (checkpoint / "ema.safetensors").is_file() and not list(checkpoint.glob("custom_checkpoint_*"))
    counters = json.loads((checkpoint / "ema.json").read_text())
    assert counters["optimization_step"] == 2 and "shadow_params" not in counters
    assert json.loads((checkpoint / "training_state.json").read_text())["finite"] is True


def test_previous_versions_checkpoint_resumes_exactly_and_stray_pickles_are_never_loaded(
    straight_run, tmp_path, capsys
):
    out, marker = tmp_path / "resumed", tmp_path / "marker"
    checkpoint = shutil.copytree(straight_run / "checkpoint-2", out / "checkpoint-2")
    # The previous version's layout: EMAModel.state_dict() pickled by accelerate's custom-state hook.
    names = [name for name, _ in UNet2DModel.from_pretrained(straight_run / "unet").named_parameters()]
    shadow = load_file(str(checkpoint / "ema.safetensors"))
    state = {**json.loads((checkpoint / "ema.json").read_text()), "shadow_params": [shadow[n] for n in names]}
    torch.save(state, checkpoint / LEGACY_EMA_STATE)
    (checkpoint / "ema.safetensors").unlink()
    (checkpoint / "ema.json").unlink()
    write_code_running_pickle(checkpoint / "custom_checkpoint_1.pkl", marker)  # a stray extra "custom state"

    status, lines = train_in_process([*SHORT, "--output_dir", str(out), "--resume_from_checkpoint", "latest"], capsys)
    assert status == 0, lines
    assert not marker.exists()
    for name in ("model.safetensors", "ema.safetensors"):
        first, second = (
            load_file(str(straight_run / "checkpoint-4" / name)),
            load_file(str(out / "checkpoint-4" / name)),
        )
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first), name


@pytest.mark.parametrize("replaced", [LEGACY_EMA_STATE, "ema.safetensors"])
def test_ema_file_replaced_by_a_code_running_pickle_is_refused_without_running_it(
    straight_run, tmp_path, capsys, replaced
):
    out, marker = tmp_path / "taken", tmp_path / "marker"
    checkpoint = shutil.copytree(straight_run / "checkpoint-2", out / "checkpoint-2")
    if replaced == LEGACY_EMA_STATE:
        (checkpoint / "ema.safetensors").unlink()
    write_code_running_pickle(checkpoint / replaced, marker)

    status, lines = train_in_process([*SHORT, "--output_dir", str(out), "--resume_from_checkpoint", "latest"], capsys)
    assert status == 2 and len(lines) == 1 and replaced in lines[0], lines
    assert not marker.exists()
    assert not (out / "checkpoint-4").exists()


# ---------------------------------------------------------------------------------------------------------------
# Full disks and read-only folders: one line, no partial folder, earlier work intact.
# ---------------------------------------------------------------------------------------------------------------


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return result.returncode == 0


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(folder: Path, leave: int = 256 * 1024) -> None:
    """Fill the file system holding `folder`, then free `leave` bytes (room for logs, not for a checkpoint)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 65536)
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)


def test_checkpoint_on_a_full_disk_ends_with_one_line_and_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    out = tmp_path / "disk"
    real_disk = _mount_tmpfs(out, "64m")
    try:
        saved = []
        real_save = trainer_module.save_checkpoint

        def disk_fills_after_the_first_checkpoint(*args, **kwargs):
            if saved:
                if real_disk:
                    _fill(out)
                else:  # no tmpfs here: the OS error a full disk gives, at the write

                    def no_space(*_, **__):
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                    monkeypatch.setattr(torch, "save", no_space)
            saved.append(real_save(*args, **kwargs))
            return saved[-1]

        monkeypatch.setattr(trainer_module, "save_checkpoint", disk_fills_after_the_first_checkpoint)
        status, lines = train_in_process([*SHORT, "--output_dir", str(out)], capsys)
        monkeypatch.undo()

        assert status == 1 and len(lines) == 1, lines
        assert f"could not write checkpoint-4 to {out}: No space left on device (errno 28)" in lines[0]
        assert "--resume_from_checkpoint latest" in lines[0]
        assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-2"]  # no partial one
        assert resolve_checkpoint(out, "latest") == out / "checkpoint-2"
        (out / "filler").unlink(missing_ok=True)
        status, lines = train_in_process(
            [*SHORT, "--output_dir", str(out), "--resume_from_checkpoint", "latest"], capsys
        )
        assert status == 0, lines
        assert (out / "checkpoint-4").is_dir() and (out / "model_index.json").is_file()
    finally:
        if real_disk:
            _unmount(out)


@contextlib.contextmanager
def read_only_folder(path: Path, monkeypatch):
    """`path` as a read-only folder: a read-only tmpfs as root, file permissions otherwise, else simulated."""
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
    elif _mount_tmpfs(path, "1m"):
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        try:
            yield path
        finally:
            _unmount(path)
    else:  # root without mount rights (a container): the errors a read-only file system gives
        import builtins

        real_open, real_mkdir = builtins.open, os.mkdir

        def inside(target) -> bool:
            return isinstance(target, (str, os.PathLike)) and Path(target).resolve().is_relative_to(path.resolve())

        def guarded(real):
            def call(target, *args, **kwargs):
                if inside(target) and (real is real_mkdir or "w" in (args[0] if args else kwargs.get("mode", "r"))):
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(target))
                return real(target, *args, **kwargs)

            return call

        monkeypatch.setattr(builtins, "open", guarded(real_open))
        monkeypatch.setattr(os, "mkdir", guarded(real_mkdir))
        yield path


def test_text2img_into_a_read_only_folder_is_one_line(tmp_path, capsys, monkeypatch):
    from tiny_sd import build_tiny_sd

    from ddpm_hub.text2img import main as text2img_main

    model = tmp_path / "model"
    build_tiny_sd(model)
    with read_only_folder(tmp_path / "ro", monkeypatch) as folder:
        capsys.readouterr()
        status = text2img_main(["--model", str(model), "--prompt", "a cat", "--num_inference_steps", "1",
                                "--height", "32", "--width", "32", "--output_dir", str(folder)])  # fmt: skip
        lines = error_lines(capsys.readouterr().err)
        assert status == 1 and len(lines) == 1, lines
        assert re.match(
            rf"text2img\.py: error: could not write images to {re.escape(str(folder))}: .+ \(errno \d+\)", lines[0]
        )
        assert list(folder.iterdir()) == []


def test_push_staging_in_a_read_only_folder_is_one_line(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from ddpm_hub.hub import HubPublisher

    with read_only_folder(tmp_path / "ro", monkeypatch) as folder:
        publisher = HubPublisher(HfApi(endpoint="http://127.0.0.1:9"), "org/name", folder)
        with pytest.raises(
            WriteError, match=r"could not write the upload's staging copy to .+ \(errno \d+\); a push stages"
        ):
            publisher.push("never sent")
        assert list(folder.iterdir()) == []
