"""A classifier run: the `Trainer` training a `NoiseAwareClassifier` of a frozen diffusion model's x_t.

Everything a training run has comes from the `Trainer` unchanged (accelerate, mixed precision, EMA, checkpoints
with exact resume, SIGTERM, logging, the push, the output-folder rule with a classifier run's names: `folder.py`);
this subclass says only what differs:

- the model is the classifier (`new_model`), its step the forward process of the diffusion model's schedule and
  cross-entropy (`ClassifierStep`); the schedule comes from the plan of `--pretrained_model_name_or_path`, a latent
  model's VAE from the `LatentSpace` part (the training images encoded once and cached, as for a latent run);
- a seeded share of the images is held out (`open_default`) to measure the accuracy by noise level at the end;
- previews are guided samples of the frozen diffusion model, one row per class; the export is the classifier's
  folder (`config.json`, `diffusion_pytorch_model.safetensors`), with its own card and push snapshot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..assembly import PipelineParts
from ..classifier import NoiseAwareClassifier, new_classifier
from ..data.images import ImageBatchDataset, ImageSet, augment
from ..data.memory import InMemoryImages
from ..errors import SetupError, reported_as_setup_errors
from ..export import ema_weights
from ..files import writing
from ..sampling import sample_batch
from ..training import Trainer, record_metrics
from ..training import components as training_components
from .card import CLASSIFIER_FILES, snapshot_classifier, write_classifier_card
from .config import ClassifierConfig
from .folder import check_output_dir
from .step import accuracy_by_noise_level, make_classifier_step

logger = logging.getLogger("ddpm_hub")


def split_images(images: ImageSet, count: int, seed: int) -> tuple[ImageSet, ImageSet]:
    """(kept, held out): `count` images chosen at random (seeded), each part in the set's own order."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    held, kept = order[:count].sort().values, order[count:].sort().values

    def take(indices: torch.Tensor) -> ImageSet:
        pixels = images.pixels
        pixels = pixels[indices] if torch.is_tensor(pixels) else pixels.select(indices.tolist())
        labels = images.labels[indices] if images.labels is not None else None
        return dataclasses.replace(images, pixels=pixels, labels=labels, num_skipped=0)

    return dataclasses.replace(take(kept), num_skipped=images.num_skipped), take(held)


