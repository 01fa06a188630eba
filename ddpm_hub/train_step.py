"""One training step of a DDPM, as a unit that `--compile` compiles, and the bookkeeping around it.

`TrainStep` is Ho et al. 2020, Algorithm 1, lines 2-5 for one micro-batch: draw t and eps, form x_t, predict, take
the loss, backpropagate. Its random draws run eagerly, so a compiled and an eager run see the same noise (and a run
resumes exactly with or without `--compile`); everything after them (forward process, UNet, loss) is one
`torch.compile`d function, by default with CUDA graphs on a GPU. Nothing in a step waits for the device: a step
whose loss or gradient norm is not finite is skipped on the device (`apply_gradients`, `ema_update`) and counted
by `StepMonitor`, which the loop reads only at its logging interval.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel

from .data import augment
from .labels import drop_labels
from .likelihood.objectives import BoundObjective
from .loss import diffusion_loss
from .pipeline_steps import COMPILE_MODES  # noqa: F401 (re-exported: config imports it from here)

logger = logging.getLogger("ddpm_hub")

# The same compilation without CUDA graphs, for where graphs cannot be used.
_WITHOUT_CUDA_GRAPHS = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}


def default_compile_cache_dir() -> Path:
    """Where compiled kernels are kept between runs: $XDG_CACHE_HOME/ddpm-hub/torch-compile (~/.cache/...)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ddpm-hub" / "torch-compile"


def choose_compile_mode(requested: str | None, device: torch.device, num_processes: int, accumulation: int) -> str:
    """The torch.compile mode to use: CUDA graphs (reduce-overhead) by default on a GPU, and none where unsafe.

    CUDA graphs replay fixed memory: gradients of one replay would be overwritten by the next before an
    accumulated step adds them up, and DDP's gradient all-reduce hooks run outside the captured graph.
    """
    mode = requested or ("reduce-overhead" if device.type == "cuda" else "default")
    if mode not in _WITHOUT_CUDA_GRAPHS:
        return mode
    reason = None
    if device.type != "cuda":
        reason = f"they need a CUDA device, this run is on {device.type}"
    elif num_processes > 1:
        reason = f"{num_processes} processes (DDP) all-reduce gradients outside the graph"
    elif accumulation > 1:
        reason = f"--gradient_accumulation_steps {accumulation} adds gradients across replays"
    if reason is None:
        return mode
    fallback = _WITHOUT_CUDA_GRAPHS[mode]
    if requested is not None or device.type == "cuda":
        logger.info(
            "Compiling with mode %s instead of %s: CUDA graphs are not used because %s.", fallback, mode, reason
        )
    return fallback


def use_compile_cache(folder: str | Path) -> Path:
    """Keep inductor's FX-graph, AOTAutograd and Triton caches in `folder`, reused by later runs and resumes.

    The folder is self-contained: copy it to another machine with the same torch and GPU to skip compilation there.
    """
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)  # read by inductor at its first compilation
    import torch._functorch.config
    import torch._inductor.config

    torch._inductor.config.fx_graph_cache = True
    torch._functorch.config.enable_autograd_cache = True
    return folder


