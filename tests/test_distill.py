"""Progressive distillation (`ddpm-hub distill`): the target math, the rounds, the CLI's checks, and whole runs."""

from __future__ import annotations

import functools
import json

import pytest
import torch

from ddpm_hub import make_noise_scheduler
from ddpm_hub.distill.rounds import ddim_scheduler, round_step_counts, step_grid
from ddpm_hub.distill.targets import (
    Level,
    clipped_x_target,
    ddim_step,
    distillation_loss,
    predicted_x0,
    truncated_snr_weight,
    x_target,
)

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def gaussian_denoiser(prediction_type: str, mean: float, std: float, alpha_bar: torch.Tensor):
    """The exact posterior mean E[x | z_t] for data x ~ N(mean, std^2), as a model output of `prediction_type`."""

    def model(sample: torch.Tensor, t: int) -> torch.Tensor:
        alpha, sigma = alpha_bar[t].sqrt(), (1 - alpha_bar[t]).sqrt()
        x0 = mean + alpha * std**2 / (alpha**2 * std**2 + sigma**2) * (sample - alpha * mean)
        eps = (sample - alpha * x0) / sigma
        return {"epsilon": eps, "v_prediction": alpha * eps - sigma * x0, "sample": x0}[prediction_type]

    return model


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_target_reproduces_two_teacher_ddim_steps(prediction_type):
    # With an exact Gaussian denoiser as the teacher, two of diffusers' DDIM steps (8-step grid) from z_t are
    # matched exactly by one DDIM step (4-step grid) of a student predicting the x target.
    config = make_noise_scheduler("linear", 1000, prediction_type, clip_sample=False).config
    grid = step_grid(config, 4)
    teacher_ddim = ddim_scheduler(config, 8)
    alpha_bar = teacher_ddim.alphas_cumprod.double()
    teacher = gaussian_denoiser(prediction_type, 0.3, 0.5, alpha_bar)
    generator = torch.Generator().manual_seed(0)
    for i, t in enumerate(grid.timesteps.tolist()):
        sample = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64)
        # Two steps with diffusers' own scheduler.
        z = sample
        for step_t in (t, int(grid.mid_timesteps[i])):
            z = teacher_ddim.step(teacher(z, step_t), step_t, z, eta=0.0).prev_sample
        # The same two steps with ddpm_hub's pure functions agree with it.
        start, mid, end = (Level(lv.alpha[i].double(), lv.sigma[i].double()) for lv in (grid.start, grid.mid, grid.end))
        z_mid = ddim_step(prediction_type, sample, teacher(sample, t), start, mid)
        z_end = ddim_step(prediction_type, z_mid, teacher(z_mid, int(grid.mid_timesteps[i])), mid, end)
        torch.testing.assert_close(z_end, z, rtol=1e-5, atol=1e-5)  # float32 noise-level tables, as diffusers'
        # One student step, with x_hat = x_tilde and eps_hat consistent with it, lands on the teacher's z_t''.
        target = x_target(sample, z_end, start, end)
        student_eps = (sample - start.alpha * target) / start.sigma
        torch.testing.assert_close(end.alpha * target + end.sigma * student_eps, z_end, rtol=1e-9, atol=1e-9)


def student_step(scheduler, prediction_type: str, sample, t: int, level: Level, x_hat):
    """diffusers' DDIM step of a student whose output, in its parameterisation, means x_hat (eps consistent)."""
    eps = (sample - level.alpha * x_hat) / level.sigma
    output = {"epsilon": eps, "v_prediction": level.alpha * eps - level.sigma * x_hat, "sample": x_hat}
    return scheduler.step(output[prediction_type], t, sample, eta=0.0).prev_sample


