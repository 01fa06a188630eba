"""The data source a run's data flags name: decoded images in memory, or a stream (`ddpm_hub.data`).

This is where training reads its `DataConfig`; the data package itself takes plain arguments.
"""

from __future__ import annotations

import os

from ..config import DataConfig
from ..data.memory import InMemoryImages
from ..data.shards import ShardSet
from ..data.stream import StreamedImages, StreamMember, default_num_workers, open_streamed_images
from .seams import DataSource


def open_source(
    data: DataConfig,
    *,
    resolution: int,
    channels: int,
    accelerator,
    seed: int,
    shards: ShardSet | None = None,
    member: StreamMember | None = None,
) -> DataSource:
    """The run's data: `InMemoryImages` decoded once (main process first; the others read its cache), or a stream
    (`--train_shards`, `--dataset_name --streaming`), whose samples are a `member` of the shards' samples if given."""
    if data.is_streamed:
        return open_stream(data, resolution, channels, accelerator, shards, member)
    return InMemoryImages.load(
        data.dataset_name,
        train_data_dir=data.train_data_dir,
        dataset_config_name=data.dataset_config_name,
        cache_dir=data.cache_dir,
        image_column=data.image_column,
        max_train_samples=data.max_train_samples,
        center_crop=data.center_crop,
        num_workers=data.dataloader_num_workers or 0,  # None: 0 for in-memory data
        resolution=resolution,
        channels=channels,
        seed=seed,
        num_proc=data.preprocessing_num_workers,
        class_conditional=data.class_conditional,
        class_column=data.class_column,
    )


def open_stream(
    data: DataConfig,
    resolution: int,
    channels: int,
    accelerator,
    shards: ShardSet | None = None,
    member: StreamMember | None = None,
) -> StreamedImages:
    """The streamed source of `--train_shards` (resolved already as `shards`, when the run did) or `--dataset_name
    --streaming`, with one decoding worker per spare core by default."""
    workers = data.dataloader_num_workers
    if workers is None:
        workers = default_num_workers(int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes)))
    return open_streamed_images(
        train_shards=shards or data.train_shards,
        dataset_name=data.dataset_name,
        dataset_config_name=data.dataset_config_name,
        image_column=data.image_column,
        class_column=data.class_column,
        class_conditional=data.class_conditional,
        cache_dir=data.cache_dir,
        resolution=resolution,
        channels=channels,
        center_crop=data.center_crop,
        shuffle_buffer_size=data.shuffle_buffer_size,
        num_workers=workers,
        member=member,
        verify=data.verify_shards,
    )
