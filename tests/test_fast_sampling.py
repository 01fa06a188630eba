"""The fast sampling path: device-side steps against the schedulers' own `step`, `compile`, `ddpm-hub sample --compile`.

Tolerance: the device steps fold each scheduler's formulas into precomputed float32 coefficients, so they round
differently; on the tiny model the samples x_t agree to 1e-4 (absolute and relative) at every step, where a wrong
coefficient or a missed noise draw moves them by 1e-2 or more.
"""

from __future__ import annotations

import functools

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import make_tiny_pipeline

from ddpm_hub.cli import main as ddpm_hub_main

TOLERANCE = dict(rtol=1e-4, atol=1e-4)
NUM_STEPS = 6  # DPM-Solver++(2M): a first-order step, four second-order ones, a first-order final step

# (sampler, eta): the samplers the device steps cover; eta 1 makes DDIM draw noise at every step.
DEVICE_SAMPLERS = [
    ("ddpm", 0.0),
    ("ddim", 0.0),
    ("ddim", 1.0),
    ("dpmpp_2m", 0.0),
    ("dpmpp_2m_karras", 0.0),
    ("euler", 0.0),
]


def generators(seeds=(3, 4)) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def sample_with_steps(pipe, *, device_steps: bool, sampler: str, eta: float = 0.0, **kwargs):
    """Run the pipeline; return (images, the sample after every step, how often `scheduler.step` was called)."""
    pipe.set_sampler(sampler)
    pipe.device_steps = device_steps
    step_calls = []
    stock_step = pipe.scheduler.step

    @functools.wraps(stock_step)  # keeps its signature, which tells the pipeline to pass eta and the generators
    def counted_step(*args, **kwargs):
        step_calls.append(1)
        return stock_step(*args, **kwargs)

    pipe.scheduler.step = counted_step
    samples = []

    def keep(pipeline, i, t, tensors):
        samples.append(tensors["latents"].clone())
        return tensors

    kwargs.setdefault("generator", generators())
    output = pipe(
        batch_size=len(kwargs["generator"]), num_inference_steps=NUM_STEPS, eta=eta, output_type="pt",
        callback_on_step_end=keep, **kwargs,
    )  # fmt: skip
    return output, torch.stack(samples), len(step_calls)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("sampler, eta", DEVICE_SAMPLERS)
def test_device_steps_match_the_scheduler_step(sampler, eta, prediction_type):
    pipe = make_tiny_pipeline(prediction_type=prediction_type)  # clip_sample on: DDPM and DDIM clip x_0
    fast, fast_samples, fast_calls = sample_with_steps(pipe, device_steps=True, sampler=sampler, eta=eta)
    stock, stock_samples, stock_calls = sample_with_steps(pipe, device_steps=False, sampler=sampler, eta=eta)
    assert fast_calls == 0 and stock_calls == NUM_STEPS  # the device path really replaced the scheduler's step
    torch.testing.assert_close(fast_samples, stock_samples, **TOLERANCE)
    torch.testing.assert_close(fast.images, stock.images, **TOLERANCE)
    assert fast_samples.std() > 0.05 and torch.isfinite(fast_samples).all()


def test_device_steps_draw_each_images_noise_from_its_own_generator():
    # DDPM draws noise at every step: image 1 of a batch equals the same seed sampled alone.
    pipe = make_tiny_pipeline()
    batch, _, _ = sample_with_steps(pipe, device_steps=True, sampler="ddpm", generator=generators((10, 11, 12)))
    alone, _, _ = sample_with_steps(pipe, device_steps=True, sampler="ddpm", generator=generators((11,)))
    other, _, _ = sample_with_steps(pipe, device_steps=True, sampler="ddpm", generator=generators((13,)))
    torch.testing.assert_close(alone.images[0], batch.images[1], **TOLERANCE)
    assert (other.images[0] - alone.images[0]).abs().max() > 1e-2


