"""Progressive distillation (`ddpm-hub distill`): the target math, the rounds, the CLI's checks, and whole runs."""

from __future__ import annotations

import pytest
import torch

from ddpm_hub import make_noise_scheduler
from ddpm_hub.distill.rounds import ddim_scheduler, round_step_counts, step_grid
from ddpm_hub.distill.targets import Level, ddim_step, distillation_loss, predicted_x0, truncated_snr_weight, x_target

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
        (dict(prediction_type="epsilon", rescale_betas_zero_snr=True), 8, ["zero-terminal-SNR", "v_prediction"]),
        (dict(num_train_timesteps=100), 256, ["--start_steps 256", "this one has 100"]),
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
