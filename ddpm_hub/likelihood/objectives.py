"""Training objectives with the variational bound (Nichol & Dhariwal 2021, Sec. 3.1 and 3.3).

    L_simple = E ||target - prediction||^2                   (DDPM eq. 14; `ddpm_hub.loss.diffusion_loss`)
    L_hybrid = L_simple + lambda L_vlb,  lambda = 0.001         (eq. 16), the mean's gradient stopped in L_vlb
    L_vlb    = E_{t ~ p_t} [L_t / p_t]                          (eq. 18, importance-sampled t)

L_vlb is estimated from one timestep per image, as T L_t (uniform t, 1 / p_t = T) or L_t / p_t, in bits per
dimension: the bound's terms without its constant prior term. In L_hybrid the bound only trains the variance: the
prediction (which sets the mean) enters it detached, so the mean learns from L_simple alone, as the paper does.
"""

from __future__ import annotations

from typing import Any

import torch

from ..loss import diffusion_loss
from ..pipeline_variance import split_variance
from .bound import vb_terms_bits
from .process import DiffusionProcess
from .timestep_sampler import LossSecondMomentSampler

LOSS_TYPES = ("simple", "hybrid", "vlb")  # the choices of --loss_type
HYBRID_VLB_WEIGHT = 0.001  # lambda of eq. 16


def bound_term(
    model_output: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    timesteps: torch.Tensor,
    process: DiffusionProcess,
    prediction_type: str,
    variance_type: str,
    *,
    stop_mean_gradient: bool,
    decoder: str = "discretized",
) -> torch.Tensor:
    """L_t per image in bits per dimension at the training `timesteps` (`process` is the whole training schedule).

    With `stop_mean_gradient` the prediction is detached, so that only the variance channels get a gradient (the
    hybrid objective). Computed in float32 whatever the autocast dtype.
    """
    model_output, x0, x_t = model_output.float(), x0.float(), x_t.float()
    if stop_mean_gradient:
        prediction, variance_values = split_variance(model_output, x_t.shape[1])
        frozen = prediction.detach()
        model_output = frozen if variance_values is None else torch.cat([frozen, variance_values], dim=1)
    return vb_terms_bits(process, timesteps, x0, x_t, model_output, prediction_type, variance_type, decoder=decoder)


def hybrid_loss(
    simple_loss: torch.Tensor, bound_terms: torch.Tensor, num_timesteps: int, vlb_weight: float = HYBRID_VLB_WEIGHT
) -> torch.Tensor:
    """L_simple + lambda L_vlb (eq. 16) with L_vlb estimated as T times the batch's mean L_t (uniform timesteps)."""
    return simple_loss + vlb_weight * num_timesteps * bound_terms.mean()


def vlb_loss(bound_terms: torch.Tensor, importance_weights: torch.Tensor, num_timesteps: int) -> torch.Tensor:
    """L_vlb (eq. 18) from importance-sampled timesteps: T times the batch's mean of L_t / (T p_t)."""
    return num_timesteps * (importance_weights * bound_terms).mean()


class BoundObjective:
    """The training loss of an Improved DDPM run: `hybrid` or `vlb` with a fixed or learned variance.

    Built from the flags before the run knows its schedule; `bind` gives it the training scheduler and device (the
    process tables, and for `vlb` the importance sampler of timesteps, whose state is `state_dict`).

    Args:
        loss_type (`str`): "hybrid" or "vlb".
        variance_type (`str`): one of `VARIANCE_TYPES`.
        vlb_weight (`float`, defaults to 0.001): lambda of the hybrid loss.
        decoder (`str`, defaults to `"discretized"`): L_0 of 8-bit pixels, or `"continuous"` (a latent run).
    """

    def __init__(
        self, loss_type: str, variance_type: str, vlb_weight: float = HYBRID_VLB_WEIGHT, decoder: str = "discretized"
    ):
        if loss_type not in LOSS_TYPES[1:]:
            raise ValueError(f"BoundObjective trains hybrid or vlb, not {loss_type!r}.")
        self.loss_type, self.variance_type = loss_type, variance_type
        self.vlb_weight, self.decoder = vlb_weight, decoder
        self.process: DiffusionProcess | None = None
        self.sampler: LossSecondMomentSampler | None = None

    def bind(self, noise_scheduler, device: torch.device) -> None:
        """The training schedule's tables on `device`, and the timestep sampler of `vlb`."""
        self.process = DiffusionProcess.from_scheduler(noise_scheduler, device=device)
        self.prediction_type = noise_scheduler.config.prediction_type
        if self.loss_type == "vlb":
            self.sampler = LossSecondMomentSampler(len(self.process), device=device)

    @property
    def num_timesteps(self) -> int:
        return len(self.process)

    def draw_timesteps(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(t, importance weights): uniform t (no weights) for hybrid, as `TrainStep` draws it; p_t for vlb."""
        if self.sampler is None:
            return torch.randint(0, self.num_timesteps, (batch_size,), device=device), None
        return self.sampler.sample(batch_size, device)

    def __call__(
        self,
        model_output: torch.Tensor,
        clean: torch.Tensor,
        noisy: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        importance_weights: torch.Tensor | None,
        noise_scheduler,
        snr_gamma: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, L_t per image, detached): eq. 16 for hybrid (the MSE of the prediction, Min-SNR weighted when
        `snr_gamma` is set, plus lambda T L_t), eq. 18 for vlb."""
        terms = bound_term(
            model_output, clean, noisy, timesteps, self.process, self.prediction_type, self.variance_type,
            stop_mean_gradient=self.loss_type == "hybrid", decoder=self.decoder,
        )  # fmt: skip
        if self.loss_type == "vlb":
            return vlb_loss(terms, importance_weights, self.num_timesteps), terms.detach()
        prediction = split_variance(model_output, clean.shape[1])[0]
        simple = diffusion_loss(prediction, clean, noise, timesteps, noise_scheduler, snr_gamma)
        return hybrid_loss(simple, terms, self.num_timesteps, self.vlb_weight), terms.detach()

    def record(self, timesteps: torch.Tensor, terms: torch.Tensor, accelerator=None) -> None:
        """Feed one micro-batch's L_t to the vlb sampler (gathered from every process, so they all draw alike)."""
        if self.sampler is None:
            return
        if accelerator is not None and accelerator.num_processes > 1:
            timesteps, terms = accelerator.gather(timesteps), accelerator.gather(terms)
        self.sampler.update(timesteps, terms)

    def state_dict(self) -> dict[str, Any]:
        return {"timestep_sampler": self.sampler.state_dict()} if self.sampler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the vlb sampler, once `bind` has built it (the Trainer resumes after building the step)."""
        if self.sampler is not None and "timestep_sampler" in state:
            self.sampler.load_state_dict(state["timestep_sampler"])
