"""One training step of a noise-aware classifier: the diffusion model's forward process, then cross-entropy.

ADM's `scripts/classifier_train.py` with `noised=True` (Dhariwal & Nichol 2021, Sec. 4.1): draw t uniformly over the
diffusion model's training timesteps, noise the clean sample to x_t with *its* schedule (`DDPMScheduler.add_noise`,
DDPM eq. 4), and train the classifier to name the image's class from (x_t, t). The classifier then knows p(y | x_t)
at every noise level the sampler visits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler


class ClassifierStep:
    """One micro-batch (a `ddpm_hub.training.Step`): its random draws are the data's `to_model_input` (a flip, a
    latent's posterior sample), then eps, then t, in this order, so a resumed run is bit-identical.

    Args:
        classifier (`torch.nn.Module`): the (accelerate-prepared) classifier; also the step's `model`.
        noise_scheduler (`DDPMScheduler`): the diffusion model's training schedule (`alphas_cumprod` on the device).
        accelerator (`Accelerator`): runs backward (with fp16 loss scaling when enabled).
        to_model_input (`Callable`): stored samples -> clean model input (a `DataSource`'s `to_model_input`).
        random_flip (`bool`, defaults to `False`): flip images left-right at random.
    """

    def __init__(
        self,
        classifier: torch.nn.Module,
        noise_scheduler: DDPMScheduler,
        accelerator: Accelerator,
        to_model_input: Callable[[torch.Tensor, bool], torch.Tensor],
        random_flip: bool = False,
    ):
        self.model, self.noise_scheduler, self.accelerator = classifier, noise_scheduler, accelerator
        self.to_model_input, self.random_flip = to_model_input, random_flip
        self.num_train_timesteps = noise_scheduler.config.num_train_timesteps

    def __call__(self, samples: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        if class_labels is None:
            raise ValueError("A classifier trains on labelled images; this batch has no labels.")
        clean = self.to_model_input(samples, self.random_flip)
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, self.num_train_timesteps, (clean.shape[0],), device=clean.device)
        noisy = self.noise_scheduler.add_noise(clean, noise, timesteps)
        loss = F.cross_entropy(self.model(noisy, timesteps).logits.float(), class_labels)
        # A non-finite loss makes every gradient NaN, so the gradient norm alone skips the step (see TrainStep).
        loss = loss * torch.where(torch.isfinite(loss), 1.0, float("nan"))
        self.accelerator.backward(loss)
        return loss.detach()


def make_classifier_step(classifier, noise_scheduler, accelerator, data, config) -> ClassifierStep:
    """The `StepFactory` of a classifier run."""
    return ClassifierStep(
        classifier, noise_scheduler, accelerator, data.to_model_input, random_flip=config.data.random_flip
    )


@torch.no_grad()
def accuracy_by_noise_level(
    classifier: torch.nn.Module,
    clean: torch.Tensor,
    labels: torch.Tensor,
    noise_scheduler: DDPMScheduler,
    *,
    bins: int = 10,
    seed: int = 0,
    batch_size: int = 64,
) -> list[dict[str, float]]:
    """The classifier's accuracy on `clean` samples (model inputs: [-1, 1] pixels or scaled latents) noised to
    x_t, for t in `bins` equal ranges of [0, T): every sample once per range, at a t drawn in it (seeded).

    Returns one `{"t_min", "t_max", "accuracy"}` per range, lowest noise first.
    """
    num_train_timesteps = noise_scheduler.config.num_train_timesteps
    edges = torch.linspace(0, num_train_timesteps, bins + 1).round().long().tolist()
    generator = torch.Generator().manual_seed(seed)
    device = next(classifier.parameters()).device
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        correct = 0
        for start in range(0, len(clean), batch_size):
            x0, y = clean[start : start + batch_size].to(device), labels[start : start + batch_size].to(device)
            t = torch.randint(low, high, (len(x0),), generator=generator).to(device)
            noise = torch.randn(x0.shape, generator=generator).to(device)
            logits = classifier(noise_scheduler.add_noise(x0.float(), noise, t), t).logits
            correct += int((logits.argmax(dim=1) == y).sum())
        rows.append({"t_min": low, "t_max": high - 1, "accuracy": round(correct / len(clean), 4)})
    return rows
