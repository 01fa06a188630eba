"""Post-hoc EMA: the profile mathematics against a directly tracked EMA, the tracker's exact resume and branch rules,
and `ddpm-hub ema` (one reconstruction, a sweep, bad input) on a run folder built here from a tiny UNet."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from conftest import TINY_UNET
from diffusers import UNet2DModel

from ddpm_hub import DDPMHubPipeline, make_noise_scheduler
from ddpm_hub.assembly import PipelineParts
from ddpm_hub.cli import main as cli_main
from ddpm_hub.data import draw_shapes
from ddpm_hub.export import export_pipeline
from ddpm_hub.files import write_json
from ddpm_hub.posthoc_ema import (
    SNAPSHOT_DIR,
    PostHocEMA,
    PostHocEMAConfig,
    gamma_to_sigma_rel,
    list_snapshots,
    reconstruct,
    sigma_rel_to_gamma,
)
from ddpm_hub.posthoc_ema.profiles import ProfileBasis
from ddpm_hub.posthoc_ema.sweep import SWEEP_JSON, SWEEP_PLOT


def test_sigma_rel_and_gamma_convert_both_ways():
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    assert gamma_to_sigma_rel(16.97) == pytest.approx(0.05, abs=1e-4)
    assert gamma_to_sigma_rel(6.94) == pytest.approx(0.10, abs=1e-4)
    for sigma_rel in (0.01, 0.03, 0.15, 0.25, 0.28):
        assert gamma_to_sigma_rel(sigma_rel_to_gamma(sigma_rel)) == pytest.approx(sigma_rel, rel=1e-9)
    # A target that is one of the stored profiles is that snapshot alone.
    basis = ProfileBasis([100, 100, 200, 200], [16.97, 6.94, 16.97, 6.94])
    solution = basis.solve(200, 6.94)
    np.testing.assert_allclose(solution.coefficients, [0, 0, 0, 1], atol=1e-6)
    assert solution.profile_error < 1e-6


def _module(size: int) -> torch.nn.Module:
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(torch.zeros(size))
    module.bias = torch.nn.Parameter(torch.zeros(3, 4))
    return module


def test_reconstruction_matches_a_directly_tracked_power_ema(tmp_path):
    """A random walk over 4000 steps; snapshots of sigma_rel 0.05 and 0.10 every 250 steps, written in 16 bits, give
    the EMAs of 0.08 and 0.15 at step 4000 to a relative error below 1e-2."""
    model, generator = _module(1000), torch.Generator().manual_seed(0)
    stored = PostHocEMA(PostHocEMAConfig((0.05, 0.10), snapshot_steps=250))
    direct = PostHocEMA(PostHocEMAConfig((0.08, 0.15), snapshot_steps=10**9))
    stored.setup(model, tmp_path / "run", is_main_process=True)
    direct.setup(model, tmp_path / "direct", is_main_process=True)
    with torch.no_grad():
        for step in range(1, 4001):
            for parameter in model.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator))
            stored.after_optimizer_step(model, step, True)
            direct.after_optimizer_step(model, step, True)
    assert [s.step for s in list_snapshots(tmp_path / "run")] == list(range(250, 4001, 250))

    def norm(tensors):
        return float(sum((t.double() ** 2).sum() for t in tensors) ** 0.5)

    for k, sigma_rel in enumerate((0.08, 0.15)):
        rebuilt, target = reconstruct(tmp_path / "run", sigma_rel), direct.profiles[k]
        error = norm(rebuilt[name] - target[name] for name in target)
        assert error / norm(target.values()) < 1e-2
        # And far closer to its own EMA than the two EMAs are to each other (the test can tell them apart).
        other = direct.profiles[1 - k]
        assert error < 0.05 * norm(target[name] - other[name] for name in target)


def _drive(tracker, model, steps, seed: int = 0) -> None:
    """Optimizer steps `steps` whose weights are a function of the step (and `seed`): a run replayed exactly."""
    with torch.no_grad():
        for step in steps:
            generator = torch.Generator().manual_seed(seed * 100_000 + step)
            for parameter in model.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) + step / 10)
            tracker.after_optimizer_step(model, step, True)


def test_resume_continues_bitwise_and_sets_aside_the_abandoned_branch(tmp_path):
    config = PostHocEMAConfig((0.05, 0.10), snapshot_steps=4)
    model = _module(50)
    whole = PostHocEMA(config)
    whole.setup(model, tmp_path / "whole", True)
    _drive(whole, model, range(1, 13))

    # A run checkpointed at step 6 goes on to step 12 on weights of its own, then is killed and resumed from step 6.
    run = tmp_path / "resumed"
    first = PostHocEMA(config)
    first.setup(model, run, True)
    _drive(first, model, range(1, 7))
    checkpoint = tmp_path / "checkpoint-6"
    checkpoint.mkdir()
    first.save(checkpoint)
    _drive(first, model, range(7, 13), seed=1)
    abandoned = {s.step: s.path.read_bytes() for s in list_snapshots(run) if s.step > 6}

    second = PostHocEMA(config)
    second.setup(model, run, True)
    second.load(checkpoint, resumed_step=6)
    assert [s.step for s in list_snapshots(run)] == [4]
    aside = list((run / SNAPSHOT_DIR).glob("abandoned-*/step-*.safetensors"))
    assert {p.name: p.read_bytes() for p in aside} == {f"step-{s:09d}.safetensors": b for s, b in abandoned.items()}
    _drive(second, model, range(7, 13))

    for ours, theirs in zip(second.profiles, whole.profiles):
        assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
    files = {s.path.name: s.path.read_bytes() for s in list_snapshots(run)}
    assert files == {s.path.name: s.path.read_bytes() for s in list_snapshots(tmp_path / "whole")}
    assert files["step-000000008.safetensors"] != abandoned[8]

    with pytest.raises(RuntimeError, match="step 14 after step 12"):
        second.after_optimizer_step(model, 14, True)
    with pytest.raises(ValueError, match="resume with --ema_sigma_rels 0.05,0.1"):
        other = PostHocEMA(PostHocEMAConfig((0.05, 0.2), snapshot_steps=4))
        other.setup(model, run, True)
        other.load(checkpoint, resumed_step=6)


def test_a_fresh_run_sets_aside_an_earlier_runs_snapshots_and_snapshots_its_last_step(tmp_path):
    model = _module(8)
    earlier = PostHocEMA(PostHocEMAConfig(snapshot_steps=2))
    earlier.setup(model, tmp_path, True)
    _drive(earlier, model, range(1, 5))
    fresh = PostHocEMA(PostHocEMAConfig.for_run((0.05, 0.10), snapshot_steps=2, max_train_steps=3))
    fresh.setup(model, tmp_path, True)
    _drive(fresh, model, range(1, 4))
    assert [s.step for s in list_snapshots(tmp_path)] == [2, 3]  # every 2 steps, and the last
    assert len(list((tmp_path / SNAPSHOT_DIR).glob("abandoned-*/step-*"))) == 2


@pytest.fixture(scope="module")
def phema_run(tmp_path_factory):
    """A run folder as training leaves it: the pipeline of its last step, its settings (its data: 8 images), and
    snapshots of sigma_rel 0.05 and 0.10 every 10 of 60 optimizer steps of a tiny UNet (random updates stand in for
    training)."""
    run = tmp_path_factory.mktemp("phema") / "run"
    torch.manual_seed(0)
    unet = UNet2DModel(**TINY_UNET)
    tracker = PostHocEMA(PostHocEMAConfig((0.05, 0.10), snapshot_steps=10))
    tracker.setup(unet, run, is_main_process=True)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for step in range(1, 61):
            for parameter in unet.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator), alpha=0.02)
            tracker.after_optimizer_step(unet, step, True)
    export_pipeline(PipelineParts(unet, make_noise_scheduler()), run)
    data = run.parent / "data"  # the run's training images: the sweep's default reference
    data.mkdir()
    for i, image in enumerate(draw_shapes(8, size=16, seed=0)):
        image.save(data / f"{i}.png")
    write_json(run / "training_config.json", {"train_data_dir": str(data), "dataset_name": None, "resolution": 16,
                                              "use_ema": True, "ema_max_decay": 0.9999})  # fmt: skip
    write_json(run / "metrics.json", {"optimizer_steps": 60})
    return run


def _unet_weights(folder) -> dict[str, torch.Tensor]:
    return dict(UNet2DModel.from_pretrained(folder / "unet", use_safetensors=True).named_parameters())


def test_ema_writes_a_pipeline_that_loads_and_samples(phema_run, tmp_path, capsys):
    short, long = tmp_path / "short", tmp_path / "long"
    assert cli_main(["ema", str(phema_run), "--sigma_rel", "0.07", "--output_dir", str(short)]) == 0
    assert "sigma_rel 0.07" in capsys.readouterr().out
    assert cli_main(["ema", str(phema_run), "--sigma_rel", "0.12", "--output_dir", str(long)]) == 0

    pipe = DDPMHubPipeline.from_pretrained(short, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert images.images.shape == (2, 16, 16, 3) and np.isfinite(images.images).all()

    expected = reconstruct(phema_run, 0.07)
    weights_short, weights_long = _unet_weights(short), _unet_weights(long)
    assert all(torch.equal(weights_short[name], expected[name]) for name in expected)
    difference = max(float((weights_short[n] - weights_long[n]).abs().max().detach()) for n in expected)
    assert difference > 1e-3

    card = (short / "README.md").read_text(encoding="utf-8")
    assert "post-hoc EMA" in card and "sigma_rel 0.07 at step 60" in card and "ema_max_decay" not in card
    settings = json.loads((short / "training_config.json").read_text(encoding="utf-8"))
    assert settings["posthoc_ema_sigma_rel"] == 0.07 and settings["posthoc_ema_step"] == 60


def test_sweep_keeps_the_sigma_rel_with_the_best_score(phema_run, tmp_path, capsys):
    out = tmp_path / "best"
    # 41 images: FID's least for 40-dimensional features; the reference is the run's training data (8 images).
    scoring = ["--features", "efficientnet-lite0-40", "--num_samples", "41", "--batch_size", "41", "--metrics", "fid",
               "--num_inference_steps", "3", "--cache_dir", str(tmp_path / "cache")]  # fmt: skip
    arguments = [str(phema_run), "--sweep", "0.05:0.15:2", "--output_dir", str(out), "--device", "cpu", *scoring]
    assert cli_main(["ema", *arguments]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / SWEEP_JSON).read_text(encoding="utf-8"))
    fids = {point["sigma_rel"]: point["fid"] for point in record["curve"]}
    assert sorted(fids) == [0.05, 0.15] and len(set(fids.values())) == 2
    best = min(fids, key=fids.get)
    assert record["best"]["sigma_rel"] == best and "<- best" in printed
    expected, exported = reconstruct(phema_run, best), _unet_weights(out)
    assert all(torch.equal(exported[name], expected[name]) for name in expected)
    assert np.isfinite(record["run_pipeline"]["fid"]) and "fixed-decay EMA" in record["run_pipeline"]["label"]
    assert (out / SWEEP_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"sigma_rel {best}" in (out / "README.md").read_text(encoding="utf-8")
    assert record["reference"].startswith("folder") and record["reference_images"] == 8


def test_bad_input_is_one_line_and_exit_2(phema_run, tmp_path, capsys):
    no_snapshots = tmp_path / "plain"
    export_pipeline(PipelineParts(UNet2DModel(**TINY_UNET), make_noise_scheduler()), no_snapshots)
    cases = [
        ([str(no_snapshots), "--sigma_rel", "0.07"], "has no post-hoc EMA snapshots"),
        ([str(phema_run), "--sigma_rel", "0.005"], r"they reach sigma_rel 0\.\d{3} to 0\.\d{3}"),
        ([str(phema_run), "--sigma_rel", "0.07", "--step", "15"], "--step 15 has no snapshot.*10, 20, 30"),
        ([str(phema_run), "--sweep", "0.01:0.1:4", "--metrics", "kid"], "lacks fid"),
    ]
    for arguments, message in cases:
        assert cli_main(["ema", *arguments, "--output_dir", str(tmp_path / "out")]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and re.search(message, error), error
    assert not (tmp_path / "out").exists()


TRAIN = [
    "--dataset_name", "shapes", "--model", "tiny", "--max_train_samples", "32", "--train_batch_size", "8",
    "--ddpm_num_inference_steps", "1", "--eval_batch_size", "2", "--logging_steps", "2", "--logger", "none",
    "--max_train_steps", "6", "--checkpointing_steps", "3", "--post_hoc_ema", "--ema_snapshot_steps", "2",
]  # fmt: skip


def test_a_run_stopped_by_sigterm_and_resumed_keeps_the_uninterrupted_snapshots(tmp_path, monkeypatch, capsys):
    import os
    import signal

    from ddpm_hub.posthoc_ema.part import PostHocEMAPart
    from ddpm_hub.train import main as train_main

    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert train_main([*TRAIN, "--output_dir", str(whole)]) == 0
    step_hook = PostHocEMAPart.after_optimizer_step

    def sigterm_at_step_3(self, step, finite):
        step_hook(self, step, finite)
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as a cluster's scheduler stops a job

    monkeypatch.setattr(PostHocEMAPart, "after_optimizer_step", sigterm_at_step_3)
    assert train_main([*TRAIN, "--output_dir", str(stopped)]) == 0
    assert (stopped / "checkpoint-3" / "posthoc_ema.safetensors").is_file() and not (stopped / "checkpoint-6").exists()
    monkeypatch.undo()
    assert train_main([*TRAIN, "--output_dir", str(stopped), "--resume_from_checkpoint", "latest"]) == 0

    names = [snapshot.path.name for snapshot in list_snapshots(whole)]
    assert names == [snapshot.path.name for snapshot in list_snapshots(stopped)]
    assert names == [f"step-{step:09d}.safetensors" for step in (2, 4, 6)]
    for name in names:
        assert (whole / SNAPSHOT_DIR / name).read_bytes() == (stopped / SNAPSHOT_DIR / name).read_bytes()
    a, b = reconstruct(whole, 0.07), reconstruct(stopped, 0.07)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    settings = json.loads((stopped / "training_config.json").read_text())
    assert settings["post_hoc_ema"] is True and settings["ema_snapshot_steps"] == 2

    # A run that resumes a checkpoint without post-hoc state cannot start its averages at step 1: one line, exit 2.
    plain = tmp_path / "plain"
    without = TRAIN[: TRAIN.index("--post_hoc_ema")]
    assert train_main([*without, "--output_dir", str(plain)]) == 0
    capsys.readouterr()
    assert train_main([*TRAIN, "--output_dir", str(plain), "--resume_from_checkpoint", "checkpoint-3"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "holds no post-hoc EMA" in errors[0]
