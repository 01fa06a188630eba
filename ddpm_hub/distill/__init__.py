"""Progressive distillation (Salimans & Ho 2022): `ddpm-hub distill TEACHER --output_dir OUT`.

- `targets.py`: the math (two teacher DDIM steps -> the student's x target, the truncated-SNR loss).
- `rounds.py`: the rounds' step counts, the DDIM grid each distils, and which teachers DDIM can run.
- `step.py`: `DistillStep`, the Trainer's `Step` for one micro-batch.
- `distiller.py`: `DistillRound` (a `Trainer` per round) and the sequence of rounds; `quality.py`: each round's scores.
- `latent.py`: `LatentDistillRound`, the round of a latent teacher (a `DistillRound` that is also a `LatentTrainer`).
- `config.py`: `DistillConfig`; `command.py`: `main(argv)`, the command's body.
"""

from .command import main

__all__ = ["main"]
