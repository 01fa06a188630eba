# Copyright 2026 The ddpm-hub authors. Licensed under the Apache License, Version 2.0.
"""Classifier guidance (Dhariwal & Nichol 2021, Sec. 4.1-4.2): steer any sampler with a noise-aware classifier.

Shipped beside the weights with `pipeline.py` (torch and diffusers only), so that a pipeline loaded without ddpm-hub
is guided by any classifier object passed to it. A classifier is a module called as `classifier(x_t, timesteps)` on
the model's noisy samples x_t (pixels in [-1, 1], or a latent model's scaled latents) that returns class logits
(a tensor, or an output with `.logits`); if it has a diffusers-style `config`, the keys `sample_size`,
`in_channels`, `noise_schedule` (see `schedule_fingerprint`), `latent`, `latent_scaling_factor` and `label_names`
are checked against the pipeline before sampling.

The gradient g = s ∇_{x_t} log p(y | x_t) enters in one of two places, as in ADM's `condition_mean` and
`condition_score`:

- DDPM's ancestral sampler (Algorithm 1 of the paper): the mean of p(x_t-1 | x_t) moves by Σ g, Σ the variance of
  the step;
- every other sampler (Algorithm 2: DDIM, and DPM-Solver, Euler, Heun, UniPC... alike): the noise prediction moves,
  eps' = eps - sqrt(1 - ᾱ_t) g, the score of p(x_t) p(y | x_t)^s. The shift is made in the model output whatever it
  predicts (eps, v or x_0 are affine in eps at a fixed x_t; `pipeline_parameterization.eps_coefficients`), so the
  sampler then steps as it always does.

Both are written once, in `GuidedSteps`, around the steps of any sampler (`DeviceSteps` or `SchedulerSteps`).
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from .pipeline_parameterization import eps_coefficients, model_output_from, predicted_x0
from .pipeline_steps import explicit_config

# The scheduler config keys that set the forward process q(x_t | x_0), i.e. the noise levels alpha_bar_t.
SCHEDULE_KEYS = (
    "num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "trained_betas", "rescale_betas_zero_snr",
)  # fmt: skip

# A classifier's guidance scale s when `classifier_scale` is not given: ADM's default for its classifiers.
DEFAULT_CLASSIFIER_SCALE = 1.0


def schedule_fingerprint(config) -> str:
    """A short name of the noise levels a scheduler config defines: `{beta_schedule}-{T}-{hash}`.

    The hash covers every key that sets alpha_bar_t (`SCHEDULE_KEYS`), so two models share a fingerprint exactly when
    a classifier trained on the x_t of one sees the same x_t in the other.
    """
    fields = {key: config.get(key) for key in SCHEDULE_KEYS}
    fields["rescale_betas_zero_snr"] = bool(fields["rescale_betas_zero_snr"])
    if fields["trained_betas"] is not None:
        fields["trained_betas"] = [float(beta) for beta in np.asarray(fields["trained_betas"]).reshape(-1)]
    for key in ("beta_start", "beta_end"):
        fields[key] = None if fields[key] is None else float(fields[key])
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    return f"{fields['beta_schedule']}-{fields['num_train_timesteps']}-{digest}"


def class_id(label, names: list[str] | None, num_classes: int, owner: str = "this model") -> int:
    """The id of a class `label` (an id, a name, or an id written as text) among `num_classes` classes.

    Raises `ValueError` with one sentence naming what `owner` knows.
    """
    if isinstance(label, str):
        if names is not None and label in names:
            return names.index(label)
        if label.strip().isdigit():  # an id written as text, as on the command line
            return class_id(int(label), names, num_classes, owner)
        known = f"{owner} knows: {', '.join(names)}" if names else f"{owner} has no label names; use ids"
        raise ValueError(f"Unknown class label {label!r}; {known}.")
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        raise ValueError(f"A class label must be an id (int) or a name (str), got {label!r}.")
    label = int(label)
    if not 0 <= label < num_classes:
        raise ValueError(
            f"Class id {label} is out of range; {owner} has {num_classes} classes (ids 0 to {num_classes - 1})."
        )
    return label


def _config_value(module, key: str):
    config = getattr(module, "config", None)
    if config is None:
        return None
    return config.get(key) if hasattr(config, "get") else getattr(config, key, None)


def classifier_label_names(classifier) -> list[str] | None:
    """The class names a classifier's config records, in id order, or `None`."""
    names = _config_value(classifier, "label_names")
    return [str(name) for name in names] if names is not None else None


