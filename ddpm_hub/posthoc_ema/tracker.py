"""`PostHocEMA`: power-function EMAs of a model's parameters tracked during training, and their snapshots.

A run part with five hooks, called by the trainer (main process does the work; the others hold nothing):

    tracker = PostHocEMA(PostHocEMAConfig.for_run((0.05, 0.10), snapshot_steps=None, max_train_steps=50_000))
    tracker.setup(unet, output_dir, accelerator.is_main_process)     # once the model is built
    tracker.load(checkpoint_dir, resumed_step)                        # when resuming, after setup
    tracker.after_optimizer_step(unet, step, finite)                  # after every optimizer step
    tracker.save(staging_checkpoint_dir)                              # inside each checkpoint
    tracker.hyperparameters()                                         # for training_config.json

Every `snapshot_steps` optimizer steps the averages are written to `RUN/ema-snapshots/` (`snapshots.py`); after
training, `ddpm-hub ema` combines them into the EMA of any sigma_rel (`reconstruct.py`).

A step skipped for a non-finite gradient (`finite` False) is a step at which the weights did not move (the optimizer
leaves them as they were, see `train_step.apply_gradients`): it is averaged like any other, with the unchanged weights.
The profiles thus stay the exact power functions of the global step that reconstruction assumes; leaving the averages
untouched instead (as the fixed-decay EMA does) would bend them away from the profiles solved for.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..files import NonFiniteWeightsError, all_finite, write_json
from .profiles import check_sigma_rel, power_ema_beta, sigma_rel_to_gamma
from .snapshots import SNAPSHOT_DIR, profile_key, set_aside_later, write_snapshot

logger = logging.getLogger("ddpm_hub")

STATE_WEIGHTS = "posthoc_ema.safetensors"
STATE_FILE = "posthoc_ema.json"
# Snapshots per run when --ema_snapshot_steps is not given: with sigma_rel 0.05 and 0.10 they reach about 0.013 to
# 0.275 at the last step (docs/training.md#post-hoc-ema has the table).
SNAPSHOTS_PER_RUN = 32


@dataclass(frozen=True)
class PostHocEMAConfig:
    """What to track: the profiles' widths and how often to keep them.

    Args:
        sigma_rels (`tuple[float, ...]`, defaults to `(0.05, 0.10)`): relative standard deviations of the tracked
            power-function EMAs, as in EDM2. What they reach after training depends on the number of snapshots:
            0.05 and 0.10 reach 0.036 to 0.147 from 4 snapshots, 0.013 to 0.275 from 32.
        snapshot_steps (`int`, defaults to 1000): write a snapshot every this many optimizer steps (`for_run`
            defaults to a 32nd of the run). Each costs 2 bytes x parameters x profiles on disk.
        last_step (`int`, *optional*): the run's last optimizer step, which gets a snapshot too, so that its own
            EMAs can be reconstructed at the step of its exported pipeline.
    """

    sigma_rels: tuple[float, ...] = (0.05, 0.10)
    snapshot_steps: int = 1000
    last_step: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "sigma_rels", tuple(float(s) for s in self.sigma_rels))
        if not self.sigma_rels:
            raise ValueError("--ema_sigma_rels needs at least one value, e.g. 0.05,0.10.")
        for sigma_rel in self.sigma_rels:
            check_sigma_rel(sigma_rel, "--ema_sigma_rels value")
        if len(set(self.sigma_rels)) != len(self.sigma_rels):
            raise ValueError(f"--ema_sigma_rels {list(self.sigma_rels)} lists a value twice.")
        if self.snapshot_steps < 1:
            raise ValueError(f"--ema_snapshot_steps must be positive, got {self.snapshot_steps}.")

    @classmethod
    def for_run(cls, sigma_rels: tuple[float, ...], snapshot_steps: int | None, max_train_steps: int):
        """The config of a run of `max_train_steps`: `snapshot_steps` by default a `SNAPSHOTS_PER_RUN`th of it, and a
        snapshot at its last step."""
        return cls(sigma_rels, snapshot_steps or max(1, max_train_steps // SNAPSHOTS_PER_RUN), max_train_steps)

    @property
    def gammas(self) -> tuple[float, ...]:
        return tuple(sigma_rel_to_gamma(s) for s in self.sigma_rels)


def parse_sigma_rels(text: str) -> tuple[float, ...]:
    """`--ema_sigma_rels 0.05,0.10` -> (0.05, 0.1); a one-line `ValueError` for anything else."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--ema_sigma_rels {text!r} is not a list of numbers such as 0.05,0.10.") from None
    PostHocEMAConfig(values)  # checks each value
    return values


