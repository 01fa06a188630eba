"""The training step (ddpm_hub/train_step.py): compiled = eager, non-finite steps skipped and counted, divergence
stops."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file
from test_train import TINY, metrics_log

import ddpm_hub.data.memory
import ddpm_hub.train_step
from ddpm_hub.train import main as train_main
from ddpm_hub.train_step import choose_compile_mode, ema_update

# v-prediction with Min-SNR weighting: the loss path with the most arithmetic between the UNet and the number.
V_MIN_SNR = ["--prediction_type", "v_prediction", "--snr_gamma", "5", "--logging_steps", "1", "--dropout", "0"]


def run(tmp_path, name: str, *args: str) -> list[dict]:
    out = tmp_path / name
    code = train_main([*TINY, *V_MIN_SNR, "--output_dir", str(out), "--save_images_epochs", "100", *args])
    assert code == 0
    return metrics_log(out)


def losses(rows: list[dict]) -> list[float]:
    return [row["loss"] for row in rows if "loss" in row]


@pytest.mark.parametrize("accumulation", ["1", "2"])
def test_compiled_step_follows_the_eager_loss_trajectory(tmp_path, accumulation):
    # aot_eager traces forward and backward into graphs as inductor does, without minutes of C++ code generation;
    # the random draws stay eager, so both runs see the same noise and timesteps.
    args = ["--max_train_steps", "3", "--gradient_accumulation_steps", accumulation, "--checkpointing_steps", "3"]
    eager = losses(run(tmp_path, "eager", *args))
    compiled_rows = run(tmp_path, "compiled", *args, "--compile", "--compile_backend", "aot_eager",
                        "--compile_cache_dir", str(tmp_path / "cache"))  # fmt: skip
    assert len(eager) == 3 and losses(compiled_rows) == pytest.approx(eager, rel=1e-5)
    assert [row for row in compiled_rows if "compile_seconds" in row][0]["step"] == 1
    first, second = (load_file(str(tmp_path / n / "checkpoint-3/model.safetensors")) for n in ("eager", "compiled"))
    assert max((first[k] - second[k]).abs().max().item() for k in first) < 1e-5


@pytest.mark.slow
def test_inductor_compiled_step_follows_the_eager_loss_trajectory(tmp_path):
    # Inductor fuses kernels and reorders float sums: a stated tolerance of 1e-3 (relative) over 3 steps.
    # Slow: 105 s of C++ code generation on 2 idle CPU cores (cold cache), a seventh of the default suite's CPU time.
    # The default suite traces the same step with aot_eager (above); benchmarks/gpu_check.sh compiles it with inductor.
    args = ["--max_train_steps", "3", "--gradient_accumulation_steps", "2"]
    eager = losses(run(tmp_path, "eager", *args))
    compiled = losses(run(tmp_path, "inductor", *args, "--compile", "--compile_cache_dir", str(tmp_path / "cache")))
    assert compiled == pytest.approx(eager, rel=1e-3)
    assert any((tmp_path / "cache").iterdir())  # inductor's caches went to the folder asked for


def test_absurd_learning_rate_stops_with_one_line_error(tmp_path, capsys):
    # Issue 12's reproduction: --learning_rate 1e8 used to exit 0 and save NaN weights.
    out = tmp_path / "diverged"
    code = train_main([*TINY, "--max_train_steps", "30", "--learning_rate", "1e8", "--no_use_ema",
                       "--max_nonfinite_steps", "5", "--checkpointing_steps", "25",
                       "--output_dir", str(out)])  # fmt: skip
    assert code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("train_unconditional.py: error: training diverged: 5 consecutive steps up to step ")
    assert "Lower --learning_rate (it was 1e+08)" in error and "--resume_from_checkpoint latest" in error
    # Nothing exported, and no checkpoint written after the divergence was found.
    assert not (out / "model_index.json").exists() and not (out / "unet").exists()
    assert not list(out.glob("checkpoint-*"))
    assert sum(row.get("nonfinite_steps", 0) for row in metrics_log(out)) >= 5


def test_injected_nonfinite_batches_are_skipped_and_counted(tmp_path, monkeypatch):
    # Batches 3 and 4 hold an infinite pixel: those optimizer steps are skipped, the others train.
    calls = []

    def augment_with_inf(batch, random_flip, generator=None):
        images = augment(batch, random_flip, generator)
        calls.append(1)
        if len(calls) in (3, 4):
            images[0, 0, 0, 0] = math.inf
        return images

    augment = ddpm_hub.data.memory.augment  # InMemoryImages.to_model_input, the step's first draw
    monkeypatch.setattr(ddpm_hub.data.memory, "augment", augment_with_inf)
    out = tmp_path / "inf"
    rows = run(tmp_path, "inf", "--max_train_steps", "6", "--checkpointing_steps", "2", "--logging_steps", "2")
    assert [row["nonfinite_steps"] for row in rows if "loss" in row] == [0, 2, 0]
    assert [math.isfinite(row["loss"]) for row in rows if "loss" in row] == [True, False, True]  # no finite step in 3-4
    assert json.loads((out / "metrics.json").read_text())["nonfinite_steps"] == 2
    assert "Skipped 2 of the last steps" in (out / "train.log").read_text()

    def state(step: int) -> tuple[dict, dict]:
        folder = out / f"checkpoint-{step}"
        return load_file(str(folder / "model.safetensors")), torch.load(folder / "optimizer.bin", weights_only=True)

    (model2, optim2), (model4, optim4), (model6, _) = state(2), state(4), state(6)
    # Skipped steps left the weights and AdamW's moments and step counts exactly as they were ...
    assert all(torch.equal(model2[k], model4[k]) for k in model2)
    for index, moments in optim2["state"].items():
        assert all(torch.equal(value, optim4["state"][index][key]) for key, value in moments.items())
    # ... and training went on afterwards, with finite weights.
    assert not all(torch.equal(model4[k], model6[k]) for k in model4)
    assert all(torch.isfinite(v).all() for v in model6.values())
    unet = load_file(str(out / "unet/diffusion_pytorch_model.safetensors"))
    assert all(torch.isfinite(v).all() for v in unet.values())


def test_ema_update_matches_diffusers_and_skips_nonfinite_steps():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    reference = EMAModel(model.parameters(), decay=0.999, use_ema_warmup=True, power=0.75, foreach=True)
    ours = EMAModel(model.parameters(), decay=0.999, use_ema_warmup=True, power=0.75, foreach=True)
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        reference.step(model.parameters())
        ema_update(ours, model.parameters(), torch.tensor(True))
    for a, b in zip(reference.shadow_params, ours.shadow_params):
        torch.testing.assert_close(a, b)
    before = [p.clone() for p in ours.shadow_params]
    with torch.no_grad():
        model.weight.add_(1.0)  # as if a step had been taken; a skipped step leaves the weights, so the EMA stays
    ema_update(ours, model.parameters(), torch.tensor(False))
    assert all(torch.equal(a, b) for a, b in zip(before, ours.shadow_params))
    assert ours.cur_decay_value == reference.get_decay(4)


@pytest.mark.parametrize(
    "requested, device, processes, accumulation, expected, logged",
    [
        (None, "cuda", 1, 1, "reduce-overhead", False),
        (None, "cpu", 1, 1, "default", False),
        ("max-autotune", "cuda", 1, 1, "max-autotune", False),
        (None, "cuda", 2, 1, "default", True),
        ("max-autotune", "cuda", 1, 4, "max-autotune-no-cudagraphs", True),
        ("reduce-overhead", "cpu", 1, 1, "default", True),
        ("max-autotune-no-cudagraphs", "cuda", 2, 2, "max-autotune-no-cudagraphs", False),
    ],
)
def test_cuda_graphs_only_where_safe(caplog, requested, device, processes, accumulation, expected, logged):
    with caplog.at_level(logging.INFO, logger="ddpm_hub"):
        assert choose_compile_mode(requested, torch.device(device), processes, accumulation) == expected
    assert ("CUDA graphs are not used because" in caplog.text) == logged


@pytest.mark.parametrize("max_grad_norm", [0.0, 1.0])
def test_apply_gradients_skips_a_nonfinite_step_on_the_device(max_grad_norm):
    from accelerate import Accelerator

    from ddpm_hub.train_step import apply_gradients

    accelerator = Accelerator()
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for bad, expected in ((False, True), (True, False), (False, True)):
        before = [p.detach().clone() for p in model.parameters()]
        moments = [optimizer.state[p]["exp_avg"].clone() for p in model.parameters()] if optimizer.state else None
        loss = model(torch.ones(4, 3)).pow(2).mean() * (math.nan if bad else 1.0)
        loss.backward()
        finite = apply_gradients(accelerator, model, optimizer, lr_scheduler, max_grad_norm)
        assert finite.item() is expected
        unchanged = all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
        assert unchanged is bad
        if bad:
            assert all(torch.equal(m, optimizer.state[p]["exp_avg"]) for m, p in zip(moments, model.parameters()))
            assert all(optimizer.state[p]["step"].item() == 1 for p in model.parameters())
        assert all(p.grad is None for p in model.parameters())
