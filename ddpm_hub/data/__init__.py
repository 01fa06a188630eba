"""Training data: decoded in-memory image sets (`images`), streamed WebDataset shards and `datasets` streams
(`stream`, `shards`), and `ddpm-hub prepare`, which writes shards (`prepare`).

`from ddpm_hub.data import X` keeps working for every name the single module `ddpm_hub/data.py` had.
"""

from .images import (  # noqa: F401  (private, but importable as before)
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