class TrainStep:
    """One micro-batch: noise and timestep draw, forward process, UNet, loss, backward (the first `Step`).

    Args:
        unet (`torch.nn.Module`): the (accelerate-prepared) UNet; also the step's `model`.
        noise_scheduler (`DDPMScheduler`): the training schedule; its `alphas_cumprod` should be on the device.
        accelerator (`Accelerator`): runs backward (with fp16 loss scaling when enabled).
        snr_gamma (`float`, *optional*): Min-SNR gamma, `None` for the plain loss.
        random_flip (`bool`, defaults to `False`): flip images left-right at random.
        channels_last (`bool`, defaults to `False`): hand the UNet channels_last inputs (its weights should be too).
        compile_mode (`str`, *optional*): compile the step with this torch.compile mode; `None` runs it eagerly.
        compile_backend (`str`, defaults to `"inductor"`): torch.compile backend (modes apply to inductor only).
        to_model_input (`Callable`, *optional*): stored samples -> model input, the step's first random draw
            (a `DataSource`'s `to_model_input`); defaults to `ddpm_hub.data.augment` (uint8 pixels).
        drop_labels (`Callable`, *optional*): labels -> labels with some replaced by the null class (classifier-free
            guidance); `None` keeps every label.
        objective (`BoundObjective`, *optional*): Improved DDPM's hybrid or vlb loss (`ddpm_hub.likelihood`) in place
            of the MSE; it draws the timesteps (importance-sampled for vlb) and learns from each batch's bound.
        conditioning (`Callable`, *optional*): `(clean_images, alphas_cumprod) -> (condition, class_labels)`: input
            channels for the UNet after x_t and the class labels that go with them, made from the clean batch with
            the step's second random draws (a super-resolution run's low-resolution input and its augmentation
            level); `None` for none.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        noise_scheduler: DDPMScheduler,
        accelerator: Accelerator,
        *,
        snr_gamma: float | None = None,
        random_flip: bool = False,
        channels_last: bool = False,
        compile_mode: str | None = None,
        compile_backend: str = "inductor",
        to_model_input: Callable[[torch.Tensor, bool], torch.Tensor] | None = None,
        drop_labels: Callable[[torch.Tensor], torch.Tensor] | None = None,
        objective: BoundObjective | None = None,
        conditioning: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ):
        self.unet, self.noise_scheduler, self.accelerator = unet, noise_scheduler, accelerator
        self.objective = objective
        if objective is not None:
            objective.bind(noise_scheduler, accelerator.device)
        self.to_model_input = to_model_input or augment
        self.drop_labels, self.conditioning = drop_labels, conditioning
        self.snr_gamma, self.random_flip, self.channels_last = snr_gamma, random_flip, channels_last
        self.num_train_timesteps = noise_scheduler.config.num_train_timesteps
        self.cuda_graphs = False
        self.loss = self.compute_loss
        if compile_mode is not None:
            inductor = compile_backend == "inductor"
            self.loss = torch.compile(
                self.compute_loss, backend=compile_backend, mode=compile_mode if inductor else None
            )
            self.cuda_graphs = inductor and compile_mode in _WITHOUT_CUDA_GRAPHS

    def compute_loss(
        self,
        clean_images: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        importance_weights: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The part that is compiled: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (eq. 4), UNet, loss.

        A `condition` (a low-resolution image) goes to the UNet after x_t on the channel axis; the loss is x_t's.
        Returns the loss and, with an `objective`, each image's bound term L_t (detached; else `None`).
        """
        noisy_images = self.noise_scheduler.add_noise(clean_images, noise, timesteps)
        model_input = noisy_images
        if condition is not None:
            model_input = torch.cat([noisy_images, condition.to(noisy_images)], dim=1)
        if class_labels is None:
            model_output = self.unet(model_input, timesteps).sample
        else:
            model_output = self.unet(model_input, timesteps, class_labels=class_labels).sample
        bound_terms = None
        if self.objective is None:
            loss = diffusion_loss(model_output, clean_images, noise, timesteps, self.noise_scheduler, self.snr_gamma)
        else:
            loss, bound_terms = self.objective(
                model_output, clean_images, noisy_images, noise, timesteps, importance_weights, self.noise_scheduler,
                self.snr_gamma,
            )  # fmt: skip
        # A non-finite loss can still have finite gradients (the mean of one infinite square); multiplying by NaN
        # then makes every gradient NaN, so the gradient norm alone tells whether to skip the step, on every
        # process alike after DDP's all-reduce, and fp16's GradScaler skips it as it skips an overflow.
        return loss * torch.where(torch.isfinite(loss), 1.0, float("nan")), bound_terms

    @property
    def model(self) -> torch.nn.Module:
        return self.unet

    def __call__(self, batch: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Forward and backward for a stored batch; returns the detached loss (a device scalar, never read here)."""
        # Drawn eagerly and in this order (flip, the conditioning's, eps, t): compiled and eager runs use the same
        # random streams.
        clean_images = self.to_model_input(batch, self.random_flip)
        condition = None
        if self.conditioning is not None:  # e.g. the low-resolution input and its level (class labels)
            condition, class_labels = self.conditioning(clean_images, self.noise_scheduler.alphas_cumprod)
        if self.channels_last:
            clean_images = clean_images.contiguous(memory_format=torch.channels_last)
        noise = torch.randn_like(clean_images)
        importance_weights = None
        if self.objective is None:
            timesteps = torch.randint(0, self.num_train_timesteps, (batch.shape[0],), device=batch.device)
        else:  # uniform as above, or importance-sampled (vlb)
            timesteps, importance_weights = self.objective.draw_timesteps(batch.shape[0], batch.device)
        if class_labels is not None and self.drop_labels is not None:
            class_labels = self.drop_labels(class_labels)  # classifier-free guidance: some labels become the null class
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs are no longer needed
        loss, bound_terms = self.loss(clean_images, noise, timesteps, class_labels, importance_weights, condition)
        self.accelerator.backward(loss)
        if bound_terms is not None:
            self.objective.record(timesteps, bound_terms, self.accelerator)
        return loss.detach()


def make_train_step(
    unet: torch.nn.Module, noise_scheduler: DDPMScheduler, accelerator: Accelerator, data, config
) -> TrainStep:
    """The default `StepFactory` of the Trainer: a `TrainStep` as the flags say, its input from
    `data.to_model_input`, and what the run's parts add (`config.step_options`: `objective`, `conditioning`)."""
    dropping = None
    if data.num_classes and config.model.class_dropout_prob:
        dropping = functools.partial(
            drop_labels, probability=config.model.class_dropout_prob, null_class_id=data.num_classes
        )
    return TrainStep(
        unet,
        noise_scheduler,
        accelerator,
        snr_gamma=config.model.snr_gamma or None,
        random_flip=config.data.random_flip,
        channels_last=config.run.channels_last,
        compile_mode=config.compile_mode,
        compile_backend=config.run.compile_backend,
        to_model_input=data.to_model_input,
        drop_labels=dropping,
        objective=config.step_options.get("objective"),
        conditioning=config.step_options.get("conditioning"),
    )


def gradient_norm(accelerator: Accelerator, model: torch.nn.Module, max_grad_norm: float) -> torch.Tensor | None:
    """The total gradient norm (unscaled under fp16), clipping to `max_grad_norm` when it is positive."""
    if max_grad_norm > 0:
        return accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return None  # DeepSpeed keeps the gradients and handles overflow itself
    accelerator.unscale_gradients()  # so that GradScaler's own inf check has run, as clipping would run it
    return torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])