@pytest.mark.parametrize(
    "sampler, scheduler_kwargs",
    [("unipc", {}), ("ddpm", {"thresholding": True})],
    ids=["unipc", "thresholding"],
)
def test_other_samplers_and_options_keep_the_scheduler_step(sampler, scheduler_kwargs):
    # (Learned variances step on the device: tests/test_learned_variance.py.)
    pipe = make_tiny_pipeline(**scheduler_kwargs)
    _, samples, calls = sample_with_steps(pipe, device_steps=True, sampler=sampler)
    assert calls == NUM_STEPS and torch.isfinite(samples).all()


def test_trajectory_on_the_device_path_matches_the_scheduler_step():
    pipe = make_tiny_pipeline(prediction_type="v_prediction")
    runs = [
        sample_with_steps(pipe, device_steps=device_steps, sampler="dpmpp_2m", return_trajectory=True)[0]
        for device_steps in (True, False)
    ]
    assert runs[0].trajectory_timesteps == runs[1].trajectory_timesteps and len(runs[0].trajectory) == NUM_STEPS
    for name in ("trajectory", "pred_original_trajectory"):
        torch.testing.assert_close(
            torch.stack(getattr(runs[0], name)), torch.stack(getattr(runs[1], name)), **TOLERANCE
        )


def test_compiled_pipeline_matches_eager_without_recompiling_per_step():
    pipe = make_tiny_pipeline().set_sampler("dpmpp_2m")
    run = lambda steps: (
        pipe(  # noqa: E731
            batch_size=2, generator=generators(), num_inference_steps=steps, output_type="pt"
        ).images
    )
    eager = run(NUM_STEPS)
    pipe.compile(backend="aot_eager")  # traces like inductor, without generating code: seconds, not minutes
    run(1)  # compiles for this batch shape
    # Timesteps are tensors, not constants: every step and every later call reuses that one graph (a CUDA graph
    # on CUDA); a recompilation would fail here.
    with torch.compiler.set_stance("fail_on_recompile"):
        compiled = run(NUM_STEPS)
    assert type(pipe.unet).__name__ == "UNet2DModel"  # compiled in place: saves and loads as before
    torch.testing.assert_close(compiled, eager, **TOLERANCE)


def test_sample_cli_compile_gives_the_eager_grid(saved_pipeline_dir, tmp_path, capsys):
    common = ["sample", str(saved_pipeline_dir), "--sampler", "ddim", "--num_inference_steps", "3",
              "--num_images", "2", "--device", "cpu"]  # fmt: skip
    assert ddpm_hub_main([*common, "--output", str(tmp_path / "eager.png")]) == 0
    assert (
        ddpm_hub_main(
            [*common, "--output", str(tmp_path / "compiled.png"), "--compile", "--compile_backend", "aot_eager"]
        )
        == 0
    )
    assert "compiled.png" in capsys.readouterr().out
    eager, compiled = (
        np.asarray(PIL.Image.open(tmp_path / name), dtype=np.int16) for name in ("eager.png", "compiled.png")
    )
    assert eager.shape == compiled.shape == (16, 32, 3)
    assert np.abs(eager - compiled).max() <= 1  # 8-bit rounding of equal images


@pytest.mark.parametrize(
    "flags, message",
    [(["--compile_backend", "nope"], "Unknown compile backend 'nope'"),
     (["--compile_backend", "aot_eager", "--compile_mode", "reduce-overhead"], "needs the inductor backend")],
)  # fmt: skip
def test_sample_cli_rejects_bad_compile_options_in_one_line(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        ddpm_hub_main(["sample", str(tmp_path / "not-loaded"), "--compile", *flags, "--device", "cpu"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and message in error


def test_compile_rejects_an_unknown_mode(tiny_pipeline):
    with pytest.raises(ValueError, match=r"Unknown compile mode 'fast'; choose one of: default, reduce-overhead"):
        tiny_pipeline.compile("fast")
