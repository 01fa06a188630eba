"""The output-folder rules: a folder that is not a run is refused, and a run only ever replaces its own files."""

from __future__ import annotations

import pytest
from conftest import make_tiny_pipeline

from ddpm_hub.assembly import PipelineParts
from ddpm_hub.export import export_pipeline
from ddpm_hub.run_folder import check_output_dir, start_fresh_records


def user_folder(path):
    files = {"README.md": b"# my project\n", "pipeline.py": b"print('mine')\n", "metrics.json": b"{}",
             "scheduler/notes.txt": b"my notes", "unet/notes.txt": b"more notes"}  # fmt: skip
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return files


def test_a_non_empty_folder_that_is_not_a_run_is_refused_in_one_line(tmp_path):
    user_folder(tmp_path)
    with pytest.raises(ValueError, match="is not empty and is not a ddpm-hub run .* --overwrite_output_dir") as error:
        check_output_dir(tmp_path, overwrite=False, resuming=False)
    assert "\n" not in str(error.value)
    check_output_dir(tmp_path, overwrite=True, resuming=False)  # the explicit way
    check_output_dir(tmp_path / "new", overwrite=False, resuming=False)
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", overwrite=False, resuming=False)
    (tmp_path / "empty" / "train.log").write_text("a run that failed during setup\n")
    check_output_dir(tmp_path / "empty", overwrite=False, resuming=False)  # may be retried


def test_export_keeps_the_users_files_in_unet_and_scheduler(tmp_path):
    files = user_folder(tmp_path)
    pipe = make_tiny_pipeline()
    export_pipeline(PipelineParts(pipe.unet, pipe.scheduler), tmp_path)
    for name in ("scheduler/notes.txt", "unet/notes.txt"):
        assert (tmp_path / name).read_bytes() == files[name]
    assert (tmp_path / "unet/diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "scheduler/scheduler_config.json").is_file()
    # A folder holding only what an export wrote is replaced whole (no stale weights file survives).
    (tmp_path / "unet/notes.txt").unlink()
    before = (tmp_path / "unet").stat().st_ino
    export_pipeline(PipelineParts(pipe.unet, pipe.scheduler), tmp_path)
    assert (tmp_path / "unet").stat().st_ino != before


def test_starting_over_removes_only_the_previous_runs_records(tmp_path):
    (tmp_path / "samples").mkdir()
    for name in ("metrics.jsonl", "metrics.json", "train.log", "samples/step-0000002.png", "samples/mine.png",
                 "notes.txt", "sample_grid.png"):  # fmt: skip
        (tmp_path / name).write_text("x")
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "training_state.json").write_text("{}")
    start_fresh_records(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "notes.txt",
        "samples",
        "samples/mine.png",
    ]


# Through the real training entry point: tiny runs like tests/test_train.py's.
TINY = [
    "--dataset_name", "shapes", "--model", "tiny", "--max_train_samples", "16", "--train_batch_size", "8",
    "--ddpm_num_inference_steps", "2", "--eval_batch_size", "2", "--logging_steps", "2", "--logger", "none",
    "--save_images_steps", "2",
]  # fmt: skip


def train(*args) -> int:
    from ddpm_hub.train import main

    return main([*TINY, *args])


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_training_into_a_folder_that_is_not_a_run_changes_nothing(tmp_path, capsys):
    user_folder(tmp_path)
    before = snapshot(tmp_path)
    assert train("--output_dir", str(tmp_path), "--max_train_steps", "2") == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is not empty and is not a ddpm-hub run" in error and "--overwrite_output_dir" in error
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md",
        "metrics.json",
        "pipeline.py",
        "scheduler",
        "unet",
    ]


def test_overwrite_output_dir_replaces_only_what_a_run_writes(tmp_path):
    files = user_folder(tmp_path)
    (tmp_path / "data.csv").write_bytes(b"a,b\n")
    assert train("--output_dir", str(tmp_path), "--max_train_steps", "2", "--overwrite_output_dir") == 0
    for name in ("scheduler/notes.txt", "unet/notes.txt"):
        assert (tmp_path / name).read_bytes() == files[name], name
    assert (tmp_path / "data.csv").read_bytes() == b"a,b\n"
    assert (tmp_path / "model_index.json").is_file() and (
        tmp_path / "unet/diffusion_pytorch_model.safetensors"
    ).is_file()


def test_resuming_an_older_checkpoint_sets_the_abandoned_branch_aside_and_starts_over_fresh(tmp_path, caplog):
    from ddpm_hub.checkpointing import list_checkpoints, resolve_checkpoint

    out = tmp_path / "run"
    assert train("--output_dir", str(out), "--max_train_steps", "4", "--checkpointing_steps", "2") == 0
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-4"]
    with caplog.at_level("WARNING"):
        code = train("--output_dir", str(out), "--max_train_steps", "3", "--checkpointing_steps", "2",
                     "--checkpoints_total_limit", "1",
                     "--resume_from_checkpoint", str(out / "checkpoint-2"))  # fmt: skip
    assert code == 0
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-3"]  # the one just written survives rotation
    assert resolve_checkpoint(out, "latest") == out / "checkpoint-3"
    (abandoned,) = out.glob("abandoned-*")
    assert [p.name for p in abandoned.iterdir()] == ["checkpoint-4"] and "abandoned branch" in caplog.text

    # A new run over it starts its own records: no metrics or previews of the runs before.
    assert train("--output_dir", str(out), "--max_train_steps", "2", "--overwrite_output_dir") == 0
    steps = [
        row["step"]
        for row in map(__import__("json").loads, (out / "metrics.jsonl").read_text().splitlines())
        if "loss" in row
    ]
    assert steps == [2]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-0000002.png"]
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"] and abandoned.is_dir()