def apply_gradients(accelerator: Accelerator, model, optimizer, lr_scheduler, max_grad_norm: float) -> torch.Tensor:
    """Clip, step and zero the gradients of one optimizer step; returns whether they were finite (device bool).

    A step with a non-finite gradient norm leaves the weights and the optimizer state as they were: the fused
    AdamW kernel takes a `found_inf` flag and skips its update on the device (as under fp16's GradScaler, which
    sets the same flag itself). The learning-rate schedule still advances.
    """
    norm = gradient_norm(accelerator, model, max_grad_norm)
    finite = torch.isfinite(norm) if norm is not None else torch.ones((), dtype=torch.bool, device=accelerator.device)
    inner = getattr(optimizer, "optimizer", optimizer)
    own_flag = accelerator.scaler is None and getattr(inner, "defaults", {}).get("fused", False)
    if own_flag:
        inner.found_inf = (~finite).float()
    optimizer.step()
    if own_flag:
        del inner.found_inf
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return finite


@torch.no_grad()
def ema_update(ema: EMAModel, parameters, finite: torch.Tensor) -> None:
    """EMAModel.step as one foreach lerp, which leaves the average untouched when `finite` is False.

    shadow <- shadow + (1 - decay) (param - shadow), with the warmup decay of diffusers' EMAModel (its counter
    still counts skipped steps: the flag is not read on the host).
    """
    ema.optimization_step += 1
    decay = ema.get_decay(ema.optimization_step)
    ema.cur_decay_value = decay
    weight = finite.to(ema.shadow_params[0].dtype) * (1 - decay)
    torch._foreach_lerp_(ema.shadow_params, [p.detach() for p in parameters], weight)


