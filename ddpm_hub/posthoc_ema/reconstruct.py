"""The EMA of any sigma_rel at a snapshot step, combined from a run's snapshots (Karras et al. 2024, algorithm 3).

    reconstructor = Reconstructor("runs/emoji")                 # the latest snapshot step
    weights = reconstructor.weights(reconstructor.plan(0.07))  # {parameter name: float32 tensor}

Only snapshots up to the target step take part: a later snapshot also averages weights from after it, which no
EMA at the target step contains. The coefficients come from `profiles.ProfileBasis`; a sigma_rel whose profile the
stored ones cannot fit within `MAX_PROFILE_ERROR` is refused with the range they do reach.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .profiles import MAX_PROFILE_ERROR, ProfileBasis, check_sigma_rel, sigma_rel_to_gamma
from .snapshots import SNAPSHOT_DIR, Snapshot, list_snapshots, profile_key

logger = logging.getLogger("ddpm_hub")

# Coefficients this large (L2 norm) amplify the snapshots' 16-bit rounding (relative 2^-11) about as many times.
LARGE_COEFFICIENTS = 25.0


@dataclass(frozen=True)
class Plan:
    """How to build the EMA of `sigma_rel` at `step`: a coefficient for each (snapshot, profile index)."""

    sigma_rel: float
    gamma: float
    step: int
    terms: list[tuple[Snapshot, int, float]]
    profile_error: float

    @property
    def coefficient_norm(self) -> float:
        return math.sqrt(sum(c * c for *_, c in self.terms))


class Reconstructor:
    """A run's snapshots up to one step, ready to be combined into the EMA of any sigma_rel they reach.

    Args:
        run_dir (`str` or `os.PathLike`): the training run's folder (its `ema-snapshots/`).
        step (`int`, *optional*): a step that has a snapshot; defaults to the latest.

    Raises a one-line `ValueError` when the run has no snapshots or `step` has none.
    """

    def __init__(self, run_dir: str | os.PathLike, step: int | None = None):
        self.run_dir = Path(run_dir)
        snapshots = list_snapshots(self.run_dir)
        if not snapshots:
            raise ValueError(
                f"{run_dir} has no post-hoc EMA snapshots ({SNAPSHOT_DIR}/step-*.safetensors): train it with "
                "--post_hoc_ema to write them."
            )
        steps = [snapshot.step for snapshot in snapshots]
        if step is None:
            step = steps[-1]
        elif step not in steps:
            shown = ", ".join(map(str, steps[:8])) + (f", ... {steps[-1]}" if len(steps) > 8 else "")
            raise ValueError(f"--step {step} has no snapshot in {run_dir}; the steps with snapshots are {shown}.")
        self.step = step
        self.snapshots = [snapshot for snapshot in snapshots if snapshot.step <= step]
        self.slots = [(snapshot, k) for snapshot in self.snapshots for k in range(len(snapshot.gammas))]
        self.basis = ProfileBasis([s.step for s, _ in self.slots], [s.gammas[k] for s, k in self.slots])

    @property
    def unet_config(self) -> dict | None:
        return self.snapshots[-1].unet_config

    def describe(self) -> str:
        """'sigma_rel 0.05, 0.1 in 12 snapshots from step 250 to 3000' (the stored profiles)."""
        stored = sorted({s for snapshot in self.snapshots for s in snapshot.sigma_rels})
        first, last = self.snapshots[0].step, self.snapshots[-1].step
        return (
            f"sigma_rel {', '.join(f'{s:g}' for s in stored)} in {len(self.snapshots)} snapshot"
            + ("s" if len(self.snapshots) > 1 else "")
            + (f" from step {first} to {last}" if first != last else f" at step {last}")
        )

    def reachable_range(self) -> tuple[float, float] | None:
        return self.basis.reachable_range(self.step)

    def plan(self, sigma_rel: float) -> Plan:
        """The coefficients for `sigma_rel`; a one-line `ValueError`, naming the reachable range, if it is too far."""
        check_sigma_rel(sigma_rel, "--sigma_rel")
        gamma = sigma_rel_to_gamma(sigma_rel)
        solution = self.basis.solve(self.step, gamma)
        if solution.profile_error > MAX_PROFILE_ERROR:
            raise ValueError(self.unreachable_message(sigma_rel, solution.profile_error))
        terms = [(snapshot, k, float(c)) for (snapshot, k), c in zip(self.slots, solution.coefficients)]
        return Plan(sigma_rel, gamma, self.step, terms, solution.profile_error)

    def unreachable_message(self, sigma_rel: float, error: float) -> str:
        reach = self.reachable_range()
        span = f"they reach sigma_rel {reach[0]:.3f} to {reach[1]:.3f}" if reach else "they reach none"
        return (
            f"sigma_rel {sigma_rel:g} cannot be reconstructed at step {self.step} from the stored profiles "
            f"({self.describe()}; the best combination misses its profile by {error:.0%}): {span} within "
            f"{MAX_PROFILE_ERROR:.0%}. Track a sigma_rel nearer to it (--ema_sigma_rels) or snapshot more often."
        )

    @torch.no_grad()
    def weights(self, plan: Plan) -> dict[str, torch.Tensor]:
        """sum_i x_i theta_hat_i over the plan's terms: {parameter name: float32 tensor} on the CPU.

        One snapshot file is open at a time; its tensors are read one by one (memory: the result plus one tensor).
        """
        from safetensors import safe_open

        if plan.coefficient_norm > LARGE_COEFFICIENTS:
            logger.warning(
                "sigma_rel %g combines the snapshots with large coefficients (norm %.0f), which amplify their 16-bit "
                "rounding as much; a tracked sigma_rel nearer to it (--ema_sigma_rels) would need smaller ones.",
                plan.sigma_rel, plan.coefficient_norm,
            )  # fmt: skip
        result: dict[str, torch.Tensor] = {}
        names: list[str] | None = None
        by_snapshot: dict[Path, list[tuple[int, float]]] = {}
        for snapshot, k, coefficient in plan.terms:
            by_snapshot.setdefault(snapshot.path, []).append((k, coefficient))
        for path, terms in by_snapshot.items():
            with safe_open(str(path), framework="pt") as handle:
                for k, coefficient in terms:
                    prefix = profile_key(k, "")
                    keys = sorted(key for key in handle.keys() if key.startswith(prefix))
                    own = [key[len(prefix) :] for key in keys]
                    if names is None:
                        names = own
                    elif own != names:
                        raise ValueError(f"{path} holds other parameters than the run's other snapshots.")
                    for key, name in zip(keys, own):
                        tensor = handle.get_tensor(key).to(torch.float32)
                        if name in result:
                            result[name].add_(tensor, alpha=coefficient)
                        else:
                            result[name] = tensor.mul_(coefficient)
        return result


def reconstruct(run_dir: str | os.PathLike, sigma_rel: float, step: int | None = None) -> dict[str, torch.Tensor]:
    """The EMA of `sigma_rel` at `step` (default: the latest snapshot) of the run in `run_dir`, as float32 weights."""
    reconstructor = Reconstructor(run_dir, step)
    return reconstructor.weights(reconstructor.plan(sigma_rel))
