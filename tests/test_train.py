"""train_unconditional.py end to end, through the real command line (`accelerate launch` or `python`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, SUBPROCESS_TIMEOUT, clean_env, run_python
from odd_images import make_odd_image_folder
from safetensors.torch import load_file

from ddpm_hub import DDPMHubPipeline
from ddpm_hub.train import main as train_main

ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
SCRIPT = str(REPO_ROOT / "train_unconditional.py")
# A tiny model on the procedural set: each optimizer step takes milliseconds on a CPU.
TINY = [
    "--dataset_name", "shapes", "--model", "tiny", "--max_train_samples", "64", "--train_batch_size", "8",
    "--ddpm_num_inference_steps", "2", "--eval_batch_size", "4", "--logging_steps", "2", "--logger", "none",
]  # fmt: skip


def launch(
    *args,
    cwd: Path,
    processes: int = 1,
    python: bool = False,
    timeout: int = SUBPROCESS_TIMEOUT,
    env: dict | None = None,
):
    """Run the training script as a user would: `accelerate launch` (or plain `python` where that is the point)."""
    if python:
        command = [sys.executable, SCRIPT, *args]
    else:
        command = [ACCELERATE, "launch", "--num_processes", str(processes), "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
        if processes > 1:
            command += ["--multi_gpu", "--main_process_port", str(_free_port())]
        command += [SCRIPT, *args]
    return subprocess.run(command, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def weights(path: Path) -> dict:
    return load_file(str(path))


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    different = [k for k in first if not (first[k] == second[k]).all()]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def metrics_log(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def run_log(caplog):
    """The log of training runs in this process (`train_main`, no interpreter start-up): INFO and above."""
    caplog.set_level(logging.INFO)
    return caplog


def test_accelerate_launch_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = ok(
        launch(
            *TINY,
            "--output_dir",
            str(out),
            "--max_train_steps",
            "6",
            "--checkpointing_steps",
            "3",
            "--logger",
            "tensorboard",
            "--save_images_steps",
            "3",
            cwd=tmp_path,
            env=clean_env(OMP_NUM_THREADS="1"),
        )  # fmt: skip
    )
    assert "Training: 100%" in result.stderr  # the progress bar ran to the end
    assert "limited this CPU run to 1 thread" not in result.stderr  # the user's OMP_NUM_THREADS is kept
    # The pipeline, with everything a user and the Hub need beside it.
    for name in ("model_index.json", "pipeline.py", "unet/diffusion_pytorch_model.safetensors",
                 "scheduler/scheduler_config.json", "README.md", "sample_grid.png", "training_config.json",
                 "metrics.json", "metrics.jsonl", "train.log"):  # fmt: skip
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-0000003.png", "step-0000006.png"]
    assert [p.name for p in sorted(out.glob("checkpoint-*"))] == ["checkpoint-3", "checkpoint-6"]
    assert not list(out.glob(".*tmp"))  # no staging folders left behind
    events = list((out / "logs").rglob("events.out.tfevents.*"))
    assert events and any(b"loss" in e.read_bytes() for e in events)
    config = json.loads((out / "training_config.json").read_text())
    assert config["model"] == "tiny" and config["total_batch_size"] == 8 and config["max_train_steps"] == 6
    log = (out / "train.log").read_text()
    assert "step 6: loss" in log and "images_per_second" in log and "epoch_seconds" in log
    steps = [row for row in metrics_log(out) if "loss" in row]
    assert [row["step"] for row in steps] == [2, 4, 6]
    assert all(row["loss"] > 0 and row["images_per_second"] > 0 for row in steps)
    card = (out / "README.md").read_text()
    assert "library_name: diffusers" in card and "pipeline_tag: unconditional-image-generation" in card
    assert "| resolution | 16 |" in card and "final_loss" in card

    # The loading matrix holds for the trained output: stock diffusers without ddpm_hub, and our class.
    stock = run_python(
        f"from diffusers import DiffusionPipeline\n"
        f"pipe = DiffusionPipeline.from_pretrained({str(out)!r})\n"
        f"print(type(pipe).__name__, pipe(num_inference_steps=2, output_type='np').images.shape)",
        without_ddpm_hub=True,
    )
    assert "DDPMPipeline (1, 16, 16, 3)" in stock
    pipe = DDPMHubPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.set_sampler("ddim")(num_inference_steps=2, output_type="np").images.shape == (1, 16, 16, 3)


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, run_log):
    # Accumulation, flips, dropout, v-prediction and Min-SNR all draw on or depend on state that resume must restore;
    # checkpoint 3 falls in the middle of the second epoch (2 optimizer steps per epoch).
    args = [*TINY, "--max_train_samples", "32", "--max_train_steps", "7", "--gradient_accumulation_steps", "2",
            "--random_flip", "--dropout", "0.1", "--prediction_type", "v_prediction", "--snr_gamma", "5",
            "--checkpointing_steps", "3"]  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train_main([*args, "--output_dir", str(straight)]) == 0
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-3", resumed / "checkpoint-3")  # as if the first run had died here
    run_log.clear()
    assert train_main([*args, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"]) == 0
    assert "Resumed from" in run_log.text and "at step 3 (epoch 1, batch 2)" in run_log.text
    assert_same_weights(straight / "checkpoint-7" / "model.safetensors", resumed / "checkpoint-7" / "model.safetensors")
    # The exported pipeline holds the EMA weights, which must match too.
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert_same_weights(straight / unet, resumed / unet)
    assert not (
        weights(straight / unet)["conv_in.weight"]
        == weights(straight / "checkpoint-7/model.safetensors")["conv_in.weight"]
    ).all()


def test_sigterm_checkpoints_and_exits_cleanly_then_resumes_exactly(tmp_path):
    args = [*TINY, "--max_train_samples", "512", "--max_train_steps", "150", "--checkpointing_steps", "1000",
            "--logging_steps", "1", "--save_images_epochs", "100"]  # fmt: skip
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    # The uninterrupted run and the resume train in this process; only the run that is stopped needs its own.
    assert train_main([*args, "--output_dir", str(straight)]) == 0

    process = subprocess.Popen(
        [sys.executable, SCRIPT, *args, "--output_dir", str(stopped)],
        cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.time() + SUBPROCESS_TIMEOUT
    while time.time() < deadline and not (stopped / "metrics.jsonl").exists():
        time.sleep(0.2)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert process.returncode == 0, output[-3000:]
    assert "Received SIGTERM" in output and "Traceback" not in output
    checkpoints = list(stopped.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and not (stopped / "model_index.json").exists()
    step = int(checkpoints[0].name.split("-")[1])
    assert 0 < step < 150, step
    assert f"Stopped by SIGTERM at step {step}" in output

    assert train_main([*args, "--output_dir", str(stopped), "--resume_from_checkpoint", "latest"]) == 0
    assert_same_weights(
        straight / "checkpoint-150" / "model.safetensors", stopped / "checkpoint-150" / "model.safetensors"
    )
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert_same_weights(straight / unet, stopped / unet)


def test_two_processes_train_one_coherent_model(tmp_path):
    out = tmp_path / "ddp"
    result = ok(launch(*TINY, "--output_dir", str(out), "--max_train_steps", "4", "--checkpointing_steps", "1",
                       "--checkpoints_total_limit", "2", cwd=tmp_path, processes=2))  # fmt: skip
    # Rotation keeps the newest two; the older ones were deleted only after newer ones were complete.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    assert "batch 8 per device x 2 processes x 1 accumulation = 16" in result.stderr
    config = json.loads((out / "training_config.json").read_text())
    assert config["num_processes"] == 2 and config["total_batch_size"] == 16
    # Every process's RNG state is checkpointed (per-rank noise), the files are written once.
    assert {p.name for p in (out / "checkpoint-4").glob("random_states_*.pkl")} == {
        "random_states_0.pkl",
        "random_states_1.pkl",
    }
    assert (out / "train.log").read_text().count("Saved the pipeline") == 1
    assert [row["step"] for row in metrics_log(out) if "loss" in row] == [2, 4]
    DDPMHubPipeline.from_pretrained(out)


def test_odd_image_folder_trains_and_reports_skips(tmp_path, run_log):
    folder = make_odd_image_folder(tmp_path / "images")
    out = tmp_path / "odd"
    assert train_main(["--train_data_dir", str(folder), "--model", "tiny", "--train_batch_size", "4",
                       "--max_train_steps", "2", "--eval_batch_size", "1", "--ddpm_num_inference_steps", "1",
                       "--logger", "none", "--output_dir", str(out)]) == 0  # fmt: skip
    log = (out / "train.log").read_text()
    assert "on 10 images of image folder" in log and "(3 unreadable skipped)" in log
    assert "Skipped 3 of 13 images" in run_log.text and "Skipping 2 files" in run_log.text


def test_lr_warmup_counts_optimizer_steps_under_accumulation(tmp_path):
    out = tmp_path / "lr"
    assert train_main([*TINY, "--output_dir", str(out), "--max_train_steps", "6", "--gradient_accumulation_steps", "4",
                       "--learning_rate", "1e-3", "--lr_scheduler", "constant_with_warmup", "--lr_warmup_steps", "4",
                       "--logging_steps", "1", "--train_batch_size", "4"]) == 0  # fmt: skip
    lrs = [row["lr"] for row in metrics_log(out) if "lr" in row]
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_finetuning_starts_from_the_pretrained_weights(saved_pipeline_dir, tmp_path, run_log):
    # A saved pipeline with an epsilon model on a linear schedule (training's defaults are v_prediction, cosine).
    base = saved_pipeline_dir
    assert json.loads((base / "scheduler/scheduler_config.json").read_text())["beta_schedule"] == "linear"
    tuned = tmp_path / "tuned"
    args = ["--max_train_steps", "1", "--pretrained_model_name_or_path", str(base), "--learning_rate", "1e-12",
            "--adam_weight_decay", "0", "--lr_warmup_steps", "0"]  # fmt: skip
    assert train_main([*TINY, *args, "--output_dir", str(tuned)]) == 0
    before = weights(base / "unet/diffusion_pytorch_model.safetensors")
    after = weights(tuned / "unet/diffusion_pytorch_model.safetensors")
    assert max((before[k] - after[k]).abs().max().item() for k in before) < 1e-8
    # The schedule comes with the model unless flags change it.
    scheduler = json.loads((tuned / "scheduler/scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "epsilon" and scheduler["beta_schedule"] == "linear"
    assert "fine-tuned from" in (tuned / "train.log").read_text()


def test_model_config_file_bf16_and_a_ddpm_only_schedule(tmp_path):
    config = tmp_path / "unet.json"
    config.write_text(json.dumps({
        "sample_size": 16, "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
        "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"],
    }))  # fmt: skip
    out = tmp_path / "bf16"
    ok(launch(*TINY, "--output_dir", str(out), "--max_train_steps", "2", "--model_config_name_or_path", str(config),
              "--mixed_precision", "bf16", "--ddpm_beta_schedule", "sigmoid", "--preview_sampler", "dpmpp_2m",
              cwd=tmp_path))  # fmt: skip
    saved = json.loads((out / "unet/config.json").read_text())
    assert saved["block_out_channels"] == [8, 16] and saved["norm_num_groups"] == 4
    assert all(row["loss"] == row["loss"] for row in metrics_log(out) if "loss" in row)  # finite, not NaN
    assert json.loads((out / "training_config.json").read_text())["mixed_precision_effective"] == "bf16"


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compile_and_gradient_checkpointing(tmp_path, monkeypatch, backend):
    # aot_eager traces forward and backward like inductor, without its minute of C++ code generation on a CPU.
    # The three runs are in this process: the compile cache folder is an environment variable, restored afterwards.
    out = tmp_path / "compiled"
    cache = str(tmp_path / "compile-cache")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", cache)
    args = [*TINY, "--output_dir", str(out), "--compile", "--compile_backend", backend, "--gradient_checkpointing",
            "--checkpointing_steps", "2", "--compile_cache_dir", cache]  # fmt: skip
    assert train_main([*args, "--max_train_steps", "2"]) == 0
    # Checkpoints hold plain parameter names: a compiled run resumes without --compile, and the other way round.
    plain = [a for a in args if a not in ("--compile", "--compile_backend", backend, "--compile_cache_dir", cache)]
    assert train_main([*plain, "--max_train_steps", "4", "--resume_from_checkpoint", "latest"]) == 0
    assert train_main([*args, "--max_train_steps", "6", "--resume_from_checkpoint", "latest"]) == 0
    for path in (
        "unet/diffusion_pytorch_model.safetensors",
        "checkpoint-2/model.safetensors",
        "checkpoint-6/model.safetensors",
    ):
        assert not [k for k in weights(out / path) if "_orig_mod" in k], path
    DDPMHubPipeline.from_pretrained(out)


def test_default_run_shape(tmp_path, capsys, monkeypatch, run_log):
    # The no-flag run is the README's first command; CI runs its first steps (the whole run is minutes long), in
    # this process (test_accelerate_launch_end_to_end is the run through `accelerate launch`).
    monkeypatch.chdir(tmp_path)
    assert train_main(["--max_train_steps", "2", "--eval_batch_size", "2", "--ddpm_num_inference_steps", "2"]) == 0
    out = tmp_path / "ddpm-model"
    config = json.loads((out / "training_config.json").read_text())
    assert config["model"] == "small" and config["resolution"] == 32 and config["dataset_size"] == 4009
    assert "twemoji (built in)" in run_log.text
    card = (out / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "Twemoji graphics by Twitter, Inc." in card
    # A second run into the same folder must not silently overwrite it (refused before anything is read).
    capsys.readouterr()
    assert train_main(["--max_train_steps", "2", "--output_dir", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"train_unconditional.py: error: --output_dir {str(out)!r} already holds"), error


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: nothing to undo")
def test_lone_cpu_process_under_accelerate_launch_uses_every_core_unless_told(tmp_path):
    # accelerate launch sets OMP_NUM_THREADS=1 for its child unless the user chose a count. The run stops at its
    # data (a folder without images), after the threads are set: the log says what was chosen, cheaply.
    (tmp_path / "empty").mkdir()
    args = ["--train_data_dir", str(tmp_path / "empty"), "--model", "tiny", "--output_dir", str(tmp_path / "out")]
    unset = launch(*args, cwd=tmp_path, env={k: v for k, v in clean_env().items() if k != "OMP_NUM_THREADS"})
    assert unset.returncode != 0 and "holds no image files" in unset.stderr
    assert "limited this CPU run to 1 thread; using" in unset.stderr
    # A count the user chose (OMP_NUM_THREADS=1) is kept: test_accelerate_launch_end_to_end runs with it.


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train_batch_size", "0"], "--train_batch_size must be positive, got 0"),
        (["--learning_rate", "-1"], "--learning_rate must be positive, got -1.0"),
        (["--max_train_steps", "-5"], "--max_train_steps must be positive"),
        (["--ddpm_num_steps", "1"], "--ddpm_num_steps must be at least 2"),
        (["--ddpm_beta_schedule", "cosin"], "--ddpm_beta_schedule 'cosin' is not one of: linear, cosine"),
        (["--model", "ddpm-65"], "--model 'ddpm-65' is not one of: ddpm-64, cats-128"),
        (["--prediction_type", "eps"], "--prediction_type 'eps' is not one of: epsilon, v_prediction, sample"),
        (["--lr_scheduler", "cosine_annealing"], "--lr_scheduler 'cosine_annealing' is not one of"),
        (["--preview_sampler", "dpm++"], r"--preview_sampler 'dpm\+\+' is not one of"),
        (["--model", "ddpm-64", "--resolution", "48"], "resolution 48 is not divisible by 32"),
        (["--model", "small", "--attention_resolutions", "5"], r"attention_resolutions \[5\] never occur"),
        (["--train_data_dir", "/no/such/folder"], "--train_data_dir '/no/such/folder' is not a folder"),
        (["--dataset_name", "shapes", "--train_data_dir", "."], "either --dataset_name or --train_data_dir"),
        (["--resume_from_checkpoint", "checkpoint-99"], "is not a complete checkpoint folder"),
        (["--pretrained_model_name_or_path", "/no/such/model"], "is not a loadable pipeline"),
        (["--mixed_precision", "fp8"], "invalid choice: 'fp8'"),
        (["--logger", "mlflow"], "invalid choice: 'mlflow'"),
        (["--hub_private_repo"], "need --push_to_hub"),
        (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit must be positive"),
        (["--dataset_name", "shapes", "--train_batch_size", "1000"], "fewer than one batch of 1000"),
        (
            ["--compile", "--compile_mode", "fast"],
            "--compile_mode 'fast' is not one of: default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs",
        ),
        (["--compile_mode", "default"], "--compile_mode and --compile_cache_dir need --compile"),
        (
            ["--compile", "--compile_backend", "aot_eager", "--compile_mode", "max-autotune"],
            "--compile_mode is for the inductor backend",
        ),
        (["--max_nonfinite_steps", "-1"], "--max_nonfinite_steps must be zero or positive"),
    ],
)
def test_bad_flags_fail_fast_with_one_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    try:
        code = train_main(["--output_dir", str(tmp_path / "out"), "--model", "tiny", *args])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("train_unconditional.py: error: ")
    assert __import__("re").search(message, error), error
    assert not (tmp_path / "out" / "unet").exists() and not list(tmp_path.rglob("checkpoint-*"))


def test_bad_flag_exit_status_through_the_script(tmp_path):
    result = launch("--train_batch_size", "0", cwd=tmp_path, python=True)
    assert result.returncode == 2 and result.stderr.strip().endswith("--train_batch_size must be positive, got 0.")
    assert not (tmp_path / "ddpm-model").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_training_on_cuda(tmp_path, precision):
    out = tmp_path / precision
    env = {k: v for k, v in clean_env().items() if k != "CUDA_VISIBLE_DEVICES"}
    ok(launch(*TINY, "--model", "small", "--dataset_name", "twemoji", "--resolution", "32", "--output_dir", str(out),
              "--max_train_steps", "200", "--mixed_precision", precision, "--logging_steps", "20",
              "--eval_batch_size", "16", "--ddpm_num_inference_steps", "25", cwd=tmp_path, env=env))  # fmt: skip
    losses = [row["loss"] for row in metrics_log(out) if "loss" in row]
    assert losses and all(0 < loss < 10 for loss in losses), losses  # finite: no NaN or inf from fp16 overflow
    import numpy as np
    from PIL import Image

    grid = np.asarray(Image.open(out / "sample_grid.png"), dtype=np.float32)
    assert grid.mean() > 20 and grid.std() > 10  # not black, not flat
