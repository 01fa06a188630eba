"""A diffusion model of two kinds of images whose denoiser is exact: a mixture of two Gaussians, in closed form.

The data: with probability `weights[k]`, an image is `means[k]` (a flat colour) plus N(0, spread^2) per pixel. For such
data the best denoiser is known (the posterior mean of x_0 given x_t under each component, weighted by the posterior
of the component), so a pipeline on this "UNet" samples the data exactly as well as its sampler allows, with no
training: a test of guidance then measures the guidance, not a model's training. As a class-conditional model
(`num_class_embeds` = 3) it predicts for one component, or for the mixture with the null class 2.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput

# Two colours in [-1, 1]: a red and a blue image; the first is the more common.
RED, BLUE = (0.8, -0.6, -0.6), (-0.6, -0.6, 0.8)
LABELS = ["red", "blue"]


class MixtureDenoiser(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        sample_size: int = 8,
        in_channels: int = 3,
        out_channels: int = 3,
        means: tuple = (RED, BLUE),
        weights: tuple = (0.7, 0.3),
        spread: float = 0.1,
        num_class_embeds: int | None = None,
        alphas_cumprod: tuple = (),
        prediction_type: str = "epsilon",
    ):
        super().__init__()
        self.register_buffer("alphas_cumprod_table", torch.tensor(alphas_cumprod, dtype=torch.float64))
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the model a device and dtype

    def forward(self, sample: torch.Tensor, timestep, class_labels=None) -> UNet2DOutput:
        x = sample.double()
        table = self.alphas_cumprod_table.to(x.device)
        t = torch.as_tensor(timestep, device=x.device).reshape(-1).expand(x.shape[0])
        alpha_prod = table[t.round().long()].view(-1, 1, 1, 1)
        alpha, sigma = alpha_prod.sqrt(), (1 - alpha_prod).sqrt()
        means = torch.tensor(self.config.means, dtype=torch.float64, device=x.device).view(-1, 3, 1, 1)
        spread2 = self.config.spread**2
        variance = alpha_prod * spread2 + sigma**2  # of x_t under one component, per pixel
        # log p(x_t | k) up to a constant shared by the components, and the posterior over k.
        log_likelihood = torch.stack(
            [-((x - alpha * mean) ** 2).flatten(1).sum(1) / (2 * variance.flatten()) for mean in means], dim=1
        )
        log_prior = torch.tensor(self.config.weights, dtype=torch.float64, device=x.device).log()
        posterior = torch.softmax(log_likelihood + log_prior, dim=1)
        if class_labels is not None and self.config.num_class_embeds is not None:
            one_hot = torch.nn.functional.one_hot(class_labels.clamp(max=len(means) - 1), len(means)).double()
            conditional = (class_labels < len(means)).view(-1, 1)
            posterior = torch.where(conditional, one_hot, posterior)
        # E[x_0 | x_t, k] = mean_k + alpha spread^2 / variance (x_t - alpha mean_k), then averaged over k.
        x0 = sum(
            posterior[:, k].view(-1, 1, 1, 1) * (mean + alpha * spread2 / variance * (x - alpha * mean))
            for k, mean in enumerate(means)
        )
        eps = (x - alpha * x0) / sigma
        if self.config.prediction_type == "v_prediction":
            output = alpha * eps - sigma * x0
        elif self.config.prediction_type == "sample":
            output = x0
        else:
            output = eps
        return UNet2DOutput(sample=output.to(sample.dtype))


def mixture_pipeline(prediction_type: str = "epsilon", conditional: bool = False, num_train_timesteps: int = 1000):
    """A `DDPMHubPipeline` sampling the two-colour mixture (8 px), unconditional or class-conditional."""
    from ddpm_hub import DDPMHubPipeline, make_noise_scheduler

    scheduler = make_noise_scheduler(num_train_timesteps=num_train_timesteps, prediction_type=prediction_type)
    unet = MixtureDenoiser(
        alphas_cumprod=tuple(scheduler.alphas_cumprod.tolist()),
        prediction_type=prediction_type,
        num_class_embeds=3 if conditional else None,
    )
    pipe = DDPMHubPipeline(unet=unet, scheduler=scheduler, label_names=LABELS if conditional else None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def colour_class(images: torch.Tensor) -> torch.Tensor:
    """The clean classifier of the test: the colour (0 red, 1 blue) nearer to each image's mean colour.

    Args:
        images: `(batch, 3, h, w)` in [-1, 1] (or [0, 1] with `unit=True` callers rescale first).
    """
    mean_colour = images.double().mean(dim=(2, 3))
    distances = torch.stack([(mean_colour - torch.tensor(c, dtype=torch.float64)).norm(dim=1) for c in (RED, BLUE)])
    return distances.argmin(dim=0)


def draw_mixture(count: int, generator: torch.Generator, size: int = 8, weights=(0.5, 0.5), spread: float = 0.1):
    """`count` images of the mixture (with the component shares `weights`) and their classes."""
    labels = torch.multinomial(torch.tensor(weights), count, replacement=True, generator=generator)
    means = torch.tensor([RED, BLUE])[labels].view(count, 3, 1, 1)
    return means + spread * torch.randn(count, 3, size, size, generator=generator), labels
