"""Checkpoints appear whole or not at all, and rotation never costs the newest complete one."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from diffusers.training_utils import EMAModel

from ddpm_hub.checkpointing import list_checkpoints, resolve_checkpoint, save_checkpoint
from ddpm_hub.files import NonFiniteWeightsError, WriteError


class FakeAccelerator:
    """Just what `save_checkpoint` uses of accelerate: one process whose save_state writes files (or dies)."""

    is_main_process = True

    def __init__(self, crash_after_files: int | None = None):
        self.crash_after_files = crash_after_files

    def wait_for_everyone(self):
        pass

    def save_state(self, output_dir: str):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(("model.safetensors", "optimizer.bin", "random_states_0.pkl")):
            if self.crash_after_files is not None and i == self.crash_after_files:
                raise KeyboardInterrupt("killed while saving")
            (Path(output_dir) / name).write_bytes(b"x" * 10)


def test_a_crash_while_saving_leaves_no_checkpoint_that_latest_would_pick(tmp_path):
    save_checkpoint(FakeAccelerator(), tmp_path, {"global_step": 4})
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(FakeAccelerator(crash_after_files=2), tmp_path, {"global_step": 8})
    assert not (tmp_path / "checkpoint-8").exists()
    assert resolve_checkpoint(tmp_path, "latest") == tmp_path / "checkpoint-4"
    # The next save of that step starts from a clean staging folder and completes.
    save_checkpoint(FakeAccelerator(), tmp_path, {"global_step": 8})
    assert resolve_checkpoint(tmp_path, "latest") == tmp_path / "checkpoint-8"
    assert sorted(p.name for p in (tmp_path / "checkpoint-8").iterdir()) == [
        "model.safetensors", "optimizer.bin", "random_states_0.pkl", "training_state.json"
    ]  # fmt: skip


def test_rotation_keeps_the_newest_and_orders_by_step_not_name(tmp_path):
    for step in (9, 10, 100, 11):
        save_checkpoint(FakeAccelerator(), tmp_path, {"global_step": step}, total_limit=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-11", "checkpoint-100"]


def test_resume_arguments_are_checked(tmp_path):
    assert resolve_checkpoint(tmp_path, None) is None
    assert resolve_checkpoint(tmp_path, "latest") is None  # nothing yet: start fresh, as diffusers' script does
    (tmp_path / "checkpoint-3").mkdir()  # a folder without its training_state.json is not a checkpoint
    assert resolve_checkpoint(tmp_path, "latest") is None
    with pytest.raises(ValueError, match="'checkpoint-3' is not a complete checkpoint folder"):
        resolve_checkpoint(tmp_path, "checkpoint-3")
    save_checkpoint(FakeAccelerator(), tmp_path, {"global_step": 5})
    assert resolve_checkpoint(tmp_path, "checkpoint-5") == tmp_path / "checkpoint-5"  # a name inside output_dir
    assert resolve_checkpoint(tmp_path, str(tmp_path / "checkpoint-5")) == tmp_path / "checkpoint-5"


class DiskFullAccelerator(FakeAccelerator):
    def save_state(self, output_dir: str):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"x" * 10)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_non_finite_weights_are_never_saved_and_never_rotate_a_good_checkpoint_away(tmp_path):
    model = torch.nn.Linear(3, 3)
    ema = EMAModel(model.parameters())
    save_checkpoint(FakeAccelerator(), tmp_path, {"global_step": 2}, total_limit=1, model=model, ema=ema)
    for poison in ("model", "ema"):
        with torch.no_grad():
            target = model.weight if poison == "model" else ema.shadow_params[0]
            saved = target.clone()
            target[0, 0] = float("nan") if poison == "model" else float("inf")
        with pytest.raises(
            NonFiniteWeightsError,
            match=r"step 4 hold NaN or infinity, so checkpoint-4 was not saved "
            r"\(the last good checkpoint is .*checkpoint-2\)",
        ):
            save_checkpoint(FakeAccelerator(), tmp_path, {"global_step": 4}, total_limit=1, model=model, ema=ema)
        with torch.no_grad():
            target.copy_(saved)
        assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-2"]  # nothing written, nothing rotated away
    assert resolve_checkpoint(tmp_path, "latest") == tmp_path / "checkpoint-2"


def test_latest_passes_over_checkpoints_marked_non_finite(tmp_path):
    save_checkpoint(FakeAccelerator(), tmp_path, {"global_step": 2})
    save_checkpoint(FakeAccelerator(), tmp_path, {"global_step": 4})
    state = tmp_path / "checkpoint-4" / "training_state.json"
    state.write_text(json.dumps({"global_step": 4, "finite": False}))  # e.g. copied from another tool's run
    assert resolve_checkpoint(tmp_path, "latest") == tmp_path / "checkpoint-2"
    state.write_text(json.dumps({"global_step": 4}))  # unmarked (an older ddpm-hub): counts as good
    assert resolve_checkpoint(tmp_path, "latest") == tmp_path / "checkpoint-4"


def test_a_full_disk_gives_one_line_removes_the_partial_folder_and_keeps_the_others(tmp_path):
    save_checkpoint(FakeAccelerator(), tmp_path, {"global_step": 2})
    with pytest.raises(WriteError) as raised:
        save_checkpoint(DiskFullAccelerator(), tmp_path, {"global_step": 4}, total_limit=1)
    assert str(raised.value) == (
        f"could not write checkpoint-4 to {tmp_path}: No space left on device (errno 28); earlier checkpoints are "
        "intact; free space (or fix the folder's permissions) and resume with --resume_from_checkpoint latest"
    )
    assert raised.value.errno == errno.ENOSPC
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-2"]


def test_rotation_never_deletes_the_checkpoint_just_written(tmp_path):
    # A resumed older branch: checkpoint-4 is stale, the new checkpoint-3 must survive a limit of 1.
    for step in (2, 4):
        save_checkpoint(FakeAccelerator(), tmp_path, {"global_step": step})
    save_checkpoint(FakeAccelerator(), tmp_path, {"global_step": 3}, total_limit=1)
    assert (tmp_path / "checkpoint-3").is_dir()


def test_checkpoints_of_an_abandoned_branch_are_moved_aside_not_mixed(tmp_path, caplog):
    from ddpm_hub.checkpointing import set_aside_abandoned

    for step in (2, 4, 6):
        save_checkpoint(FakeAccelerator(), tmp_path, {"global_step": step})
    with caplog.at_level("WARNING"):
        folder = set_aside_abandoned(tmp_path, 2)
    assert folder is not None and folder.name.startswith("abandoned-")
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-4", "checkpoint-6"]
    assert "abandoned branch" in caplog.text and "checkpoint-4, checkpoint-6" in caplog.text
    save_checkpoint(FakeAccelerator(), tmp_path, {"global_step": 3}, total_limit=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-3"]
    assert resolve_checkpoint(tmp_path, "latest") == tmp_path / "checkpoint-3"
    assert set_aside_abandoned(tmp_path, 3) is None
