"""`ddpm-hub train-classifier`: a noise-aware classifier of a trained diffusion model's x_t, for classifier guidance.

- `step.py`: `ClassifierStep` (the Trainer's `Step`: the diffusion model's forward process, then cross-entropy) and
  `accuracy_by_noise_level`, the held-out accuracy in ranges of t.
- `trainer.py`: `ClassifierTrainer`, the `Trainer` with the classifier as its model (held-out images, guided
  previews, the classifier's export and metrics).
- `folder.py`: the output-folder rule of a classifier run (`OutputFolder` with its names).
- `card.py`: the classifier's model card and Hub snapshot; `config.py`: `ClassifierConfig`; `command.py`: `main`.

The classifier itself (`NoiseAwareClassifier`) is in `ddpm_hub.classifier`, the guidance in the shipped pipeline.
"""

from .command import main

__all__ = ["main"]
