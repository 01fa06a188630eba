"""Checkpoints appear whole or not at all, and rotation never costs the newest complete one."""

from __future__ import annotations

from pathlib import Path

import pytest

from ddpm_hub.checkpointing import list_checkpoints, resolve_checkpoint, save_checkpoint


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