def _logits(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)):
        return output[0]
    raise ValueError(f"The classifier must return logits (a tensor or an output with `.logits`), got {type(output)}.")


class ClassifierGuidance:
    """g = s ∇_{x_t} log p(y | x_t) for fixed target classes y (ADM's `cond_fn`).

    Args:
        classifier (`torch.nn.Module`): called as `classifier(x_t, timesteps)`, returning logits.
        class_labels (`torch.Tensor`): the target class id of every image, shape `(batch,)`.
        scale (`float`): the guidance scale s >= 0.
    """

    def __init__(self, classifier, class_labels: torch.Tensor, scale: float):
        self.classifier, self.class_labels, self.scale = classifier, class_labels, scale
        parameter = next(iter(classifier.parameters()), None) if hasattr(classifier, "parameters") else None
        self.dtype = parameter.dtype if parameter is not None else torch.float32

    def gradient(self, sample: torch.Tensor, t) -> torch.Tensor:
        """g at x_t = `sample` (in the variance-preserving scale, as the classifier was trained), in float32.

        Images are independent in the classifier, so the gradient of the summed log-probabilities is each image's own.
        """
        with torch.enable_grad():
            x_in = sample.detach().to(self.dtype).requires_grad_(True)
            timesteps = torch.as_tensor(t, device=sample.device).reshape(-1).expand(sample.shape[0])
            log_probs = F.log_softmax(_logits(self.classifier(x_in, timesteps)).float(), dim=-1)
            selected = log_probs.gather(1, self.class_labels.to(log_probs.device).view(-1, 1)).sum()
            (gradient,) = torch.autograd.grad(selected, x_in)
        return gradient.float() * self.scale