@pytest.mark.parametrize("clip_sample", [False, True])
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_student_predicting_the_target_takes_the_teachers_two_steps_in_diffusers(prediction_type, clip_sample):
    # A student whose output is exactly the target (in its own parameterisation) reproduces, through diffusers'
    # DDIMScheduler.step on its 4-step grid, the teacher's two steps on the 8-step grid, x_0 clipping included.
    config = make_noise_scheduler("linear", 1000, prediction_type, clip_sample=clip_sample).config
    grid, student_ddim, teacher_ddim = step_grid(config, 4), ddim_scheduler(config, 4), ddim_scheduler(config, 8)
    alpha_bar = teacher_ddim.alphas_cumprod.double()
    teacher = gaussian_denoiser(prediction_type, 0.8, 1.5, alpha_bar)  # data beyond [-1, 1]: clipping bites
    generator = torch.Generator().manual_seed(0)
    plain_misses = 0
    for i, t in enumerate(grid.timesteps.tolist()):
        start, end = (Level(lv.alpha[i].double(), lv.sigma[i].double()) for lv in (grid.start, grid.end))
        x = 0.8 + 1.5 * torch.randn(4, 3, 8, 8, generator=generator, dtype=torch.float64)
        sample = start.alpha * x + start.sigma * torch.randn(x.shape, generator=generator, dtype=torch.float64)
        z = sample
        for step_t in (t, int(grid.mid_timesteps[i])):
            z = teacher_ddim.step(teacher(z, step_t), step_t, z, eta=0.0).prev_sample
        if clip_sample:
            reference = predicted_x0(prediction_type, sample, teacher(sample, t), start)
            target = clipped_x_target(sample, z, start, end, 1.0, reference)
        else:
            target = x_target(sample, z, start, end)
        step = functools.partial(student_step, student_ddim, prediction_type, sample, t, start)
        torch.testing.assert_close(step(target), z, rtol=1e-6, atol=1e-6)
        plain = step(x_target(sample, z, start, end))
        plain_misses += not torch.allclose(plain, z, rtol=1e-6, atol=1e-6)
    # Clipped, the plain x target (unclipped DDIM algebra) misses the teacher at some step: the case above is real.
    assert plain_misses > 0 if clip_sample else plain_misses == 0


@pytest.mark.parametrize("clip_sample", [True, False])
def test_the_trajectory_target_is_the_teachers_own_ddim_sample_at_twice_the_steps(clip_sample):
    # Epsilon teachers' rounds of few steps: the target of pure noise z_T is what the teacher's pipeline samples from
    # it at 2N DDIM steps, and a student equal to the teacher is scored by how far its N steps are from that.
    from accelerate import Accelerator
    from conftest import make_tiny_pipeline

    from ddpm_hub.distill.step import DistillStep

    teacher = make_tiny_pipeline(clip_sample=clip_sample)
    config = teacher.scheduler.config
    step = DistillStep(teacher.unet, teacher.unet, step_grid(config, 4), "epsilon", Accelerator(cpu=True),
                       lambda x, flip: x, clip=1.0 if clip_sample else None, trajectory=True)  # fmt: skip
    noise = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    teacher.scheduler = ddim_scheduler(config)

    def pipeline_sample(steps: int) -> torch.Tensor:
        return teacher(batch_size=3, latents=noise, num_inference_steps=steps, output_type="latent").images

    target = step.trajectory_target(noise)
    torch.testing.assert_close(target, pipeline_sample(8), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        loss = step.trajectory_loss(noise)
    torch.testing.assert_close(loss, (pipeline_sample(4) - target).pow(2).mean(), rtol=1e-4, atol=1e-6)
    assert loss > 0


def test_last_step_target_is_the_teachers_final_sample():
    # Past t = 0 (alpha_bar 1 with set_alpha_to_one), the student's x target is the teacher's two-step result.
    config = make_noise_scheduler("cosine", 1000, "v_prediction").config
    grid = step_grid(config, 4)
    assert grid.timesteps.tolist() == [999, 749, 499, 249] and grid.mid_timesteps.tolist() == [874, 624, 374, 124]
    assert float(grid.end.alpha[-1]) == 1.0 and float(grid.end.sigma[-1]) == 0.0
    sample, after = torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)
    level = Level(grid.start.alpha[-1], grid.start.sigma[-1])
    end = Level(grid.end.alpha[-1], grid.end.sigma[-1])
    torch.testing.assert_close(x_target(sample, after, level, end), after)


