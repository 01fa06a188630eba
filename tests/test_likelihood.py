"""The variational bound in bits per dimension (Improved DDPM): its terms against the paper's equations, the hybrid
and vlb objectives, the importance sampler of timesteps, and `ddpm-hub eval --metrics nll`."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from conftest import TINY_UNET
from diffusers import UNet2DModel
from test_evaluation import run_cli, save_shapes

from ddpm_hub import DDPMHubPipeline, make_noise_scheduler
from ddpm_hub.data import draw_shapes
from ddpm_hub.likelihood import (
    BoundObjective,
    DiffusionProcess,
    LossSecondMomentSampler,
    bits_per_dim,
    bound_term,
    discretized_gaussian_log_likelihood,
    hybrid_loss,
    negative_log_likelihood,
    normal_kl,
    prior_bits,
    vlb_loss,
)
from ddpm_hub.pipeline_parameterization import PREDICTION_TYPES

T = 30  # training timesteps of the tiny schedules: the full bound is T model calls


def eight_bit(shape, seed: int = 0) -> torch.Tensor:
    """Random 8-bit images scaled to [-1, 1], with some pixels at both edge bins."""
    pixels = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))
    pixels.view(-1)[:4] = torch.tensor([0, 255, 0, 255])
    return pixels.float() / 127.5 - 1


def oracle(scheduler, x0: torch.Tensor, prediction_type: str, variance: float | None = -1.0):
    """A "model" that knows x_0: the true eps, v or x_0 at x_t (so its mean is the true posterior mean), and with
    `variance` a constant learned-range output (-1: the posterior variance beta~_t)."""

    def denoiser(x_t: torch.Tensor, t: int) -> torch.Tensor:
        alpha_bar = scheduler.alphas_cumprod[t].double()
        alpha, sigma = alpha_bar.sqrt().float(), (1 - alpha_bar).sqrt().float()
        eps = (x_t - alpha * x0) / sigma
        output = {"epsilon": eps, "sample": x0, "v_prediction": alpha * eps - sigma * x0}[prediction_type]
        return output if variance is None else torch.cat([output, torch.full_like(output, variance)], dim=1)

    return denoiser


def make_learned_pipeline(seed: int = 0, **scheduler_kwargs) -> DDPMHubPipeline:
    torch.manual_seed(seed)
    unet = UNet2DModel(**{**TINY_UNET, "out_channels": 6}).eval()
    scheduler = make_noise_scheduler(variance_type="learned_range", **scheduler_kwargs)
    pipe = DDPMHubPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_discretized_decoder_probabilities_over_the_256_bins_sum_to_one():
    bins = torch.arange(256, dtype=torch.float32) / 127.5 - 1
    for mean, scale in [(0.0, 0.01), (0.3, 0.002), (-0.99, 0.05), (0.999, 1e-4), (0.0, 3.0), (2.5, 0.1)]:
        log_p = discretized_gaussian_log_likelihood(
            bins, torch.full_like(bins, mean), torch.full_like(bins, math.log(scale))
        )
        assert torch.isfinite(log_p).all()
        assert log_p.double().exp().sum().item() == pytest.approx(1.0, abs=2e-5), (mean, scale)
    # A narrow Gaussian centred on a bin puts almost all its mass there; the exact CDF keeps far tails finite.
    centre = bins[100:101]
    assert discretized_gaussian_log_likelihood(centre, centre, torch.tensor([math.log(1e-4)])).item() > -1e-6
    far = discretized_gaussian_log_likelihood(centre, centre + 0.5, torch.tensor([math.log(1e-3)]))
    assert torch.isfinite(far).all() and far.item() < -1e4


def test_normal_kl_matches_torch_distributions():
    mean1, mean2 = torch.randn(5), torch.randn(5)
    log_var1, log_var2 = torch.randn(5), torch.randn(5)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean1, (0.5 * log_var1).exp()),
        torch.distributions.Normal(mean2, (0.5 * log_var2).exp()),
    )
    assert torch.allclose(normal_kl(mean1, log_var1, mean2, log_var2), expected, atol=1e-5)


def test_prior_term_is_the_closed_form_kl_to_a_standard_normal():
    scheduler = make_noise_scheduler("linear", num_train_timesteps=T)
    process = DiffusionProcess.from_scheduler(scheduler)
    x0 = eight_bit((2, 3, 4, 4))
    alpha_bar = scheduler.alphas_cumprod[-1].double()
    per_dim = 0.5 * (-torch.log(1 - alpha_bar) + (1 - alpha_bar) + alpha_bar * x0.double() ** 2 - 1)
    expected = per_dim.mean(dim=(1, 2, 3)) / math.log(2)
    assert torch.allclose(prior_bits(process, x0).double(), expected, rtol=1e-4)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("num_steps", [None, 10])
def test_true_posterior_gives_zero_kl_terms_and_the_decoder_plus_prior(prediction_type, num_steps):
    scheduler = make_noise_scheduler("cosine", num_train_timesteps=T, prediction_type=prediction_type)
    process = DiffusionProcess.from_scheduler(scheduler, num_steps)
    x0 = eight_bit((2, 3, 4, 4))
    bound = bits_per_dim(
        oracle(scheduler, x0, prediction_type), x0, process, prediction_type, "learned_range",
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert bound.terms.shape == (2, num_steps or T)
    assert bound.terms[:, 1:].abs().max() < 1e-4  # L_t = KL(q || p) of identical Gaussians, t > 0
    assert torch.allclose(bound.total, bound.terms[:, 0] + bound.prior, atol=1e-3)
    assert (bound.terms[:, 0] > 0).all() and (bound.prior >= 0).all()

    # The learned range at -1 is the fixed small variance; a wrong mean only adds KL.
    fixed = bits_per_dim(
        oracle(scheduler, x0, prediction_type, variance=None), x0, process, prediction_type, "fixed_small",
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert torch.allclose(fixed.total, bound.total, atol=1e-5)
    noisy = bits_per_dim(
        oracle(scheduler, x0 + 0.1, prediction_type), x0, process, prediction_type, "learned_range",
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert (noisy.terms[:, 1:].sum(dim=1) > 0.01).all()


def test_learned_range_spans_the_posterior_variance_and_beta():
    process = DiffusionProcess.from_scheduler(make_noise_scheduler("linear", num_train_timesteps=T), 10)
    index = torch.tensor([0, 3, 9])
    ones = torch.ones(3, 1, 1, 1)
    low = process.log_variance(index, "learned_range", -ones, 4).flatten()
    high = process.log_variance(index, "learned_range", ones, 4).flatten()
    assert torch.allclose(low, process.log_variance(index, "fixed_small", None, 4).flatten())
    assert torch.allclose(high, torch.log(process.betas[index]))
    middle = process.log_variance(index, "learned_range", 0 * ones, 4).flatten()
    assert torch.allclose(middle, (low + high) / 2)
    # The respaced process's betas are those of its own steps: 1 - alpha_bar_i / alpha_bar_{i-1}.
    assert torch.allclose(
        process.betas[1:].double(), (1 - process.alphas_cumprod[1:] / process.alphas_cumprod[:-1]).double(), atol=1e-6
    )


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_hybrid_bound_term_trains_the_variance_only(prediction_type):
    scheduler = make_noise_scheduler("cosine", num_train_timesteps=T, prediction_type=prediction_type)
    process = DiffusionProcess.from_scheduler(scheduler)
    x0 = eight_bit((4, 3, 4, 4))
    timesteps = torch.tensor([0, 1, 12, T - 1])  # the decoder and KL terms
    x_t = process.q_sample(x0, timesteps, torch.randn_like(x0))
    for stop_mean_gradient in (True, False):
        output = torch.randn(4, 6, 4, 4, requires_grad=True)
        terms = bound_term(
            output, x0, x_t, timesteps, process, prediction_type, "learned_range",
            stop_mean_gradient=stop_mean_gradient,
        )  # fmt: skip
        loss = hybrid_loss(torch.zeros(()), terms, T)
        loss.backward()
        mean_grad, variance_grad = output.grad[:, :3], output.grad[:, 3:]
        assert (variance_grad != 0).any(dim=(1, 2, 3)).all()
        if stop_mean_gradient:
            assert torch.equal(mean_grad, torch.zeros_like(mean_grad))  # exactly zero
        else:
            assert (mean_grad != 0).any(dim=(1, 2, 3)).all()
    assert loss.item() == pytest.approx(terms.mean().item() * T * 0.001, rel=1e-6)


def test_vlb_loss_is_the_importance_weighted_bound():
    terms, weights = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 1.0, 2.0])
    assert vlb_loss(terms, weights, T).item() == pytest.approx(T * (0.5 + 2 + 6) / 3)


def test_loss_second_moment_sampler_is_uniform_until_warm_then_follows_the_losses():
    sampler = LossSecondMomentSampler(4, history=3)
    assert torch.allclose(sampler.probabilities(), torch.full((4,), 0.25))
    # Duplicates in one batch fill the ring in order; more than `history` keep the last ones; NaN is left out.
    sampler.update(torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2]), torch.tensor([9.0, 1, 1, 1, 2, 2, 2, 3, 3]))
    sampler.update(torch.tensor([2, 3, 3, 3, 3]), torch.tensor([3.0, 4, float("nan"), 4, 4]))
    assert sampler.written.tolist() == [4, 3, 3, 3]
    assert torch.allclose(sampler.losses, torch.tensor([[1.0, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4]]))
    expected = torch.tensor([1.0, 2, 3, 4]) / 10 * (1 - 0.001) + 0.001 / 4
    assert torch.allclose(sampler.probabilities(), expected)

    torch.manual_seed(0)
    timesteps, weights = sampler.sample(1000)
    counts = torch.bincount(timesteps, minlength=4).float() / 1000
    assert torch.allclose(counts, expected, atol=0.05)
    assert torch.allclose(weights, 1 / (4 * expected[timesteps]))

    # The state is JSON: a restored sampler draws the same timesteps.
    restored = LossSecondMomentSampler(4, history=3)
    restored.load_state_dict(json.loads(json.dumps(sampler.state_dict())))
    torch.manual_seed(1)
    first = sampler.sample(16)
    torch.manual_seed(1)
    assert all(torch.equal(a, b) for a, b in zip(first, restored.sample(16)))
    with pytest.raises(ValueError, match="needs"):
        LossSecondMomentSampler(5, history=3).load_state_dict(sampler.state_dict())


def test_nll_of_a_pipeline_is_per_image_whatever_the_batch():
    pipe = make_learned_pipeline(num_train_timesteps=T)
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    one = negative_log_likelihood(pipe, images, num_steps=5, batch_size=1, progress=False)
    three = negative_log_likelihood(pipe, images, num_steps=5, batch_size=3, progress=False)
    assert torch.allclose(one.per_image, three.per_image, rtol=1e-5)
    assert one.num_steps == 5 and one.variance_type == "learned_range" and math.isfinite(one.bits_per_dim)
    full = negative_log_likelihood(pipe, images[:1], batch_size=1, progress=False, variance_type="fixed_small")
    assert full.num_steps == T and full.variance_type == "fixed_small"
    with pytest.raises(ValueError, match="uint8 images of the model's shape"):
        negative_log_likelihood(pipe, images[:, :, :8, :8], progress=False)
    # diffusers' "learned" variance is the variance itself, not eq. 15's interpolation: not read as learned_range.
    pipe.set_sampler("ddpm", variance_type="learned")
    with pytest.raises(ValueError, match="scheduler says variance_type 'learned'"):
        negative_log_likelihood(pipe, images, num_steps=5, progress=False)
    fixed = negative_log_likelihood(pipe, images[:1], num_steps=5, progress=False, variance_type="fixed_small")
    assert math.isfinite(fixed.bits_per_dim)


def test_eval_cli_reports_bits_per_dim(tmp_path, capsys):
    model = tmp_path / "model"
    make_learned_pipeline(num_train_timesteps=T).save_pretrained(model)
    reference = save_shapes(tmp_path / "reference", 5)
    status, out, err = run_cli(
        ["eval", str(model), "--reference", str(reference), "--metrics", "kid,nll", "--nll_steps", "4",
         "--num_samples", "3", "--num_inference_steps", "2", "--features", "efficientnet-lite0-40",
         "--cache_dir", str(tmp_path / "cache"), "--output", str(tmp_path / "r.json")], capsys,
    )  # fmt: skip
    assert status == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["nll_steps"] == 4 and result["nll_images"] == 3 and result["nll_variance"] == "learned_range"
    assert 0 < result["nll_bits_per_dim"] < 1000 and result["nll_prior_bits"] >= 0 and "kid_mean" in result
    assert re.search(r"^NLL \(bits/dim\)\s+\d+\.\d+ ± ", out, re.M) and re.search(r"^KID \(mean\)", out, re.M)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--resolution", "32"], "scores images at the model's own size, 16px; --resolution 32"),
        (["--nll_steps", "1"], "--nll_steps must be at least 2"),
        (["--metrics", "fid", "--nll_steps", "5"], "--nll_steps sets how nll is measured; add nll to --metrics"),
        (["MODEL=images"], "--metrics nll needs a model; MODEL '.*' is a folder of images"),
    ],
)
def test_eval_nll_bad_input_is_one_line(tmp_path, capsys, args, message):
    model = tmp_path / "model"
    make_learned_pipeline(num_train_timesteps=T).save_pretrained(model)
    reference = save_shapes(tmp_path / "reference", 3)
    if args == ["MODEL=images"]:
        model, args = reference, []
    base = ["eval", str(model), "--reference", str(reference), "--metrics", "nll", "--num_samples", "2",
            "--output", str(tmp_path / "r.json")]  # fmt: skip
    status, out, err = run_cli(base + args, capsys)
    assert status == 2
    error = err.strip().splitlines()[-1]
    assert re.match(r"ddpm-hub( eval)?: error: ", error) and re.search(message, error), err
    assert not (tmp_path / "r.json").exists()


def test_nll_of_a_latent_model_is_refused():
    from test_latent_pipeline import make_latent_pipeline

    pipe = make_latent_pipeline()
    images = torch.zeros(1, *pipe.image_shape, dtype=torch.uint8)
    with pytest.raises(ValueError, match="nll is the likelihood of 8-bit pixels; this is a latent model"):
        negative_log_likelihood(pipe, images, num_steps=2, progress=False)


def test_training_on_the_hybrid_loss_lowers_the_bound_and_learns_a_better_variance_than_the_fixed_ones():
    # 120 steps of Adam on the hybrid objective, a small UNet on 16 8x8 images, T = 100 (the Trainer's own loop is
    # tested end to end in test_improved_ddpm.py).
    torch.manual_seed(0)
    images = torch.stack([torch.from_numpy(np.array(im.resize((8, 8)))).permute(2, 0, 1) for im in draw_shapes(16)])
    scheduler = make_noise_scheduler("cosine", num_train_timesteps=100, variance_type="learned_range")
    unet = UNet2DModel(
        sample_size=8, out_channels=6, layers_per_block=1, block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    )  # fmt: skip
    pipe = DDPMHubPipeline(unet=unet, scheduler=scheduler)
    scored = images[:8]
    at_init = negative_log_likelihood(pipe, scored, progress=False).bits_per_dim
    objective = BoundObjective("hybrid", "learned_range")
    objective.bind(scheduler, torch.device("cpu"))
    optimizer = torch.optim.Adam(unet.parameters(), lr=3e-3)
    unet.train()
    for _ in range(120):
        x0 = images[torch.randint(0, len(images), (16,))].float() / 127.5 - 1
        noise = torch.randn_like(x0)
        timesteps, weights = objective.draw_timesteps(16, x0.device)
        noisy = scheduler.add_noise(x0, noise, timesteps)
        loss, _ = objective(unet(noisy, timesteps).sample, x0, noisy, noise, timesteps, weights, scheduler)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    unet.eval()
    trained = negative_log_likelihood(pipe, scored, progress=False).bits_per_dim
    assert trained < min(at_init, 8.0), (at_init, trained)

    # At 50 respaced ancestral steps the learned variance beats the same weights' fixed ones. fixed_large is the
    # hard one: the untrained variance (v = 0.5, between beta~ and beta) already beats fixed_small at 50 steps, but
    # not fixed_large (with vlb_weight 0 it stays 0.03 bits/dim above fixed_large here; trained, it is 0.09 below).
    def at_50_steps(variance_type: str) -> float:
        return negative_log_likelihood(
            pipe, scored, num_steps=50, progress=False, variance_type=variance_type
        ).bits_per_dim

    learned, small, large = (at_50_steps(v) for v in ("learned_range", "fixed_small", "fixed_large"))
    assert learned < small - 0.2 and learned < large - 0.03, (learned, small, large)
