"""Post-hoc EMA (Karras et al. 2024, EDM2): choose the EMA length after training, by measured quality.

During training, `PostHocEMA` tracks a few power-function EMAs and writes their snapshots (`tracker.py`,
`snapshots.py`); afterwards `ddpm-hub ema RUN --sigma_rel S` combines them into the EMA of any sigma_rel at any
snapshot step (`reconstruct.py`, with the least-squares solve of `profiles.py`), and `--sweep` scores a range of them
(`sweep.py`, `command.py`).
"""

from __future__ import annotations

from .profiles import MAX_PROFILE_ERROR, SIGMA_REL_MAX, gamma_to_sigma_rel, power_ema_beta, sigma_rel_to_gamma
from .reconstruct import Reconstructor, reconstruct
from .snapshots import SNAPSHOT_DIR, list_snapshots, set_aside_later
from .tracker import PostHocEMA, PostHocEMAConfig, parse_sigma_rels

__all__ = [
    "MAX_PROFILE_ERROR",
    "SIGMA_REL_MAX",
    "SNAPSHOT_DIR",
    "PostHocEMA",
    "PostHocEMAConfig",
    "Reconstructor",
    "gamma_to_sigma_rel",
    "list_snapshots",
    "parse_sigma_rels",
    "power_ema_beta",
    "reconstruct",
    "set_aside_later",
    "sigma_rel_to_gamma",
]
