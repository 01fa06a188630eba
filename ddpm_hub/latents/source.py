"""VAE latents as training data (the `DataSource` seam of `ddpm_hub.training.seams`).

A batch holds each image's cached encoder statistics, `(B, F, M, C, h, w)`: F views (the image and, with flips,
the flipped image) and M moments (mean and std of an `AutoencoderKL`'s posterior, or the one latent of a
`VQModel`). `to_model_input` turns it into what the UNet trains on, on the device, inside the step: first the view
(the step's first random draw, as the pixel path's flip), then a fresh sample of the posterior, then the scaling.
`LatentImages` serves the encode-once cache from memory; `LatentMember` is the member of latent shards
(`shards.py`) that a stream (`ddpm_hub.data.stream.StreamedImages`) trains on instead of the images.
"""

from __future__ import annotations

from typing import Any

import torch

from ..data import collate_uint8
from ..data.identity import DataIdentity
from ..data.memory import InMemoryImages
from .cache import LatentStats, stack_moments
from .shards import LATENTS_MEMBER, read_sample_latents
from .vae import VAEInfo


class LatentBatchDataset(torch.utils.data.Dataset):
    """Batches of latent statistics (and class ids) by one indexing operation, like `ImageBatchDataset`."""

    def __init__(self, moments: torch.Tensor, labels: torch.Tensor | None):
        self.moments, self.labels = moments, labels

    def __len__(self) -> int:
        return len(self.moments)

    def __getitem__(self, index: int):
        batch = self.__getitems__([index])
        return (batch[0][0], batch[1][0]) if isinstance(batch, tuple) else batch[0]

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices)
        if self.labels is None:
            return self.moments[index]
        return self.moments[index], self.labels[index]


def sample_latents(
    moments: torch.Tensor, random_flip: bool, scaling_factor: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, F, M, C, h, w) statistics -> (B, C, h, w) scaled latents: pick a view, sample the posterior, scale.

    With `random_flip` each image's flipped view is taken with probability 1/2 (the first draw); an `AutoencoderKL`
    posterior N(mean, std^2) is then sampled (z = mean + std * eps), a `VQModel`'s latent taken as it is.
    """
    moments = moments.float()
    view = moments[:, 0]
    if random_flip:
        flip = torch.rand(moments.shape[0], device=moments.device, generator=generator) < 0.5
        view = torch.where(flip[:, None, None, None, None], moments[:, 1], view)
    if view.shape[1] == 2:
        mean, std = view[:, 0], view[:, 1]
        noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        latents = mean + std * noise
    else:
        latents = view[:, 0]
    return latents * scaling_factor


class LatentImages:
    """Training batches from cached latents; pixels are kept for FID references and the explorer.

    Args:
        pixels (`InMemoryImages`): the decoded training images (what was encoded; the FID references).
        stats (`LatentStats`): their cached encoder statistics, one row per image, in the same order.
        vae (`VAEInfo`): the autoencoder (its scaling factor and name).
        random_flip (`bool`): whether `stats` holds flipped views (then `to_model_input` may choose them).
    """

    def __init__(self, pixels: InMemoryImages, stats: LatentStats, vae: VAEInfo, random_flip: bool):
        self.pixels, images = pixels, pixels.images
        if len(stats) != len(images):
            raise ValueError(
                f"the latent cache has {len(stats)} rows for {len(images)} images; delete it to re-encode."
            )
        if random_flip and stats.mean.shape[1] < 2:
            raise ValueError("--random_flip needs the latents of the flipped images, which this cache does not hold.")
        self.images, self.vae = images, vae
        self.moments = stack_moments(stats)
        self.scaling_factor = vae.scaling_factor
        self.description = f"{images.source}, as latents of the VAE {vae.name}"
        self.num_skipped = images.num_skipped
        self.label_names = images.label_names
        self.num_classes = images.num_classes
        self.sample_shape = tuple(stats.mean.shape[2:])
        self.loader = None
        self._accelerator = None

    def __len__(self) -> int:
        return len(self.moments)

    def num_batches(self, batch_size: int, num_processes: int) -> int | None:
        return len(self) // (batch_size * num_processes)

    def make_loader(self, accelerator, batch_size: int, seed: int) -> None:
        loader = torch.utils.data.DataLoader(
            LatentBatchDataset(self.moments, self.images.labels),
            batch_size=batch_size,
            shuffle=True,  # the order is a function of (seed, epoch): the same as the pixel path's
            drop_last=True,
            collate_fn=collate_uint8,
            generator=torch.Generator().manual_seed(seed),
            pin_memory=torch.cuda.is_available(),
        )
        self.loader, self._accelerator = accelerator.prepare(loader), accelerator

    def epoch_batches(self, epoch: int, skip_batches: int):
        self.loader.set_epoch(epoch)
        if skip_batches:
            return self._accelerator.skip_first_batches(self.loader, skip_batches)
        return self.loader

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def to_model_input(self, samples: torch.Tensor, random_flip: bool) -> torch.Tensor:
        return sample_latents(samples, random_flip, self.scaling_factor)

    def reference_images(self, count: int | None) -> Any:
        """The training images' uint8 *pixels* (FID compares decoded samples with them), as the pixel source gives
        them: at most `count`, all when `None`."""
        return self.pixels.reference_images(count)

    def identity(self) -> DataIdentity:
        return self.pixels.identity()


class LatentMember:
    """The latents member of latent shards (`ddpm-hub prepare --vae_name_or_path`), which a stream trains on instead of
    the images: each sample's statistics (F, M, C, h, w), sampled into model input as `LatentImages` does; the images
    in the shards stay the FID references.

    Args:
        vae (`VAEInfo`): the shards' autoencoder (its scaling factor, possibly overridden, and name).
        latent_shape (`tuple[int, int, int]`): (C, h, w) of one latent, from the manifest.
        column (`str`, defaults to `LATENTS_MEMBER`): the member's name after the sample's key.
    """

    def __init__(self, vae: VAEInfo, latent_shape: tuple[int, int, int], column: str = LATENTS_MEMBER):
        self.vae, self.scaling_factor, self.column = vae, vae.scaling_factor, column
        self.sample_shape = tuple(latent_shape)
        self.description = f"as latents of the VAE {vae.name}"

    def decode(self, payload: bytes) -> torch.Tensor:
        return read_sample_latents(payload)

    def to_model_input(self, samples: torch.Tensor, random_flip: bool) -> torch.Tensor:
        return sample_latents(samples, random_flip, self.scaling_factor)
