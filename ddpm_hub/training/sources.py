"""`InMemoryImages`, the first `DataSource`: decoded images held in memory (or memory-mapped), batched by index."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from accelerate import Accelerator

from ..config import DataConfig
from ..data import ImageBatchDataset, ImageSet, augment, collate_uint8, load_images


class _Pixels:
    """Slices of an `ImageSet` as uint8 tensors, whether it is held in memory or memory-mapped (a
    `datasets.Dataset`)."""

    def __init__(self, images: ImageSet):
        self.batches = ImageBatchDataset(ImageSet(pixels=images.pixels, num_skipped=0, source=images.source))

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: slice) -> torch.Tensor:
        return self.batches.__getitems__(list(range(*index.indices(len(self)))))


class InMemoryImages:
    """A map-style `DataSource` over an `ImageSet`: a seeded shuffle per epoch, full batches only, split by accelerate.

    Its position is (epoch, batch) alone: `state_dict()` is `{}`, and resuming skips the first batches of the epoch by
    index (accelerate's `skip_first_batches`), without loading them.

    Args:
        images (`ImageSet`): the decoded images (see `ddpm_hub.data.load_images`).
        num_workers (`int`, defaults to 0): DataLoader worker processes (`--dataloader_num_workers`).
    """

    def __init__(self, images: ImageSet, *, num_workers: int = 0):
        self.images, self.num_workers = images, num_workers
        self.description = images.source
        self.num_skipped = images.num_skipped
        self.label_names = images.label_names
        self.num_classes = images.num_classes
        first = images.pixels[:1] if torch.is_tensor(images.pixels) else images.pixels[:1]["pixels"]
        self.sample_shape = tuple(first.shape[1:])
        self.loader = self.accelerator = None

    @classmethod
    def load(cls, data: DataConfig, *, resolution: int, channels: int, seed: int) -> InMemoryImages:
        """Decode the images the data flags name, once (`load_images` caches them for other processes)."""
        images = load_images(
            data.dataset_name,
            dataset_config_name=data.dataset_config_name,
            train_data_dir=data.train_data_dir,
            image_column=data.image_column,
            cache_dir=data.cache_dir,
            resolution=resolution,
            channels=channels,
            center_crop=data.center_crop,
            max_train_samples=data.max_train_samples,
            seed=seed,
            num_proc=data.preprocessing_num_workers,
            class_conditional=data.class_conditional,
            class_column=data.class_column,
        )
        return cls(images, num_workers=data.dataloader_num_workers or 0)  # None: 0 for in-memory data

    def __len__(self) -> int:
        return len(self.images)

    def num_batches(self, batch_size: int, num_processes: int) -> int:
        return len(self.images) // (batch_size * num_processes)

    def make_loader(self, accelerator: Accelerator, batch_size: int, seed: int) -> None:
        loader = torch.utils.data.DataLoader(
            ImageBatchDataset(self.images),
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,  # equal, static batch shapes: no recompiles, even DDP shards
            collate_fn=collate_uint8,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(seed),  # iterators draw from it, not from the global RNG
            pin_memory=torch.cuda.is_available(),
        )
        # With accelerate's seedable sampler the shuffle order is a function of (seed, epoch).
        self.accelerator, self.loader = accelerator, accelerator.prepare(loader)

    def epoch_batches(self, epoch: int, skip_batches: int) -> Iterable[Any]:
        self.loader.set_epoch(epoch)
        if skip_batches:
            return self.accelerator.skip_first_batches(self.loader, skip_batches)
        return self.loader

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass  # the position is (epoch, batch), restored by `epoch_batches`

    def to_model_input(self, samples: torch.Tensor, random_flip: bool) -> torch.Tensor:
        return augment(samples, random_flip)

    def reference_images(self, count: int | None) -> Any:
        pixels = self.images.pixels
        if torch.is_tensor(pixels):
            return pixels[:count]
        view = _Pixels(self.images)
        return view if count is None or count >= len(view) else view[0:count]