def test_truncated_snr_weighting():
    level = Level(torch.tensor([0.9, 0.5, 0.1]), torch.tensor([0.1, 0.5, 0.9]).sqrt())
    level = Level(level.alpha, (1 - level.alpha**2).sqrt())
    snr = level.alpha**2 / level.sigma**2
    torch.testing.assert_close(truncated_snr_weight(level), torch.maximum(snr, torch.ones(3)))
    sample, target = torch.zeros(3, 1, 2, 2), torch.ones(3, 1, 2, 2)
    broadcast = Level(level.alpha.view(-1, 1, 1, 1), level.sigma.view(-1, 1, 1, 1))
    # A sample-prediction student predicting 0 for x_tilde = 1: the loss is the mean weight.
    loss = distillation_loss("sample", sample, torch.zeros_like(sample), target, broadcast)
    torch.testing.assert_close(loss, torch.maximum(snr, torch.ones(3)).mean())
    # An epsilon student is scored in eps-space: eps_tilde = (z - alpha x_tilde) / sigma, unweighted.
    eps_target = (sample - broadcast.alpha * target) / broadcast.sigma
    loss = distillation_loss("epsilon", sample, eps_target + 1, target, broadcast)
    torch.testing.assert_close(loss, torch.tensor(1.0))


def test_predicted_x0_inverts_each_parameterisation():
    level = Level(torch.tensor(0.6), torch.tensor(0.8))
    x0, eps = torch.randn(2, 3), torch.randn(2, 3)
    sample = level.alpha * x0 + level.sigma * eps
    outputs = {"epsilon": eps, "v_prediction": level.alpha * eps - level.sigma * x0, "sample": x0}
    for prediction_type, output in outputs.items():
        torch.testing.assert_close(predicted_x0(prediction_type, sample, output, level), x0)


def test_round_step_counts():
    assert round_step_counts(256, 4) == [128, 64, 32, 16, 8, 4]
    assert round_step_counts(8, 4) == [4]
    assert round_step_counts(2, 1) == [1]


# ---- the command line: bad input, one line each, exit status 2, before anything heavy --------------------------


def run_distill(capsys, *args) -> tuple[int, str]:
    from ddpm_hub.cli import main

    try:
        code = main(["distill", *map(str, args)])
    except SystemExit as exit:  # argparse's error
        code = exit.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def random_teacher(tmp_path_factory):
    from conftest import make_tiny_pipeline

    path = tmp_path_factory.mktemp("teacher") / "tiny"
    make_tiny_pipeline().save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--start_steps", "12"], ["--start_steps", "power of two", "12"]),
        (["--end_steps", "3"], ["--end_steps", "power of two"]),
        (["--start_steps", "4", "--end_steps", "8"], ["--start_steps 4", "more than"]),
        (["--start_steps", "4", "--end_steps", "4"], ["--start_steps 4", "more than"]),
        (["--end_steps", "0"], ["--end_steps", "at least 1"]),
        (["--steps_per_round", "0"], ["--steps_per_round", "positive"]),
        (["--max_train_steps", "5"], ["--max_train_steps", "--steps_per_round"]),
    ],
)
def test_bad_step_flags(capsys, tmp_path, random_teacher, flags, words):
    code, err = run_distill(capsys, random_teacher, "--output_dir", tmp_path / "out", *flags)
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / "out").exists()