class PostHocEMA:
    """K power-function EMAs of a model's parameters, in float32 on the model's device, and their snapshots.

    Args:
        config (`PostHocEMAConfig`, *optional*): the sigma_rels and the snapshot interval (default: 0.05, 0.10
            every 1000 steps).
    """

    def __init__(self, config: PostHocEMAConfig | None = None):
        self.config = config or PostHocEMAConfig()
        self.gammas = self.config.gammas
        self.step = 0  # optimizer steps averaged so far
        self.profiles: list[dict[str, torch.Tensor]] = []  # one {parameter name: average} per sigma_rel
        self.output_dir: Path | None = None
        self.unet_config: dict[str, Any] | None = None
        self.num_parameters = 0
        self.active = False
        self._branch_checked = False

    # ---- the trainer's hooks ------------------------------------------------------------------------------

    def setup(self, model: torch.nn.Module, output_dir: Path, is_main_process: bool) -> None:
        """Start tracking `model` (main process only: the others never write snapshots) and log the disk cost."""
        self.output_dir, self.active = Path(output_dir), is_main_process
        self.num_parameters = sum(p.numel() for p in model.parameters())
        if not self.active:
            return
        self.profiles = [
            {name: p.detach().float().clone() for name, p in model.named_parameters()} for _ in self.config.sigma_rels
        ]
        config = getattr(model, "config", None)
        self.unet_config = json.loads(json.dumps(dict(config), default=str)) if config is not None else None
        logger.info(
            "Post-hoc EMA: sigma_rel %s (gamma %s), a snapshot every %d steps in %s, %.1f MB each.",
            ", ".join(f"{s:g}" for s in self.config.sigma_rels), ", ".join(f"{g:.2f}" for g in self.gammas),
            self.config.snapshot_steps, self.output_dir / SNAPSHOT_DIR, self.snapshot_bytes() / 1e6,
        )  # fmt: skip

    @torch.no_grad()
    def after_optimizer_step(self, model: torch.nn.Module, step: int, finite: bool | torch.Tensor = True) -> None:
        """Average in the weights of optimizer step `step` (1-based); write a snapshot every `snapshot_steps` steps
        and at the run's last step.

        `finite` is accepted for the trainer's uniform hook and deliberately not used: see the module docstring.
        """
        if not self.active:
            return
        if step != self.step + 1:
            raise RuntimeError(
                f"post-hoc EMA: got optimizer step {step} after step {self.step}; every step must be averaged, and a "
                "resumed run must call load() first."
            )
        if not self._branch_checked:  # a fresh run in a folder with an earlier run's snapshots: not mixed in
            set_aside_later(self.output_dir, self.step)
            self._branch_checked = True
        self.update(model.named_parameters(), step)
        if step % self.config.snapshot_steps == 0 or step == self.config.last_step:
            self.write_snapshot(self.output_dir, step)

    def save(self, checkpoint_dir: Path) -> None:
        """The averages (float32) and the step into `checkpoint_dir` (plain files; the caller renames the folder)."""
        if not self.active:
            return
        from safetensors.torch import save_file

        if not all_finite(t for profile in self.profiles for t in profile.values()):
            raise NonFiniteWeightsError(
                f"the post-hoc EMA at step {self.step} holds NaN or infinity (training diverged); not saved."
            )
        weights, counters = self.state_dict()
        save_file(weights, str(Path(checkpoint_dir) / STATE_WEIGHTS))
        write_json(Path(checkpoint_dir) / STATE_FILE, counters)

    def load(self, checkpoint_dir: Path, resumed_step: int) -> None:
        """Take up the averages of a checkpoint, and set aside snapshots later than it (an abandoned branch)."""
        if not self.active:
            return
        from safetensors.torch import load_file

        checkpoint_dir = Path(checkpoint_dir)
        if not (checkpoint_dir / STATE_WEIGHTS).is_file() or not (checkpoint_dir / STATE_FILE).is_file():
            raise ValueError(
                f"{checkpoint_dir} holds no post-hoc EMA ({STATE_WEIGHTS}): its run was trained without "
                "--post_hoc_ema, whose averages must start at step 1; resume without --post_hoc_ema."
            )
        try:
            weights = load_file(str(checkpoint_dir / STATE_WEIGHTS))
            counters = json.loads((checkpoint_dir / STATE_FILE).read_text(encoding="utf-8"))
        except Exception as error:  # safetensors and JSON: nothing in them can run
            raise ValueError(f"{checkpoint_dir}: unreadable post-hoc EMA state ({type(error).__name__}).") from None
        self.load_state_dict(weights, counters)
        if self.step != resumed_step:
            raise ValueError(
                f"{checkpoint_dir / STATE_FILE} is at step {self.step}, its checkpoint at step {resumed_step}."
            )
        set_aside_later(self.output_dir, resumed_step)
        self._branch_checked = True

    def hyperparameters(self) -> dict[str, Any]:
        """The settings to record in training_config.json (and the trackers)."""
        return {
            "post_hoc_ema": True,
            "ema_sigma_rels": list(self.config.sigma_rels),
            "ema_gammas": [round(g, 4) for g in self.gammas],
            "ema_snapshot_steps": self.config.snapshot_steps,
            "ema_snapshot_megabytes": round(self.snapshot_bytes() / 1e6, 2),
        }

    # ---- the averages -------------------------------------------------------------------------------------

    @torch.no_grad()
    def update(self, named_parameters, step: int) -> None:
        """theta_hat <- beta_t theta_hat + (1 - beta_t) theta, beta_t = (1 - 1/t)^(gamma + 1), for each profile."""
        parameters = [p.detach().float() for _, p in named_parameters]
        for gamma, profile in zip(self.gammas, self.profiles):
            torch._foreach_lerp_(list(profile.values()), parameters, 1.0 - power_ema_beta(step, gamma))
        self.step = step

    def write_snapshot(self, run_dir: Path, step: int) -> Path:
        """The averages of `step` in 16 bits, atomically, as `RUN/ema-snapshots/step-<step>.safetensors`."""
        return write_snapshot(run_dir, step, self.profiles, self.config.sigma_rels, self.gammas, self.unet_config)

    def snapshot_bytes(self) -> int:
        """The size of one snapshot's tensors: 2 bytes per parameter per profile (the header adds a few kB)."""
        return 2 * len(self.config.sigma_rels) * self.num_parameters

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(float32 averages keyed `profile<k>/<name>`, counters and settings as JSON values): an exact resume."""
        weights = {
            profile_key(index, name): tensor.contiguous()
            for index, profile in enumerate(self.profiles)
            for name, tensor in profile.items()
        }
        counters = dict(
            step=self.step, sigma_rels=list(self.config.sigma_rels), snapshot_steps=self.config.snapshot_steps
        )
        return weights, counters

    def load_state_dict(self, weights: dict[str, torch.Tensor], counters: dict[str, Any]) -> None:
        """Restore `state_dict()`'s output; the sigma_rels must be this tracker's, the parameters its model's."""
        stored = tuple(float(s) for s in counters["sigma_rels"])
        if stored != self.config.sigma_rels:
            raise ValueError(
                f"the checkpoint tracked post-hoc EMAs of sigma_rel {list(stored)}, this run asks for "
                f"{list(self.config.sigma_rels)}; resume with --ema_sigma_rels {','.join(f'{s:g}' for s in stored)}."
            )
        for index, profile in enumerate(self.profiles):
            for name, tensor in profile.items():
                key = profile_key(index, name)
                if key not in weights or weights[key].shape != tensor.shape:
                    raise ValueError(f"the checkpoint's post-hoc EMA does not match the model (at {key}).")
                tensor.copy_(weights[key])
        self.step = int(counters["step"])