class DivergedError(RuntimeError):
    """Training stopped after too many consecutive non-finite steps; nothing from after them was saved."""


@dataclass
class StepReport:
    mean_loss: float  # over the finite steps since the last report (NaN if there were none)
    nonfinite_steps: int  # skipped since the last report
    diverged_at: int | None  # the step at which --max_nonfinite_steps consecutive skips were reached


class StepMonitor:
    """Loss and skipped-step counts kept on the device, read (one host sync) only when the loop asks.

    Args:
        device (`torch.device`): where the counters live.
        global_step (`int`): the optimizer step the run starts at.
        max_nonfinite_steps (`int`): consecutive skipped steps that mean the run diverged; 0 never stops.
    """

    def __init__(self, device: torch.device, global_step: int, max_nonfinite_steps: int):
        self.limit = max_nonfinite_steps

        def zeros(dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros((), dtype=dtype, device=device)

        self.step = zeros(torch.long) + global_step
        self.pending_loss, self.pending_count = zeros(torch.float32), 0
        self.loss_sum, self.loss_count = zeros(torch.float32), zeros(torch.float32)
        self.skipped, self.consecutive, self.diverged_at = zeros(torch.long), zeros(torch.long), zeros(torch.long)
        self.total_skipped = 0

    def add_loss(self, loss: torch.Tensor) -> None:
        """One micro-batch's loss."""
        self.pending_loss += loss.float()
        self.pending_count += 1

    def end_step(self, finite: torch.Tensor) -> None:
        """One optimizer step, kept or skipped."""
        self.step += 1
        self.loss_sum += torch.where(finite, self.pending_loss, 0.0)
        self.loss_count += finite.float() * self.pending_count
        self.pending_loss.zero_()
        self.pending_count = 0
        bad = (~finite).long()
        self.skipped += bad
        self.consecutive.mul_(bad).add_(bad)  # a run of skips, reset by a finite step
        if self.limit:
            reached = (self.diverged_at == 0) & (self.consecutive >= self.limit)
            self.diverged_at.copy_(torch.where(reached, self.step, self.diverged_at))

    def read(self, accelerator: Accelerator) -> StepReport:
        """Mean loss (over processes) and counts since the last read; resets the interval."""
        loss = accelerator.reduce(self.loss_sum / self.loss_count, reduction="mean")
        mean_loss, skipped, diverged_at = torch.stack(
            [loss.float(), self.skipped.float(), self.diverged_at.float()]
        ).tolist()
        self.loss_sum.zero_()
        self.loss_count.zero_()
        self.skipped.zero_()
        self.total_skipped += int(skipped)
        return StepReport(mean_loss, int(skipped), int(diverged_at) or None)

    def diverged(self) -> int | None:
        """The step at which the run was found diverged, if it was (one host sync)."""
        return int(self.diverged_at.item()) or None


def diverged_message(step: int, limit: int, learning_rate: float) -> str:
    return (
        f"training diverged: {limit} consecutive steps up to step {step} had a non-finite loss or gradient norm "
        f"and were skipped, so nothing after them was saved. Lower --learning_rate (it was {learning_rate:g}) or "
        "resume from the last good checkpoint with --resume_from_checkpoint latest."
    )


class CompileTimer:
    """How long the first optimizer step took (compilation, CUDA-graph capture), logged once."""

    def __init__(self, enabled: bool, device: torch.device):
        self.enabled, self.device, self.start = enabled, device, time.perf_counter()

    def first_step_done(self) -> float | None:
        if not self.enabled:
            return None
        self.enabled = False
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self.start
        logger.info("Compiled the training step in %.1f s (until the first optimizer step finished).", seconds)
        return seconds
