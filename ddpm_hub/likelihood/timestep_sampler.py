"""Importance sampling of timesteps for the variational bound (Nichol & Dhariwal 2021, Sec. 3.3, eq. 18).

L_vlb = sum_t L_t is estimated from one timestep per image; drawn uniformly, the estimate's variance is dominated by
the few early timesteps where L_t is large. Drawing t with p_t proportional to sqrt(E[L_t^2]) and weighting L_t by
1 / (T p_t) keeps the estimate unbiased and makes it much less noisy. E[L_t^2] is the mean square of the last
`history` values of L_t seen at each t; until every t has that many, t is drawn uniformly ("loss-second-moment"
resampler of the paper's code, with a little of the uniform distribution mixed in).

Everything stays on the device (no host sync per step); the state is a JSON-able dict, so that a resumed run
draws the same timesteps as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch


class LossSecondMomentSampler:
    """p_t proportional to sqrt(mean of the last `history` L_t^2), mixed with `uniform_prob` of the uniform p_t = 1/T.

    Args:
        num_timesteps (`int`): T.
        history (`int`, defaults to 10): losses kept per timestep (the paper's 10).
        uniform_prob (`float`, defaults to 0.001): share of the uniform distribution in p (the paper's code).
        device (`torch.device`, *optional*): where the loss history lives.
    """

    def __init__(
        self, num_timesteps: int, history: int = 10, uniform_prob: float = 0.001, device: torch.device | None = None
    ):
        if num_timesteps < 1 or history < 1 or not 0 < uniform_prob <= 1:
            raise ValueError(
                f"LossSecondMomentSampler needs num_timesteps >= 1, history >= 1 and uniform_prob in (0, 1], got "
                f"{num_timesteps}, {history}, {uniform_prob}."
            )
        self.num_timesteps, self.history, self.uniform_prob = num_timesteps, history, uniform_prob
        self.losses = torch.zeros(num_timesteps, history, device=device)  # a ring buffer per timestep
        self.written = torch.zeros(num_timesteps, dtype=torch.long, device=device)  # losses ever recorded per t

    def probabilities(self) -> torch.Tensor:
        """p_t, (T,): uniform until every timestep has `history` losses."""
        uniform = torch.full_like(self.losses[:, 0], 1.0 / self.num_timesteps)
        root_mean_square = self.losses.pow(2).mean(dim=1).sqrt()
        total = root_mean_square.sum()
        learned = root_mean_square / total.clamp(min=torch.finfo(total.dtype).tiny)
        learned = learned * (1 - self.uniform_prob) + self.uniform_prob / self.num_timesteps
        ready = (self.written >= self.history).all() & (total > 0) & torch.isfinite(total)
        return torch.where(ready, learned, uniform)

    def sample(self, batch_size: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(timesteps, weights): t ~ p (torch's default generator on the device) and 1 / (T p_t) for each."""
        probabilities = self.probabilities().to(device)
        timesteps = torch.multinomial(probabilities, batch_size, replacement=True)
        return timesteps, 1.0 / (self.num_timesteps * probabilities[timesteps])

    @torch.no_grad()
    def update(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Record the per-image losses L_t of one batch (in batch order); non-finite ones are left out."""
        timesteps, losses = timesteps.to(self.written.device), losses.detach().float().to(self.losses.device)
        finite = torch.isfinite(losses)
        same = (timesteps[:, None] == timesteps[None, :]) & finite[:, None] & finite[None, :]
        rank = torch.tril(same, diagonal=-1).sum(dim=1)  # earlier entries of the batch at the same t
        later = torch.triu(same, diagonal=1).sum(dim=1)
        # Of several entries at one t only the last `history` matter, and they go to distinct slots of its ring.
        keep = finite & (later < self.history)
        slot = (self.written[timesteps] + rank) % self.history
        flat = torch.cat([self.losses.reshape(-1), self.losses.new_zeros(1)])
        dropped = flat.numel() - 1  # entries left out are written to a spare last element
        index = torch.where(keep, timesteps * self.history + slot, dropped)
        flat.scatter_(0, index, torch.where(keep, losses, 0.0))
        self.losses.copy_(flat[:-1].view_as(self.losses))
        self.written.index_add_(0, timesteps, finite.long())

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state as plain JSON types (float32 losses are exact as Python floats)."""
        return {
            "history": self.history,
            "uniform_prob": self.uniform_prob,
            "losses": self.losses.cpu().tolist(),
            "written": self.written.cpu().tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        losses = torch.tensor(state["losses"], dtype=torch.float32)
        if tuple(losses.shape) != (self.num_timesteps, self.history) or state["history"] != self.history:
            raise ValueError(
                f"The timestep sampler's state holds {tuple(losses.shape)} losses; this run needs "
                f"({self.num_timesteps}, {self.history})."
            )
        self.uniform_prob = float(state["uniform_prob"])
        self.losses.copy_(losses)
        self.written.copy_(torch.tensor(state["written"], dtype=torch.long))
