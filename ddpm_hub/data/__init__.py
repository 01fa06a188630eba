"""Training data, at the bottom of the package (it imports nothing from training, latents, distillation, evaluation or
the explorer): decoded image sets (`images`) and the in-memory data source over them (`memory`), streamed WebDataset
shards and `datasets` streams (`stream`, `shards`), and what a data set is, as a cache key (`identity`). Shards are
written by `ddpm-hub prepare` (`ddpm_hub.prepare`).
"""

from .images import (  # noqa: F401  (private names that the tests read too)
    BUILTIN_DATASETS,
    IN_MEMORY_FRACTION,
    METADATA_FILES,
    TWEMOJI_SOURCE,
    BuiltinDataset,
    ImageBatchDataset,
    ImageSet,
    _describe,
    _preprocess_batch,
    augment,
    collate_uint8,
    count_ignored_files,
    draw_shapes,
    find_image_column,
    folder_files,
    image_extensions,
    is_image_file,
    load_images,
    load_source,
    logger,
    open_image,
    resize_and_crop,
    split_batch,
    to_model_mode,
    twemoji_dir,
)
from .shards import MANIFEST_NAME, read_manifest, resolve_shards
from .stream import ShardStream, StreamedImages, open_streamed_images

__all__ = [
    "BUILTIN_DATASETS",
    "IN_MEMORY_FRACTION",
    "MANIFEST_NAME",
    "METADATA_FILES",
    "TWEMOJI_SOURCE",
    "BuiltinDataset",
    "ImageBatchDataset",
    "ImageSet",
    "ShardStream",
    "StreamedImages",
    "augment",
    "collate_uint8",
    "count_ignored_files",
    "draw_shapes",
    "find_image_column",
    "folder_files",
    "image_extensions",
    "is_image_file",
    "load_images",
    "load_source",
    "logger",
    "open_image",
    "open_streamed_images",
    "read_manifest",
    "resize_and_crop",
    "resolve_shards",
    "split_batch",
    "to_model_mode",
    "twemoji_dir",
]
