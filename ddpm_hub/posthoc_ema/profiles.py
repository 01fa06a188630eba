"""The mathematics of post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models", arXiv:2312.02696, section 3 and appendix C), as small pure functions of numbers.

A power-function EMA of exponent gamma averages the training trajectory theta(tau), 0 <= tau <= t, with the profile

    p_{t,gamma}(tau) = (gamma + 1) tau^gamma / t^(gamma + 1)                                     (section 3.1)

whose width relative to t is sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3)))  (appendix C, eq. 123).
Tracked step by step it is theta_hat_t = beta_t theta_hat_{t-1} + (1 - beta_t) theta_t with
beta_t = (1 - 1/t)^(gamma + 1) (eq. 127, one optimizer step per unit of time). Snapshots of a few such EMAs taken
during training are averages of the same trajectory under known profiles, so the EMA of any other profile is, up to
the profiles' least-squares fit, a linear combination of them (appendix C, algorithm 3).

Time is counted in optimizer steps; step 1 is the first update (beta_1 = 0: the average starts at the first weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# gamma = 0 (a uniform average over the whole run) is the widest profile that does not weigh early training most.
SIGMA_REL_MAX = math.sqrt(1 / 12)
# A reconstruction whose profile misses the target's by more than this (relative L2 norm) is refused.
MAX_PROFILE_ERROR = 0.1


def gamma_to_sigma_rel(gamma: float) -> float:
    """The relative standard deviation of a power-function EMA profile (appendix C, eq. 123)."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent whose profile has relative standard deviation `sigma_rel` (eq. 126, algorithm 2).

    Squaring eq. 123 gives the cubic gamma^3 + 7 gamma^2 + (16 - s) gamma + (12 - s) = 0 with s = sigma_rel^-2;
    its largest real root is the exponent. `sigma_rel` must lie in (0, sqrt(1/12)], i.e. gamma >= 0.
    """
    check_sigma_rel(sigma_rel)
    s = sigma_rel**-2
    roots = np.roots([1.0, 7.0, 16.0 - s, 12.0 - s])
    return float(roots.real[np.abs(roots.imag) < 1e-9].max())


def check_sigma_rel(sigma_rel: float, name: str = "sigma_rel") -> None:
    """A one-line `ValueError` unless 0 < `sigma_rel` <= sqrt(1/12) (the uniform average, gamma = 0)."""
    if not 0 < sigma_rel <= SIGMA_REL_MAX + 1e-12:
        raise ValueError(
            f"{name} {sigma_rel} is outside (0, {SIGMA_REL_MAX:.4f}]: a power-function EMA is at most as wide as "
            "the uniform average of the whole run."
        )


def power_ema_beta(step: int, gamma: float) -> float:
    """beta_t = (1 - 1/t)^(gamma + 1), the decay of the power-function EMA at optimizer step t >= 1 (eq. 127)."""
    return (1.0 - 1.0 / step) ** (gamma + 1.0)


def profile_inner_product(t_a, gamma_a, t_b, gamma_b):
    """The integral of p_{t_a,gamma_a}(tau) p_{t_b,gamma_b}(tau) over tau (appendix C, eq. 151); broadcasts.

    Both profiles are non-zero up to min(t_a, t_b); integrating the product of the two powers there gives
    (gamma_a + 1)(gamma_b + 1) / ((gamma_a + gamma_b + 1) t_max) (t_min / t_max)^gamma_later, with gamma_later the
    exponent of the profile that ends at t_max (written with the ratio t_min / t_max <= 1, so nothing overflows).
    """
    t_a, gamma_a, t_b, gamma_b = (np.asarray(x, dtype=np.float64) for x in (t_a, gamma_a, t_b, gamma_b))
    t_min, t_max = np.minimum(t_a, t_b), np.maximum(t_a, t_b)
    gamma_later = np.where(t_a >= t_b, gamma_a, gamma_b)
    return (gamma_a + 1) * (gamma_b + 1) / ((gamma_a + gamma_b + 1) * t_max) * (t_min / t_max) ** gamma_later


@dataclass(frozen=True)
class Solution:
    """How to combine snapshots into the EMA of one target profile.

    Attributes:
        coefficients (`np.ndarray`): one weight per snapshot profile, summing to 1.
        profile_error (`float`): the L2 norm of (combined profile - target profile) relative to the target's norm.
    """

    coefficients: np.ndarray
    profile_error: float


class ProfileBasis:
    """The profiles of a set of snapshots, factorised once, to solve for many target profiles (algorithm 3).

    The combination x minimising the L2 distance between sum_i x_i p_i and the target p_r solves the normal
    equations A x = b, A_ij = <p_i, p_j>, b_i = <p_i, p_r> (eq. 151 gives both in closed form). A depends on the
    snapshots only, so its eigendecomposition is computed here once and every target costs one matrix-vector
    product. Nearly identical snapshot profiles make A ill-conditioned: eigenvalues below a relative machine-precision
    cutoff are dropped (the minimum-norm least-squares solution, as `numpy.linalg.lstsq` would give).

    Args:
        steps (`Sequence[int]`): the optimizer step of each snapshot profile.
        gammas (`Sequence[float]`): the exponent of each snapshot profile.
    """

    def __init__(self, steps, gammas):
        self.steps = np.asarray(steps, dtype=np.float64)
        self.gammas = np.asarray(gammas, dtype=np.float64)
        gram = profile_inner_product(self.steps[:, None], self.gammas[:, None], self.steps[None, :], self.gammas[None])
        eigenvalues, self.eigenvectors = np.linalg.eigh(gram)
        cutoff = eigenvalues.max() * np.finfo(np.float64).eps * len(eigenvalues)
        self.inverse_eigenvalues = np.where(eigenvalues > cutoff, 1.0 / np.maximum(eigenvalues, cutoff), 0.0)
        self.gram = gram

    def solve(self, step: int, gamma: float) -> Solution:
        """The combination of the snapshot profiles closest to p_{step,gamma}, normalised to sum to 1.

        Each profile integrates to 1, so the exact fit sums to 1; normalising the least-squares one keeps weights
        that never moved exactly where they are (a constant trajectory is reproduced exactly).
        """
        b = profile_inner_product(self.steps, self.gammas, step, gamma)
        x = self.eigenvectors @ (self.inverse_eigenvalues * (self.eigenvectors.T @ b))
        if not np.isfinite(x).all() or abs(x.sum()) < 1e-12:  # nothing stored overlaps the target
            return Solution(x, math.inf)
        x = x / x.sum()
        target_norm2 = (gamma + 1) ** 2 / ((2 * gamma + 1) * step)  # <p_r, p_r>
        residual2 = target_norm2 - 2 * x @ b + x @ self.gram @ x
        return Solution(x, math.sqrt(max(residual2, 0.0) / target_norm2))

    def reachable_range(self, step: int, max_error: float = MAX_PROFILE_ERROR) -> tuple[float, float] | None:
        """The interval of sigma_rel whose profiles at `step` fit within `max_error`, around the snapshots' own.

        Found by bisection on each side of the stored sigma_rels (the error grows as the target moves away from
        them); `None` if not even those fit (no snapshot at `step`).
        """
        stored = [gamma_to_sigma_rel(g) for g in np.unique(self.gammas)]

        def fits(sigma_rel: float) -> bool:
            return self.solve(step, sigma_rel_to_gamma(sigma_rel)).profile_error <= max_error

        inner = [s for s in stored if fits(s)]
        if not inner:
            return None
        return _edge(fits, min(inner), 1e-4), _edge(fits, max(inner), SIGMA_REL_MAX)


def _edge(fits, inside: float, outside: float, iterations: int = 12) -> float:
    """The last sigma_rel that `fits` between `inside` (fits) and `outside`, by bisection."""
    if fits(outside):
        return outside
    for _ in range(iterations):
        middle = (inside + outside) / 2
        inside, outside = (middle, outside) if fits(middle) else (inside, middle)
    return inside
