"""Named noise schedules: the mapping onto diffusers, the curves users inspect, and portability to samplers."""

from __future__ import annotations

import math

import PIL.Image
import pytest
import torch

from ddpm_hub import SAMPLERS, make_noise_scheduler, plot_schedules, schedule_curves, scheduler_from_name
from ddpm_hub.schedules import BETA_SCHEDULES


def test_linear_is_ho_et_al():
    curves = schedule_curves("linear")
    assert curves.betas[0].item() == pytest.approx(1e-4) and curves.betas[-1].item() == pytest.approx(0.02)
    expected = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    torch.testing.assert_close(curves.alphas_cumprod, expected, rtol=1e-5, atol=1e-7)


def test_cosine_follows_nichol_and_dhariwal_eq_17():
    curves = schedule_curves("cosine")
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    # alpha_bar_t = f(t+1) / f(0) in diffusers' indexing; the 0.999 beta cap only bites at the very end.
    for t in (0, 100, 500, 900):
        assert curves.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-4)
    assert curves.betas.max().item() <= 0.999 + 1e-6


def test_user_names_are_aliases_of_diffusers_names():
    for alias, diffusers_name in (("cosine", "squaredcos_cap_v2"), ("quadratic", "scaled_linear")):
        torch.testing.assert_close(
            schedule_curves(alias).alphas_cumprod, schedule_curves(diffusers_name).alphas_cumprod
        )
    quadratic = schedule_curves("quadratic").betas
    torch.testing.assert_close(
        quadratic, torch.linspace(1e-4**0.5, 0.02**0.5, 1000, dtype=torch.float64) ** 2, rtol=1e-5, atol=1e-8
    )


@pytest.mark.parametrize("name", list(BETA_SCHEDULES))
def test_curves_are_monotone(name):
    curves = schedule_curves(name)
    assert (curves.betas > 0).all() and (curves.betas < 1).all()
    assert (curves.alphas_cumprod.diff() < 0).all()
    assert (curves.snr.diff() < 0).all()
    torch.testing.assert_close(curves.snr, curves.alphas_cumprod / (1 - curves.alphas_cumprod))


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_zero_terminal_snr_rescaling(name):
    curves = schedule_curves(name, rescale_betas_zero_snr=True)
    assert curves.alphas_cumprod[-1].item() == 0.0 and curves.snr[-1].item() == 0.0
    assert curves.alphas_cumprod[0].item() == pytest.approx(schedule_curves(name).alphas_cumprod[0].item(), rel=1e-3)


def test_unknown_schedule_and_prediction_type_are_rejected():
    with pytest.raises(ValueError, match="Unknown beta schedule 'cosin'; choose one of: linear, cosine"):
        make_noise_scheduler("cosin")
    with pytest.raises(ValueError, match="Unknown prediction type 'eps'"):
        make_noise_scheduler(prediction_type="eps")


@pytest.mark.parametrize("name", ["sigmoid", "laplace"])
def test_ddpm_only_schedules_are_portable_to_every_sampler(name):
    # DDIM, DPM-Solver and the rest cannot compute a sigmoid schedule from its name; the saved config carries
    # explicit betas so that every sampler rebuilds the same noise levels.
    training = make_noise_scheduler(name)
    assert training.config.trained_betas is not None
    for sampler in SAMPLERS:
        swapped = scheduler_from_name(sampler, training.config)
        torch.testing.assert_close(swapped.alphas_cumprod, training.alphas_cumprod, msg=sampler)


def test_plot_schedules_writes_a_png(tmp_path):
    path = plot_schedules(tmp_path / "plots" / "schedules.png")
    with PIL.Image.open(path) as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 200
        # Something was drawn: many distinct colours, not a blank canvas.
        assert len(image.convert("RGB").getcolors(maxcolors=1_000_000)) > 50
    assert [p.name for p in path.parent.iterdir()] == ["schedules.png"]  # no temporary file left behind


def test_schedules_command(tmp_path, capsys, monkeypatch):
    from ddpm_hub.cli import main as cli_main

    monkeypatch.chdir(tmp_path)  # the default --output, were the bad call not refused

    assert cli_main(["schedules", "--output", str(tmp_path / "s.png"), "--schedules", "linear", "cosine"]) == 0
    assert (tmp_path / "s.png").stat().st_size > 10_000
    capsys.readouterr()
    with pytest.raises(SystemExit) as bad:  # argparse's error: exit status 2
        cli_main(["schedules", "--schedules", "cosin"])
    assert bad.value.code == 2 and "Unknown beta schedule 'cosin'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "s.png"]