def test_teacher_not_a_pipeline(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, err = run_distill(capsys, tmp_path / "empty", "--output_dir", tmp_path / "out")
    assert_one_line_error(code, err, "not a ddpm-hub pipeline", "model_index.json")
    code, err = run_distill(capsys, tmp_path / "missing" / "folder", "--output_dir", tmp_path / "out")
    assert_one_line_error(code, err, "neither a pipeline folder nor a Hub repo id")
    code, err = run_distill(capsys, "--output_dir", tmp_path / "out")
    assert_one_line_error(code, err, "TEACHER")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("scheduler", "start_steps", "words"),
    [
        ({"prediction_type": "epsilon", "rescale_betas_zero_snr": True}, 8, ["zero-terminal-SNR", "v_prediction"]),
        ({"num_train_timesteps": 100}, 256, ["--start_steps 256", "this one has 100"]),
    ],
)
def test_teacher_ddim_cannot_run(capsys, tmp_path, scheduler, start_steps, words):
    from conftest import make_tiny_pipeline

    make_tiny_pipeline(**scheduler).save_pretrained(tmp_path / "teacher")
    code, err = run_distill(
        capsys, tmp_path / "teacher", "--output_dir", tmp_path / "out", "--start_steps", start_steps, "--end_steps", 4
    )
    assert_one_line_error(code, err, "TEACHER", *words)
    assert not (tmp_path / "out").exists()


def test_class_conditional_teacher_needs_labelled_data(capsys, tmp_path):
    from conftest import TINY_UNET
    from diffusers import UNet2DModel

    from ddpm_hub import DDPMHubPipeline

    unet = UNet2DModel(**TINY_UNET, num_class_embeds=3)
    DDPMHubPipeline(unet=unet, scheduler=make_noise_scheduler()).save_pretrained(tmp_path / "teacher")
    code, err = run_distill(capsys, tmp_path / "teacher", "--output_dir", tmp_path / "out", "--start_steps", 8)
    assert_one_line_error(code, err, "class-conditional (2 classes)", "--class_conditional")


# ---- whole distillations through the command line ------------------------------------------------------------

# The procedural shapes at 16 px; a round of the tiny UNet takes seconds on a CPU.
DATA = ["--dataset_name", "shapes", "--max_train_samples", "64", "--train_batch_size", "16", "--logger", "none",
        "--eval_batch_size", "4", "--logging_steps", "10", "--lr_warmup_steps", "0"]  # fmt: skip


def distill(*args) -> None:
    from ddpm_hub.cli import main

    assert main(["distill", *map(str, args)]) == 0


def metrics_log(folder):
    import json

    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def unet_weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def assert_same_weights(a, b) -> None:
    first, second = unet_weights(a), unet_weights(b)
    assert first.keys() == second.keys()
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module", params=["v_prediction", "epsilon"])
def trained_teacher(request, tmp_path_factory):
    """A teacher that has learned something (150 steps, 8 shapes each): random weights have no trajectories to keep."""
    from ddpm_hub.train import main as train_main

    prediction_type = request.param
    folder = tmp_path_factory.mktemp("trained") / prediction_type
    schedule = "cosine" if prediction_type == "v_prediction" else "linear"
    code = train_main(
        [*DATA, "--model", "tiny", "--max_train_steps", "150", "--learning_rate", "2e-3", "--output_dir", str(folder),
         "--prediction_type", prediction_type, "--ddpm_beta_schedule", schedule, "--ddpm_num_inference_steps", "2",
         "--train_batch_size", "8"]
    )  # fmt: skip
    assert code == 0
    return folder


def sample(pipe, steps=None):
    generators = [torch.Generator().manual_seed(seed) for seed in range(8)]
    return pipe(batch_size=8, generator=generators, num_inference_steps=steps, output_type="pt").images


