"""`ddpm-hub distill` as a run: pushing the student to the Hub, --compile, and resuming across rounds.

The Hub tests run the real command in a subprocess against the local Hub server (`hub_server` in conftest.py), as
tests/test_hub.py does for training, then load the pushed repo from an empty cache through `HF_ENDPOINT`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import SUBPROCESS_TIMEOUT, clean_env, run_python
from safetensors.torch import load_file

REPO = "test-org/shapes-student"
# The procedural shapes at 16 px and the tiny UNet: a round takes seconds on a CPU.
DATA = (
    "--dataset_name shapes --max_train_samples 32 --train_batch_size 8 --logger none --eval_batch_size 4 "
    "--logging_steps 1 --lr_warmup_steps 0"
).split()
STUDENT_FILES = (
    ".gitattributes README.md metrics.json model_index.json pipeline.py pipeline_editing.py "
    "pipeline_guidance.py pipeline_parameterization.py pipeline_steps.py pipeline_superres.py pipeline_variance.py "
    "sample_grid.png scheduler/scheduler_config.json training_config.json unet/config.json "
    "unet/diffusion_pytorch_model.safetensors"
).split()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from conftest import make_tiny_pipeline

    path = tmp_path_factory.mktemp("teacher") / "tiny-teacher"
    make_tiny_pipeline().save_pretrained(path)
    return path


def hub_env(server, tmp_path, name: str = "hf") -> dict:
    env = server.client_env(tmp_path / name, base_env=clean_env(OMP_NUM_THREADS="1"))
    env["DDPM_HUB_RETRY_DELAY"] = "0.05"
    return env


def distill_cli(*args, env: dict, cwd) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ddpm_hub.cli", "distill", *map(str, args)]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)


def distill(*args) -> int:
    from ddpm_hub.cli import main

    return main(["distill", *map(str, args)])


# ---- several processes -------------------------------------------------------------------------------------------


def test_two_processes_distil_every_round_and_save_a_student_that_samples(teacher, tmp_path):
    # accelerate's end_training destroys the process group: a round must not, or the next one cannot start. The
    # teacher predicts epsilon, so both rounds (16 -> 8 -> 4) run the whole-trajectory loss under DDP.
    from test_train import ACCELERATE, _free_port

    from ddpm_hub import DDPMHubPipeline

    command = [ACCELERATE, "launch", "--num_processes", "2", "--num_machines", "1", "--multi_gpu",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               "-m", "ddpm_hub.cli", "distill", str(teacher), "--output_dir", str(tmp_path / "out"),
               "--start_steps", "16", "--end_steps", "4", "--steps_per_round", "4", "--eval_rounds", "false",
               *DATA]  # fmt: skip
    result = subprocess.run(
        command, env=clean_env(OMP_NUM_THREADS="1"), cwd=tmp_path, capture_output=True, text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for folder in ("round-8", "round-4"):
        config = json.loads((tmp_path / "out" / folder / "training_config.json").read_text())
        assert config["num_processes"] == 2 and "trajectory" in config["distill_loss"], config
    student = DDPMHubPipeline.from_pretrained(tmp_path / "out")
    student.set_progress_bar_config(disable=True)
    images = student(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


# ---- --push_to_hub ---------------------------------------------------------------------------------------------


def test_push_to_hub_uploads_the_final_student_that_loads_by_repo_id(hub_server, teacher, tmp_path):
    out = tmp_path / "student"
    scored = "--eval_features efficientnet-lite0-40 --eval_num_samples 48 --eval_metrics fid,kid --eval_teacher_steps 8"
    result = distill_cli(
        teacher,
        "--output_dir",
        out,
        *"--start_steps 4 --end_steps 2 --steps_per_round 2".split(),
        *scored.split(),
        "--push_to_hub",
        "--hub_model_id",
        REPO,
        *DATA,
        env=hub_env(hub_server, tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Pushed to the Hub: {hub_server.url}/{REPO}/commit/" in result.stderr
    # Only the final student goes to main, in one commit; the round folders and checkpoints stay local.
    assert [commit.title for commit in hub_server.commits(REPO)][0] == "Distilled tiny-teacher to 2 steps"
    assert hub_server.repo_files(REPO) == STUDENT_FILES
    assert set(hub_server.branches(REPO)) == {"main"}
    local = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    assert (
        hub_server.read_file(REPO, "unet/diffusion_pytorch_model.safetensors")
        == (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    )
    assert not [key for key in local if "_orig_mod" in key]
    # The card names the teacher (by its folder's name: no local path travels), the rounds, the steps, the scores.
    card = hub_server.read_file(REPO, "README.md").decode()
    assert "tiny-teacher" in card and "4 -> 2" in card and "round 2: student ddim 2 fid" in card, card
    assert "teacher dpmpp_2m 2 kid_mean" in card
    assert f'"{REPO}", custom_pipeline="{REPO}", trust_remote_code=True' in card  # its usage, at its own steps
    assert str(tmp_path) not in card and not [
        c for c in hub_server.commits(REPO) if str(tmp_path) in c.title + c.message
    ]
    for path in ("metrics.json", "training_config.json"):
        assert str(tmp_path) not in hub_server.read_file(REPO, path).decode(), path
    metrics = json.loads(hub_server.read_file(REPO, "metrics.json"))
    assert metrics["distilled_from"] == "tiny-teacher" and metrics["sampling_steps"] == 2
    assert json.loads((out / "metrics.json").read_text())["distilled_from"] == str(teacher)  # local: the full path
    scheduler = json.loads(hub_server.read_file(REPO, "scheduler/scheduler_config.json"))
    assert scheduler["_class_name"] == "DDIMScheduler" and scheduler["timestep_spacing"] == "trailing"

    # A round's student goes to a branch when asked (docs/distillation.md: `ddpm-hub push OUT/round-N`); here
    # round-2, the only round (an 8 -> 4 -> 2 run would push round-4 alike).
    pushed = subprocess.run(
        [sys.executable, "-m", "ddpm_hub.cli", "push", out / "round-2", "--repo_id", REPO, "--revision", "round-2"],
        env=hub_env(hub_server, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert pushed.returncode == 0, pushed.stderr[-4000:]
    assert hub_server.repo_files(REPO) == STUDENT_FILES  # main keeps the final student

    # From an empty cache, by repo id: stock diffusers (no ddpm_hub installed) runs the pipeline code in the repo,
    # whose default step count is the student's; the same from the round's branch.
    loaded = run_python(
        f"from diffusers import DiffusionPipeline\n"
        f"for revision in ('main', 'round-2'):\n"
        f"    pipe = DiffusionPipeline.from_pretrained({REPO!r}, revision=revision, custom_pipeline={REPO!r},\n"
        f"                                             custom_revision=revision, trust_remote_code=True)\n"
        f"    pipe.set_progress_bar_config(disable=True)\n"
        f"    images = pipe(batch_size=2, output_type='np').images\n"
        f"    print(revision, type(pipe).__name__, type(pipe.scheduler).__name__, images.shape,\n"
        f"          len(pipe.scheduler.timesteps))\n"
        f"stock = DiffusionPipeline.from_pretrained({REPO!r})\n"
        f"print(type(stock).__name__, stock(num_inference_steps=2, output_type='np').images.shape)\n",
        without_ddpm_hub=True,
        env=hub_env(hub_server, tmp_path, "fresh-cache"),
    )
    for revision in ("main", "round-2"):
        assert f"{revision} DDPMHubPipeline DDIMScheduler (2, 16, 16, 3) 2" in loaded, loaded
    assert "DDPMPipeline (1, 16, 16, 3)" in loaded, loaded


def test_push_checkpoints_is_refused(capsys, teacher, tmp_path):
    push = ["--push_to_hub", "--hub_model_id", REPO, "--hub_push_checkpoints"]
    code = distill(teacher, "--output_dir", tmp_path / "out", "--start_steps", 4, "--end_steps", 2, *push, *DATA)
    err = capsys.readouterr().err
    assert code == 2 and len([line for line in err.splitlines() if "error:" in line]) == 1, err
    assert "--hub_push_checkpoints" in err and "local" in err
    assert not (tmp_path / "out").exists()


# ---- resuming across rounds ------------------------------------------------------------------------------------

ROUNDS = [
    *"--start_steps 8 --end_steps 2 --steps_per_round 2 --checkpointing_steps 1 --eval_rounds false".split(),
    *DATA,
]
FINAL_STUDENT = ("unet", "scheduler", "pipeline.py", "model_index.json", "metrics.json", "README.md")


def remove(folder, names) -> None:
    import shutil

    for name in names:
        path = folder / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def finished(teacher, tmp_path_factory):
    """A whole 8 -> 4 -> 2 distillation (rounds in round-4/ and round-2/), to copy and damage."""
    out = tmp_path_factory.mktemp("finished") / "student"
    assert distill(teacher, "--output_dir", out, *ROUNDS) == 0
    return out


def killed_in_round_2(finished, tmp_path):
    """A copy of `finished` as after a SIGKILL in round 2 just after its checkpoint-1: round 1 is finished."""
    import shutil

    out = tmp_path / "student"
    shutil.copytree(finished, out)
    remove(out, FINAL_STUDENT)
    remove(out / "round-2", ("checkpoint-2", *FINAL_STUDENT))
    return out


def test_resume_after_the_last_round_only_writes_the_final_student(teacher, finished, tmp_path):
    import shutil

    out = tmp_path / "student"
    shutil.copytree(finished, out)
    remove(out, FINAL_STUDENT)  # killed between the last round's end and the final export
    weights = "unet/diffusion_pytorch_model.safetensors"
    rounds = {name: (out / name / weights).stat().st_mtime_ns for name in ("round-4", "round-2")}
    assert distill(teacher, "--output_dir", out, *ROUNDS, "--resume_from_checkpoint", "latest") == 0
    assert {name: (out / name / weights).stat().st_mtime_ns for name in rounds} == rounds  # no round redone
    assert (out / weights).read_bytes() == (finished / weights).read_bytes()
    assert json.loads((out / "metrics.json").read_text())["distillation_rounds"] == "8 -> 4 -> 2"


def corrupt_weights(out):
    (out / "round-4" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda out: remove(out, ["round-4"]), ["round 1 (8 -> 4 steps)", "missing or unfinished", "delete round-2"]),
        (lambda out: remove(out / "round-4", ["unet"]), ["round 1", "finished but unreadable", "no unet/"]),
        (corrupt_weights, ["round 1", "finished but unreadable", "SafetensorError", "delete round-4, round-2"]),
        (lambda out: (out / "round-4" / "metrics.json").write_text("{"), ["round 1", "JSONDecodeError"]),
        (lambda out: remove(out / "round-4", ["scheduler"]), ["round 1", "no scheduler/"]),
    ],
    ids=["missing", "no-unet", "corrupt-weights", "corrupt-metrics", "no-scheduler"],
)
def test_resume_refuses_a_missing_or_unreadable_round_in_one_line(capsys, teacher, finished, tmp_path, damage, words):
    out = killed_in_round_2(finished, tmp_path)
    damage(out)
    before = sorted(path.relative_to(out) for path in out.rglob("*"))
    code = distill(teacher, "--output_dir", out, *ROUNDS, "--resume_from_checkpoint", "latest")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for word in [*words, "--overwrite_output_dir"]:
        assert word in lines[0], lines[0]
    assert sorted(path.relative_to(out) for path in out.rglob("*")) == before  # nothing written or deleted


# ---- --compile -------------------------------------------------------------------------------------------------


def losses(folder) -> list[float]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


# aot_eager: 14-26 s on the 2-core machine at load 3-4 (105 s at load 7), mostly the first compilation in a process;
# inductor: 183 s (C++ code generation).
@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_distillation_follows_eager_saves_plain_names_and_resumes(teacher, tmp_path, backend):
    # aot_eager traces the step (forward, the teacher's two DDIM steps, backward) as inductor does, without its
    # minute of C++ code generation on a CPU.
    rounds = "--start_steps 4 --end_steps 2 --steps_per_round 4 --checkpointing_steps 2 --eval_rounds false"
    flags = [teacher, *rounds.split(), *DATA]
    compiled = ["--compile", "--compile_backend", backend, "--compile_cache_dir", tmp_path / "compile-cache"]
    assert distill(*flags, "--output_dir", tmp_path / "eager") == 0
    assert distill(*flags, *compiled, "--output_dir", tmp_path / "compiled") == 0
    eager_losses = losses(tmp_path / "eager" / "round-2")
    assert len(eager_losses) == 4 and losses(tmp_path / "compiled" / "round-2") == pytest.approx(eager_losses, rel=1e-4)
    config = json.loads((tmp_path / "compiled" / "round-2" / "training_config.json").read_text())
    assert config["compile_mode_effective"] != "none"
    for path in (
        "unet/diffusion_pytorch_model.safetensors",
        "round-2/checkpoint-2/model.safetensors",
        "round-2/checkpoint-4/model.safetensors",
    ):
        names = load_file(str(tmp_path / "compiled" / path)).keys()
        assert names and not [name for name in names if "_orig_mod" in name], path

    # A compiled run's checkpoint resumes without --compile, and an eager one with it, to the same weights.
    def resumed(run: str, *extra) -> dict:
        import shutil

        out = tmp_path / f"{run}-resumed"
        shutil.copytree(tmp_path / run, out)
        remove(out, FINAL_STUDENT)
        remove(out / "round-2", ("checkpoint-4", *FINAL_STUDENT))
        assert distill(*flags, *extra, "--output_dir", out, "--resume_from_checkpoint", "latest") == 0
        return load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))

    reference = load_file(str(tmp_path / "eager" / "unet" / "diffusion_pytorch_model.safetensors"))
    for weights in (resumed("compiled"), resumed("eager", *compiled)):
        assert weights.keys() == reference.keys()
        for name, tensor in reference.items():
            torch.testing.assert_close(weights[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