class ClassifierTrainer(Trainer):
    """Trains a noise-aware classifier for the diffusion model of `model_config.pretrained_model_name_or_path`.

    Args:
        classifier_config (`ClassifierConfig`): the classifier's size, its held-out images, the preview scale.
        model_config, data_config, run, hub: training's configs (the model one names the diffusion model and, for a
            latent model, its `vae/`).
        diffusion_label_names (`list[str]`, *optional*): a class-conditional diffusion model's classes, which the
            data's must be.
        shards, parts: as for the `Trainer` (`LatentSpace` for a latent model).
    """

    def __init__(
        self,
        classifier_config: ClassifierConfig,
        model_config,
        data_config,
        run,
        hub,
        *,
        diffusion_label_names: list[str] | None = None,
        shards=None,
        parts=(),
    ):
        super().__init__(
            model_config, data_config, run, hub, step_factory=make_classifier_step, shards=shards, parts=parts
        )
        self.classifier_config, self.diffusion_label_names = classifier_config, diffusion_label_names
        self.held_out: ImageSet | None = None
        self.diffusion_unet = None  # loaded at the first preview

    def check(self, cleanup: contextlib.ExitStack) -> None:
        with reported_as_setup_errors():
            check_output_dir(self.run_config)  # the classifier's rule first; then training's, which it implies
        super().check(cleanup)
        source = self.classifier_config.pretrained_model_name_or_path
        self.plan = dataclasses.replace(self.plan, description=f"a noise-aware classifier of {source}")

    # ---- data and model ---------------------------------------------------------------------------------------

    def open_default(self, *, channels: int, member=None):
        """The labelled training images, less the held-out ones (before a latent run encodes them)."""
        source = super().open_default(channels=channels, member=member)
        config = self.classifier_config
        if config.validation_data_dir is not None:
            self.held_out = self.validation_folder(config.validation_data_dir, channels, source.label_names)
        elif isinstance(source, InMemoryImages) and config.validation_images:
            if config.validation_images >= len(source):
                raise ValueError(
                    f"--validation_images {config.validation_images} leaves no training image of the {len(source)}; "
                    "lower it."
                )
            kept, self.held_out = split_images(source.images, config.validation_images, self.run_config.seed)
            source = InMemoryImages(kept, num_workers=source.num_workers)
        elif config.validation_images:
            logger.warning(
                "%s is streamed, so no images are held out of it: pass --validation_data_dir for the accuracy by "
                "noise level.", source.description
            )  # fmt: skip
        return source

    def validation_folder(self, folder: str, channels: int, label_names: list[str] | None) -> ImageSet:
        data = self.configs.data
        images = InMemoryImages.load(
            None, train_data_dir=folder, cache_dir=data.cache_dir, center_crop=data.center_crop,
            resolution=self.image_resolution, channels=channels, seed=self.run_config.seed, class_conditional=True,
        ).images  # fmt: skip
        if images.label_names != label_names:
            raise ValueError(
                f"--validation_data_dir {folder!r} has the classes {images.label_names}, the training data "
                f"{label_names}; they must be the same."
            )
        return images

    def load_data(self):
        data = super().load_data()
        if data.num_classes < 2:
            raise SetupError(
                f"{data.description} holds one class ({data.label_names}); a classifier needs labelled images of at "
                "least two: class sub-folders with --train_data_dir, --class_column NAME, or twemoji's categories."
            )
        if self.diffusion_label_names is not None and data.label_names != self.diffusion_label_names:
            raise SetupError(
                f"the diffusion model is class-conditional with the classes {self.diffusion_label_names}, the data "
                f"has {data.label_names}; a classifier guiding it must know the model's classes."
            )
        return data

    def new_model(self) -> NoiseAwareClassifier:
        config = self.classifier_config
        return new_classifier(
            self.data.sample_shape,
            self.plan.scheduler_config,
            self.data.label_names,
            latent_scaling_factor=self.frozen_parts().latent_scaling_factor,
            width=config.classifier_width,
            layers_per_block=config.classifier_layers_per_block,
            attention_head_dim=config.classifier_attention_head_dim,
            dropout=config.classifier_dropout,
            diffusion_model=config.pretrained_model_name_or_path,
        )

    def make_publisher(self):
        return training_components.make_publisher(self.configs.hub, self.output_dir, snapshot=snapshot_classifier)

    # ---- the frozen diffusion model: previews ------------------------------------------------------------------

    def frozen_parts(self) -> PipelineParts:
        """The diffusion model the classifier guides: its UNet (once loaded), schedule, classes, and what the parts
        add (a latent model's VAE and scaling factor)."""
        parts = PipelineParts(self.diffusion_unet, self.plan.noise_scheduler(), self.diffusion_label_names)
        for part in self.parts:
            parts = part.pipeline_parts(parts)
        return parts

    def pipeline_parts(self) -> PipelineParts:
        if self.diffusion_unet is None:
            num_classes = len(self.diffusion_label_names or [])
            self.diffusion_unet = self.plan.build(num_classes, self.configs.data.cache_dir).eval()
            self.diffusion_unet.requires_grad_(False)
        return self.frozen_parts()

    @contextlib.contextmanager
    def sampling(self):
        """The frozen UNet (and the parts' VAE) on the accelerator while sampling, back on the CPU after."""
        unet = self.pipeline_parts().unet
        unet.to(self.accelerator.device)
        try:
            with super().sampling():
                yield
        finally:
            unet.to("cpu")

    @contextlib.contextmanager
    def classifier_in_eval(self):
        """The EMA weights of the classifier, in eval mode (dropout off), restored afterwards."""
        was_training = self.base_unet.training
        with ema_weights(self.ema, self.base_unet) as classifier:
            classifier.eval()
            try:
                yield classifier
            finally:
                classifier.train(was_training)

    def preview_grid(self):
        """Guided samples of the diffusion model: one row per class, seed + j in column j of every row."""
        run = self.run_config
        with self.classifier_in_eval() as classifier, self.accelerator.autocast(), self.sampling():
            pipeline = self.pipeline_parts().pipeline(run.preview_sampler)
            batch = sample_batch(
                pipeline, run.eval_batch_size, run.ddpm_num_inference_steps, run.seed,
                classifier=classifier, classifier_scale=self.classifier_config.classifier_scale,
            )  # fmt: skip
        return batch.grid()

    # ---- export, metrics, card ---------------------------------------------------------------------------------

    def export(self, folder: Path) -> None:
        """The classifier's EMA weights as a model folder (`from_pretrained(folder)`), written whole or not at all."""
        folder.mkdir(parents=True, exist_ok=True)
        with ema_weights(self.ema, self.base_unet) as classifier:
            staging = Path(tempfile.mkdtemp(prefix=".classifier.", suffix=".tmp", dir=folder))
            with writing("the classifier", folder, staging=staging):
                classifier.save_pretrained(staging, safe_serialization=True)
                for name in CLASSIFIER_FILES[:2]:  # the weights before config.json: a folder with it is complete
                    os.replace(staging / name, folder / name)
            shutil.rmtree(staging, ignore_errors=True)

    def held_out_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The held-out images as the classifier sees them (pixels in [-1, 1], or a latent model's latents)."""
        pixels, labels = ImageBatchDataset(self.held_out).__getitems__(list(range(len(self.held_out))))
        clean = augment(pixels.to(self.accelerator.device), False)
        if self.frozen_parts().vae is None:
            return clean, labels
        with super().sampling():  # the VAE on the accelerator; the frozen UNet stays where it is
            return self.pipeline_parts().pipeline().encode_images(clean), labels

    def final_metrics(self) -> dict[str, Any]:
        metrics = super().final_metrics()
        if not self.held_out:
            return metrics
        clean, labels = self.held_out_inputs()
        with self.classifier_in_eval() as classifier, self.accelerator.autocast():
            rows = accuracy_by_noise_level(
                classifier, clean, labels, self.noise_scheduler, bins=self.classifier_config.accuracy_bins,
                seed=self.run_config.seed, batch_size=self.run_config.eval_batch_size,
            )  # fmt: skip
        record_metrics(
            self.accelerator, self.output_dir, self.state.step,
            {f"accuracy_t{row['t_min']}-{row['t_max']}": row["accuracy"] for row in rows},
        )  # fmt: skip
        mean = sum(row["accuracy"] for row in rows) / len(rows)
        return {**metrics, "validation_images": len(clean), "mean_accuracy": round(mean, 4), "accuracy": rows}

    def hyperparameters(self) -> dict[str, Any]:
        config, classifier = self.classifier_config, self.base_unet.config
        return {
            **super().hyperparameters(),
            "diffusion_model": config.pretrained_model_name_or_path,
            "noise_schedule": classifier.noise_schedule,
            "sample_shape": "x".join(map(str, self.data.sample_shape)),
            "classifier_parameters": sum(p.numel() for p in self.base_unet.parameters()),
            "classifier_block_out_channels": list(classifier.block_out_channels),
            "classifier_down_block_types": list(classifier.down_block_types),
            "classifier_layers_per_block": classifier.layers_per_block,
            "classifier_attention_head_dim": classifier.attention_head_dim,
            "classifier_dropout": classifier.dropout,
            "preview_classifier_scale": config.classifier_scale,
        }

    def write_card(self, metrics: dict[str, Any]) -> None:
        repo_id = self.publisher.repo_id if self.publisher else None
        write_classifier_card(self.output_dir, self.hparams, metrics, repo_id)
