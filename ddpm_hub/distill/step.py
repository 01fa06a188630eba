"""One micro-batch of progressive distillation, the `Step` the Trainer runs in place of `TrainStep`.

Salimans & Ho 2022, Algorithm 2, lines 5-15 for one micro-batch; the numbers in the comments are the algorithm's.
As in `TrainStep`, the random draws (flip, eps, step index) run eagerly and in a fixed order, so that a compiled
and an eager run draw the same numbers and a resumed run continues exactly; the rest (forward process, the
teacher's two DDIM steps, the student, the loss) is one function that `--compile` compiles.

Epsilon teachers, in rounds whose students take at most `rounds.TRAJECTORY_STEPS` steps, are distilled on whole
trajectories instead (`trajectory_loss`): the student's N DDIM steps from pure noise z_T ~ N(0, I) must land where
the teacher's 2N steps from the same noise land (the mean square of the two samples), as Luhman & Luhman (2021)
distil a whole DDIM chain. Algorithm 2's local target fails there: at the first, pure-noise steps an epsilon
teacher's two steps differ from one by its own epsilon error, a noise-like function of noise that no student learns,
and learning the later steps instead moves the first ones (see docs/distillation.md, "Epsilon teachers"). The
chain costs N student passes with their gradients per image, which is why it is kept to few steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from accelerate import Accelerator

from .rounds import StepGrid
from .targets import Level, clipped_x_target, ddim_step, distillation_loss, mean_square, predicted_x0, x_target


def _take(level: Level, index: torch.Tensor) -> Level:
    # Per-image alpha and sigma, shaped to broadcast over (N, C, H, W).
    return Level(level.alpha[index].view(-1, 1, 1, 1), level.sigma[index].view(-1, 1, 1, 1))


def _step_index(batch: torch.Tensor, i: int) -> torch.Tensor:
    # Step i of the student's grid for every image of the batch.
    return torch.full((batch.shape[0],), i, dtype=torch.long, device=batch.device)


class DistillStep:
    """Student forward + backward against the frozen teacher's two DDIM steps.

    Args:
        student (`torch.nn.Module`): the (accelerate-prepared) student UNet, trained.
        teacher (`torch.nn.Module`): the teacher UNet; frozen here (eval mode, no gradients).
        grid (`StepGrid`): the student's DDIM steps and the teacher's middle levels (see `rounds.step_grid`).
        prediction_type (`str`): the parameterisation shared by teacher and student.
        accelerator (`Accelerator`): runs backward and the teacher's autocast.
        to_model_input (`Callable`): the data source's `to_model_input` (uint8 pixels -> [-1, 1], with flips).
        random_flip (`bool`, defaults to `False`): flip images left-right at random.
        clip (`float`, *optional*): clip the teacher's x_hat in its DDIM steps, as its DDIM sampler does.
        drop_labels (`Callable`, *optional*): class-conditional runs: labels -> labels with some set to the null class.
        trajectory (`bool`, defaults to `False`): match the teacher's whole 2N-step DDIM trajectory from pure noise
            instead of its two steps at a noised image (`trajectory_loss`; for epsilon teachers, few steps).
        compile_mode (`str`, *optional*): torch.compile mode for the step; `None` runs it eagerly.
        compile_backend (`str`, defaults to `"inductor"`).
    """

    def __init__(
        self,
        student: torch.nn.Module,
        teacher: torch.nn.Module,
        grid: StepGrid,
        prediction_type: str,
        accelerator: Accelerator,
        to_model_input: Callable[[torch.Tensor, bool], torch.Tensor],
        *,
        random_flip: bool = False,
        clip: float | None = None,
        drop_labels: Callable[[torch.Tensor], torch.Tensor] | None = None,
        trajectory: bool = False,
        compile_mode: str | None = None,
        compile_backend: str = "inductor",
    ):
        self.model, self.accelerator, self.grid = student, accelerator, grid.to(accelerator.device)
        # The teacher is frozen: eval mode (no dropout), no gradients, never handed to the optimizer or EMA.
        self.teacher = teacher.eval().requires_grad_(False).to(accelerator.device)
        self.prediction_type, self.clip, self.random_flip = prediction_type, clip, random_flip
        self.to_model_input, self.drop_labels, self.trajectory = to_model_input, drop_labels, trajectory
        self.loss = self.compute_loss
        self.cuda_graphs = False
        if compile_mode is not None:
            inductor = compile_backend == "inductor"
            self.loss = torch.compile(
                self.compute_loss, backend=compile_backend, mode=compile_mode if inductor else None
            )
            self.cuda_graphs = inductor and compile_mode in ("reduce-overhead", "max-autotune")

    def _predict(self, unet, sample, timesteps, class_labels):
        if class_labels is None:
            return unet(sample, timesteps).sample
        return unet(sample, timesteps, class_labels=class_labels).sample

    @torch.no_grad()
    def teacher_steps(self, z_t: torch.Tensor, index: torch.Tensor, class_labels):
        """Lines 9-10: two DDIM steps of the teacher, t -> t' -> t''; returns z_t'' and its first output at z_t."""
        grid = self.grid
        start, mid, end = _take(grid.start, index), _take(grid.mid, index), _take(grid.end, index)
        with self.accelerator.autocast():
            # 9. z_t' = alpha_t' x_eta(z_t) + sigma_t' eps_eta(z_t)
            first = self._predict(self.teacher, z_t, grid.timesteps[index], class_labels).float()
            z_mid = ddim_step(self.prediction_type, z_t, first, start, mid, self.clip)
            # 10. z_t'' = alpha_t'' x_eta(z_t') + sigma_t'' eps_eta(z_t')
            out = self._predict(self.teacher, z_mid, grid.mid_timesteps[index], class_labels).float()
            return ddim_step(self.prediction_type, z_mid, out, mid, end, self.clip), first

    @torch.no_grad()
    def teacher_target(self, z_t: torch.Tensor, index: torch.Tensor, class_labels) -> torch.Tensor:
        """Lines 8-11: two DDIM steps of the teacher, t -> t' -> t'', and the x target that one step must match."""
        start, end = _take(self.grid.start, index), _take(self.grid.end, index)
        z_end, first = self.teacher_steps(z_t, index, class_labels)
        # 11. x_tilde = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t), or, when the
        # student's sampler clips x_0 (as the teacher's does), the x_hat whose *clipped* step lands on z_t''.
        if self.clip is None:
            return x_target(z_t, z_end, start, end)
        reference = predicted_x0(self.prediction_type, z_t, first, start)
        return clipped_x_target(z_t, z_end, start, end, self.clip, reference)

    @torch.no_grad()
    def trajectory_target(self, noise: torch.Tensor, class_labels=None) -> torch.Tensor:
        """The teacher's 2N-step DDIM sample from the pure noise `noise` (what its pipeline gives at 2N steps)."""
        sample = noise
        for i in range(len(self.grid.timesteps)):
            sample, _ = self.teacher_steps(sample, _step_index(noise, i), class_labels)
        return sample

    def trajectory_loss(self, noise: torch.Tensor, class_labels=None) -> torch.Tensor:
        """The student's N DDIM steps from pure noise against the teacher's 2N from the same noise (mean square of
        the samples): the loss of epsilon teachers' rounds of few steps (see the module docstring)."""
        grid, target, sample = self.grid, self.trajectory_target(noise, class_labels), noise
        for i in range(len(grid.timesteps)):
            index = _step_index(noise, i)
            output = self._predict(self.model, sample, grid.timesteps[index], class_labels).float()
            sample = ddim_step(
                self.prediction_type, sample, output, _take(grid.start, index), _take(grid.end, index), self.clip
            )
        return mean_square(sample, target).mean()

    def compute_loss(
        self, x: torch.Tensor, noise: torch.Tensor, index: torch.Tensor, class_labels=None
    ) -> torch.Tensor:
        """The part that is compiled: lines 7-14 for a batch of images x, noise eps and student step indices."""
        if self.trajectory:
            loss = self.trajectory_loss(noise, class_labels)
            return loss * torch.where(torch.isfinite(loss), 1.0, float("nan"))
        start = _take(self.grid.start, index)
        # 7. z_t = alpha_t x + sigma_t eps
        z_t = start.alpha * x + start.sigma * noise
        target = self.teacher_target(z_t, index, class_labels)
        # 12-13. lambda_t = log(alpha_t^2 / sigma_t^2); L = max(exp(lambda_t), 1) ||x_tilde - x_theta(z_t)||^2
        output = self._predict(self.model, z_t, self.grid.timesteps[index], class_labels)
        loss = distillation_loss(self.prediction_type, z_t, output, target, start)
        # A non-finite loss makes every gradient NaN, so that the Trainer's gradient-norm guard skips the step.
        return loss * torch.where(torch.isfinite(loss), 1.0, float("nan"))

    def __call__(self, samples: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Forward and backward for a batch from the data source; returns the detached loss (never read here)."""
        # 5. x ~ D. Drawn eagerly and in this order (flip, eps, i), like TrainStep.
        x = self.to_model_input(samples, self.random_flip)
        noise = torch.randn_like(x)
        # 6. t = i / N, i ~ Cat[1 .. N]: one of the student's N DDIM steps, uniformly.
        index = torch.randint(0, len(self.grid.timesteps), (x.shape[0],), device=x.device)
        if class_labels is not None and self.drop_labels is not None:
            class_labels = self.drop_labels(class_labels)  # the student also learns the null class, for guidance
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        loss = self.loss(x, noise, index, class_labels)
        # 15. theta <- theta - gamma grad L (the optimizer step is the Trainer's)
        self.accelerator.backward(loss)
        return loss.detach()