def test_one_round_lowers_the_loss_and_reproduces_the_teachers_8_steps(trained_teacher, tmp_path):
    # v-prediction: Algorithm 2's two-step target. Epsilon: the whole 8-step trajectory (step.TRAJECTORY_STEPS).
    # The two-step target is learnt in fewer steps (40: a student error about 0.36 of the teacher's at 4 steps; the
    # trajectory's 100: about 0.71), each logged 10 times.
    from ddpm_hub import DDPMHubPipeline

    out = tmp_path / "student"
    scheduler = json.loads((trained_teacher / "scheduler" / "scheduler_config.json").read_text())
    steps = 40 if scheduler["prediction_type"] == "v_prediction" else 100
    distill(trained_teacher, "--output_dir", out, "--start_steps", 8, "--end_steps", 4, "--steps_per_round", steps,
            "--learning_rate", 3e-4, "--eval_rounds", "false", *DATA, "--logging_steps", steps // 10)  # fmt: skip
    losses = [entry["loss"] for entry in metrics_log(out / "round-4") if "loss" in entry]
    assert len(losses) == 10 and sum(losses[-3:]) / 3 < sum(losses[:2]) / 2, losses
    loss = json.loads((out / "round-4" / "training_config.json").read_text())["distill_loss"]
    assert ("8-step DDIM trajectory" in loss) == (scheduler["prediction_type"] == "epsilon"), loss

    teacher = DDPMHubPipeline.from_pretrained(trained_teacher)
    teacher.scheduler = ddim_scheduler(teacher.scheduler.config)  # the grid the student was distilled on
    teacher.set_progress_bar_config(disable=True)
    student = DDPMHubPipeline.from_pretrained(out)
    student.set_progress_bar_config(disable=True)
    target = sample(teacher, 8)
    teacher_error = (sample(teacher, 4) - target).pow(2).mean()
    student_error = (sample(student) - target).pow(2).mean()  # at its default 4 steps
    assert student_error < 0.8 * teacher_error, (float(student_error), float(teacher_error))


def test_resume_mid_round_and_after_a_round_ends_bit_identical(tmp_path, random_teacher):
    import shutil

    flags = [random_teacher, "--start_steps", 16, "--end_steps", 4, "--steps_per_round", 4, "--checkpointing_steps", 2,
             "--eval_rounds", "false", *DATA]  # fmt: skip
    distill(*flags, "--output_dir", tmp_path / "a")
    distill(*flags, "--output_dir", tmp_path / "b")
    b = tmp_path / "b"
    for folder in (tmp_path / "a", b):
        assert (folder / "round-8" / "model_index.json").is_file() and (
            folder / "round-4" / "model_index.json"
        ).is_file()
    assert_same_weights(tmp_path / "a", b)

    def forget_final_student():
        for name in ("unet", "scheduler", "pipeline.py", "model_index.json", "metrics.json", "README.md"):
            path = b / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    # As after a SIGKILL in round 1 just after checkpoint-2: nothing later exists.
    forget_final_student()
    shutil.rmtree(b / "round-4")
    for name in ("checkpoint-4", "unet", "scheduler", "model_index.json", "metrics.json", "README.md"):
        path = b / "round-8" / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    distill(*flags, "--output_dir", b, "--resume_from_checkpoint", "latest")
    assert_same_weights(tmp_path / "a" / "round-8", b / "round-8")
    assert_same_weights(tmp_path / "a", b)

    # As after a SIGKILL once round 1 finished: the resume starts round 2 from round 1's student.
    forget_final_student()
    shutil.rmtree(b / "round-4")
    round_1 = (b / "round-8" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    distill(*flags, "--output_dir", b, "--resume_from_checkpoint", "latest")
    assert (b / "round-4" / "checkpoint-4").is_dir()
    assert (b / "round-8" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == round_1  # not redone
    assert_same_weights(tmp_path / "a", b)


def test_a_distillation_on_shards_scores_every_round_against_the_shards(tmp_path, random_teacher, monkeypatch):
    from ddpm_hub.data import draw_shapes
    from ddpm_hub.data.identity import shards_identity
    from ddpm_hub.prepare import main as prepare_main

    monkeypatch.setenv("DDPM_HUB_CACHE", str(tmp_path / "ddpm-hub-cache"))
    (tmp_path / "images").mkdir()
    for i, image in enumerate(draw_shapes(32, size=16, seed=5)):
        image.save(tmp_path / "images" / f"{i:03d}.png")
    assert (
        prepare_main([str(tmp_path / "images"), str(tmp_path / "shards"), "--resolution", "16", "--shard_size", "8"])
        == 0
    )
    out, pattern = tmp_path / "student", str(tmp_path / "shards" / "train-*.tar")
    scores = "--eval_features efficientnet-lite0-40 --eval_metrics kid --eval_num_samples 8 --eval_teacher_steps 4"
    distill(random_teacher, "--output_dir", out, "--start_steps", 4, "--end_steps", 1, "--steps_per_round", 2,
            "--train_shards", pattern, "--dataloader_num_workers", 0, "--train_batch_size", 8, "--logger", "none",
            "--eval_batch_size", 4, "--lr_warmup_steps", 0, "--eval_every_round", *scores.split())  # fmt: skip
    identity = shards_identity(pattern)
    for steps in (2, 1):  # every round is scored against the shards' own images, not a built-in set
        quality = json.loads((out / f"round-{steps}" / "quality.json").read_text())
        assert quality["reference"] == {"source": identity.description, "fingerprint": identity.fingerprint,
                                        "num_images": 32}  # fmt: skip
        assert f"reference: {identity.description} (32 images)" in quality["settings"]


def test_final_student_loads_everywhere_and_samples_at_its_steps(tmp_path, random_teacher):
    from diffusers import DiffusionPipeline

    from ddpm_hub import DDPMHubPipeline

    out = tmp_path / "student"
    distill(random_teacher, "--output_dir", out, "--start_steps", 8, "--end_steps", 2, "--steps_per_round", 2,
            "--eval_every_round", "--eval_features", "efficientnet-lite0-40", "--eval_num_samples", 48,
            "--eval_metrics", "fid,kid", "--eval_teacher_steps", 16, *DATA)  # fmt: skip
    pipe = DDPMHubPipeline.from_pretrained(out)
    assert pipe.default_num_inference_steps == 2 and type(pipe.scheduler).__name__ == "DDIMScheduler"
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 16, 16, 3) and len(pipe.scheduler.timesteps) == 2
    # Stock diffusers loads it as its DDPMPipeline (which has no default of its own: steps are passed), and with
    # the pipeline code saved beside the weights as ddpm-hub's pipeline, at the student's default steps.
    stock = DiffusionPipeline.from_pretrained(out)
    assert stock(batch_size=1, num_inference_steps=2, output_type="np").images.shape == (1, 16, 16, 3)
    remote = DiffusionPipeline.from_pretrained(out, custom_pipeline=str(out), trust_remote_code=True)
    assert remote(batch_size=1, output_type="np").images.shape == (1, 16, 16, 3)
    assert len(remote.scheduler.timesteps) == 2
    # The card and metrics.json name the teacher, the rounds, the step count and every round's scores.
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distilled_from"] == str(random_teacher) and metrics["distillation_rounds"] == "8 -> 4 -> 2"
    assert metrics["sampling_steps"] == 2
    for steps in (4, 2):
        for row in (f"student ddim {steps}", f"teacher ddim {steps}", f"teacher dpmpp_2m {steps}", "teacher ddim 16"):
            assert f"round {steps}: {row} fid" in metrics and f"round {steps}: {row} kid_mean" in metrics
    # Every round's teacher rows score TEACHER itself (same model, seeds and steps: the same figure).
    assert metrics["round 2: teacher ddim 16 fid"] == metrics["round 4: teacher ddim 16 fid"]
    card = (out / "README.md").read_text()
    assert str(random_teacher) in card and "8 -> 4 -> 2" in card and "round 2: student ddim 2 fid" in card
    # Its usage snippets run as written and sample at the student's 2 steps.
    import re

    snippets = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(snippets) == 2 and "samples in 2 DDIM steps" in card
    for code in snippets:
        scope = {}
        exec(code.replace("path/to/this/folder", str(out)).replace("batch_size=4", "batch_size=1"), scope)
        assert scope["images"][0].size == (16, 16) and len(scope["pipe"].scheduler.timesteps) == 2
    # `ddpm-hub sample` without --num_inference_steps samples at the student's 2 steps too.
    from test_sample_defaults import sample

    assert sample(out, tmp_path) == 2