def _alpha_prod_at(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """alpha_bar at (possibly fractional) timesteps, interpolated in sigma = sqrt((1 - alpha_bar) / alpha_bar) as the
    sigma-space schedulers (Euler, Heun, LMS) place their fractional timesteps."""
    whole = timesteps.round()
    exact = alphas_cumprod[whole.long().clamp(0, len(alphas_cumprod) - 1)]
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt().numpy()
    interpolated = np.interp(timesteps.numpy(), np.arange(len(sigmas)), sigmas)
    between = 1 / (1 + torch.from_numpy(interpolated) ** 2)
    return torch.where((timesteps - whole).abs() < 1e-6, exact, between)


def _ddpm_step_variance(scheduler: DDPMScheduler, t: int, predicted_variance=None) -> torch.Tensor:
    """Σ of DDPM's step at t, as `DDPMScheduler.step` samples it (its `_get_variance` returns a standard deviation for
    fixed_small_log and a log-variance for fixed_large_log and learned_range)."""
    kind = scheduler.config.variance_type
    value = scheduler._get_variance(t, predicted_variance=predicted_variance)
    if kind == "fixed_small_log":
        return value**2
    if kind in ("fixed_large_log", "learned_range"):
        return value.exp()
    return value


class GuidedSteps:
    """The steps of any sampler (`DeviceSteps` or `SchedulerSteps`), guided by a classifier; see the module docstring.

    Built after `set_timesteps`: the per-step coefficients are computed once from the scheduler's timesteps and kept
    on the device, so a guided step reads nothing back to the host beyond what the wrapped step does.
    """

    def __init__(self, steps, scheduler, guidance: ClassifierGuidance, device):
        self.steps, self.scheduler, self.guidance = steps, scheduler, guidance
        self.ancestral = isinstance(scheduler, DDPMScheduler)
        # The forward process the classifier was trained on, whatever the sampler.
        training = DDPMScheduler.from_config(explicit_config(scheduler.config))
        timesteps = scheduler.timesteps.detach().cpu().double()
        alpha_prod = _alpha_prod_at(training.alphas_cumprod.double(), timesteps)
        self.prediction_type = prediction_type = scheduler.config.prediction_type
        shifts = []
        for alpha, sigma in zip(alpha_prod.sqrt().tolist(), (1 - alpha_prod).sqrt().tolist()):
            # eps = a x_t + b m: moving eps by -sigma g moves the model output m by -sigma g / b.
            eps_per_output = eps_coefficients(prediction_type, alpha, sigma)[1]
            shifts.append(-sigma / eps_per_output if eps_per_output != 0 and math.isfinite(eps_per_output) else 0.0)
        self.output_shift = torch.tensor(shifts, dtype=torch.float32).to(device)
        self.alpha = alpha_prod.sqrt().float().to(device)
        self.sigma = (1 - alpha_prod).sqrt().float().to(device)
        clips = not self.ancestral and scheduler.config.get("clip_sample")
        self.clip = float(scheduler.config.clip_sample_range) if clips else None
        self.timestep_values = [int(t) for t in timesteps.tolist()]  # DDPM's, read without a host sync
        # A learned-variance model's output holds its variance channels only for the step that reads them (DDPM's).
        self.takes_variance = getattr(steps, "takes_variance", False)
        self.learned_variance = self.ancestral and self.takes_variance
        if self.ancestral and not self.learned_variance:
            # No noise is added at t = 0, so no shift there either: the mean moves by the variance of the step taken.
            variances = [float(_ddpm_step_variance(scheduler, int(t))) if t > 0 else 0.0 for t in timesteps.tolist()]
            self.variance = torch.tensor(variances, dtype=torch.float32).to(device)
        self._model_input: torch.Tensor | None = None

    def scale_model_input(self, sample: torch.Tensor, index: int, t) -> torch.Tensor:
        self._model_input = self.steps.scale_model_input(sample, index, t)
        return self._model_input

    def step(self, model_output: torch.Tensor, index: int, t, sample: torch.Tensor):
        """x_t -> x_t-1, guided; returns (prev_sample, pred_original_sample or None)."""
        # The model's input is x_t in the variance-preserving scale, which the classifier was trained on (a
        # sigma-space sampler's `sample` is x_t / sqrt(alpha_bar_t)).
        x_t = self._model_input if self._model_input is not None else self.steps.scale_model_input(sample, index, t)
        self._model_input = None
        gradient = self.guidance.gradient(x_t, t)
        channels = sample.shape[1]  # a learned-variance model's extra output channels are left as they are
        if self.ancestral:
            prev_sample, pred_original = self.steps.step(model_output, index, t, sample)
            if self.learned_variance:
                timestep = self.timestep_values[index]
                predicted_variance = model_output[:, channels:]
                variance = _ddpm_step_variance(self.scheduler, timestep, predicted_variance) if timestep else 0.0
            else:
                variance = self.variance[index]
            return prev_sample + variance * gradient, pred_original
        shifted = model_output[:, :channels] + self.output_shift[index] * gradient
        if self.clip is not None:
            shifted = self._clipped(shifted, x_t, index)
        if model_output.shape[1] > channels:
            shifted = torch.cat([shifted, model_output[:, channels:]], dim=1)
        return self.steps.step(shifted, index, t, sample)

    def _clipped(self, model_output: torch.Tensor, x_t: torch.Tensor, index: int) -> torch.Tensor:
        """The output whose x_0 is the guided x_0 clipped, and whose eps goes with that x_0.

        DDIM clips x_0 (`clip_sample`) but takes eps from the unclipped output: beside a clipped x_0, a shifted eps
        would carry x_t-1 against the gradient wherever the shift takes x_0 out of range (at high noise). With x_0
        and eps consistent, the sampler's own clip leaves the output as it is (diffusers' `use_clipped_model_output`).
        """
        alpha, sigma = self.alpha[index], self.sigma[index]
        pred_original = predicted_x0(self.prediction_type, x_t, model_output, alpha, sigma).clamp(-self.clip, self.clip)
        pred_epsilon = (x_t - alpha * pred_original) / sigma
        return model_output_from(self.prediction_type, pred_original, pred_epsilon, alpha, sigma)


class DDPMHubGuidanceMixin:
    """Classifier guidance for `DDPMHubPipeline`: checks a classifier against the model, wraps the sampler's steps."""

    def check_classifier(self, classifier) -> None:
        """Refuse (one-line `ValueError`) a classifier whose config says it was trained for other samples than this
        model's: another resolution, channels, noise schedule, or pixels for a latent model (or the reverse)."""
        if not callable(classifier):
            raise ValueError(
                f"`classifier` must be a module called as classifier(x_t, timesteps), got {type(classifier).__name__}."
            )
        channels, height, width = self.sample_shape
        latent_model = getattr(self, "vae", None) is not None
        space = "latents" if latent_model else "images"
        size, in_channels = _config_value(classifier, "sample_size"), _config_value(classifier, "in_channels")
        if size is not None and in_channels is not None:
            trained = (int(in_channels), *((size, size) if isinstance(size, int) else tuple(size)))
            if trained != (channels, height, width):
                raise ValueError(
                    f"The classifier was trained on {trained[2]}x{trained[1]} samples with {trained[0]} channel(s), "
                    f"but this model's {space} are {width}x{height} with {channels}; train one for this model with "
                    "`ddpm-hub train-classifier --pretrained_model_name_or_path MODEL`."
                )
        latent = _config_value(classifier, "latent")
        if latent is not None and bool(latent) != latent_model:
            trained_on, model = ("VAE latents", "a pixel") if latent else ("pixels", "a latent")
            raise ValueError(f"The classifier was trained on {trained_on}, but this is {model} model.")
        factor = _config_value(classifier, "latent_scaling_factor")
        if latent_model and factor is not None and not math.isclose(factor, self.latent_scaling_factor, rel_tol=1e-6):
            raise ValueError(
                f"The classifier was trained on latents scaled by {factor}, but this model scales them by "
                f"{self.latent_scaling_factor}."
            )
        trained_schedule = _config_value(classifier, "noise_schedule")
        schedule = schedule_fingerprint(self.scheduler.config)
        if trained_schedule is not None and trained_schedule != schedule:
            raise ValueError(
                f"The classifier was trained on the noise schedule {trained_schedule}, but this model's is {schedule}; "
                "its x_t would not be what the classifier saw."
            )

    def prepare_guidance(
        self, class_labels, batch_size: int, guidance_scale, classifier, classifier_scale, device=None
    ) -> tuple[torch.Tensor | None, float, ClassifierGuidance | None]:
        """`prepare_class_labels`, and with a `classifier` the guidance towards `class_labels`.

        On an unconditional model the labels name the classifier's classes; on a class-conditional one they name
        the model's, which must be the classifier's too, and the two guidances combine. Returns (the model's label
        ids or None, the classifier-free guidance scale, the `ClassifierGuidance` or None when s = 0).
        """
        if classifier is None:
            if classifier_scale is not None:
                raise ValueError(f"`classifier_scale` ({classifier_scale}) needs a `classifier`.")
            return (*self.prepare_class_labels(class_labels, batch_size, guidance_scale, device), None)
        scale = DEFAULT_CLASSIFIER_SCALE if classifier_scale is None else classifier_scale
        if (
            isinstance(scale, bool)
            or not isinstance(scale, (int, float, np.integer, np.floating))
            or not math.isfinite(scale)
            or scale < 0
        ):
            raise ValueError(f"`classifier_scale` must be a finite number >= 0, got {classifier_scale!r}.")
        self.check_classifier(classifier)
        if class_labels is None:
            raise ValueError("Classifier guidance needs `class_labels`: the class to steer each image towards.")
        names = classifier_label_names(classifier)
        num_classes = _config_value(classifier, "num_classes") or (len(names) if names else None)
        if self.num_classes:
            if (names is not None and self.label_names is not None and names != self.label_names) or (
                num_classes is not None and num_classes != self.num_classes
            ):
                raise ValueError(
                    f"The classifier's classes ({', '.join(names or [str(num_classes)])}) are not this conditional "
                    f"model's ({', '.join(self.label_names or [str(self.num_classes)])}); guide it with a classifier "
                    "of the same classes."
                )
            labels, cfg_scale = self.prepare_class_labels(class_labels, batch_size, guidance_scale, device)
            targets = labels
        else:
            labels, cfg_scale = self.prepare_class_labels(None, batch_size, guidance_scale, device)
            if isinstance(class_labels, torch.Tensor):
                class_labels = class_labels.reshape(-1).tolist()
            items = list(class_labels) if isinstance(class_labels, (list, tuple)) else [class_labels]
            items = items * batch_size if len(items) == 1 else items
            if len(items) != batch_size:
                raise ValueError(
                    f"Got {len(items)} `class_labels` for a batch of {batch_size}; pass one, or one per image."
                )
            count = num_classes if num_classes is not None else 2**62
            ids = [class_id(label, names, count, owner="the classifier") for label in items]
            targets = torch.tensor(ids, dtype=torch.long, device=device)
        self._check_classifier_device(classifier, device)
        return labels, cfg_scale, ClassifierGuidance(classifier, targets, float(scale)) if scale > 0 else None

    @staticmethod
    def _check_classifier_device(classifier, device) -> None:
        parameter = next(iter(classifier.parameters()), None) if hasattr(classifier, "parameters") else None
        if parameter is not None and device is not None and parameter.device.type != torch.device(device).type:
            raise ValueError(
                f"The classifier is on {parameter.device} but the pipeline samples on {device}; move it there first "
                "(`classifier.to(pipe.device)`)."
            )

    def _guided_steps(self, steps, guidance: ClassifierGuidance | None):
        """`steps` guided by `guidance` (after `set_timesteps`), or `steps` themselves without it."""
        if guidance is None:
            return steps
        return GuidedSteps(steps, self.scheduler, guidance, self.scheduler.timesteps.device)
