"""Loading training images: odd formats converted the way a viewer shows them, broken files skipped and counted."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import PIL.Image
import pytest
import torch
from odd_images import EXPECTED_CENTRE, make_odd_image_folder

from ddpm_hub.data import augment, load_images, to_model_mode


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
    return make_odd_image_folder(tmp_path_factory.mktemp("odd") / "images")


def test_odd_folder_is_decoded_with_broken_files_skipped(odd_folder, caplog):
    with caplog.at_level(logging.WARNING):
        images = load_images(train_data_dir=str(odd_folder), resolution=16, center_crop=True)
    readable = [name for name, colour in EXPECTED_CENTRE.items() if colour is not None]
    assert images.pixels.shape == (len(readable), 3, 16, 16) and images.pixels.dtype == torch.uint8
    assert images.num_skipped == 3
    assert "Skipped 3 of 13 images" in caplog.text
    assert "Skipping 2 files" in caplog.text and "not images" in caplog.text
    for name in ("truncated.png", "empty.png", "text_pretending.jpg"):
        assert name in caplog.text
    # Every readable image's centre colour is what a viewer shows, whatever its mode (order is not assumed).
    centres = {tuple(int(v) for v in images.pixels[i, :, 8, 8]) for i in range(len(images))}
    for name in readable:
        expected = np.array(EXPECTED_CENTRE[name])
        assert any(np.abs(np.array(c) - expected).max() <= 3 for c in centres), (name, centres)


@pytest.mark.parametrize(
    "image, expected",
    [
        (PIL.Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)), (255, 255, 255)),  # 16-bit white, not clipped
        (PIL.Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)), (128, 128, 128)),  # float in [0, 1]
        (PIL.Image.new("RGBA", (4, 4), (0, 0, 0, 0)), (255, 255, 255)),
        (PIL.Image.new("CMYK", (4, 4), (0, 0, 0, 255)), (0, 0, 0)),
    ],
)
def test_to_model_mode(image, expected):
    converted = to_model_mode(image)
    assert converted.mode == "RGB" and converted.getpixel((1, 1)) == expected


def test_grayscale_models_get_one_channel(odd_folder):
    images = load_images(train_data_dir=str(odd_folder), resolution=8, channels=1, center_crop=True)
    assert images.pixels.shape[1:] == (1, 8, 8)


def test_random_crop_is_seeded_and_center_crop_is_centred(tmp_path):
    folder = tmp_path / "wide"
    folder.mkdir()
    stripes = np.zeros((8, 32, 3), dtype=np.uint8)
    stripes[:, :, 0] = np.arange(32)[None, :] * 8  # red encodes the column
    PIL.Image.fromarray(stripes).save(folder / "stripes.png")
    centre = load_images(train_data_dir=str(folder), resolution=8, center_crop=True).pixels[0, 0, 0]
    assert abs(int(centre[0]) - 12 * 8) <= 8  # columns 12..19 of 32
    first = load_images(train_data_dir=str(folder), resolution=8, seed=1).pixels
    again = load_images(train_data_dir=str(folder), resolution=8, seed=1).pixels
    torch.testing.assert_close(first, again)


def test_missing_and_empty_sources_fail_with_one_sentence(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        load_images(train_data_dir=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no image files"):
        load_images(train_data_dir=str(tmp_path / "empty"))
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    (only_broken / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match="None of the 1 files"):
        load_images(train_data_dir=str(only_broken))


def test_builtin_sets_and_max_train_samples():
    shapes = load_images("shapes", resolution=16, max_train_samples=10, seed=3)
    assert shapes.pixels.shape == (10, 3, 16, 16)
    twemoji = load_images("twemoji", resolution=8)
    assert len(twemoji) == 4009 and twemoji.num_skipped == 0
    # Composited on white: the corners of emoji are background.
    assert twemoji.pixels[:, :, 0, 0].float().mean() > 200


def test_datasets_saved_to_disk_and_image_column(tmp_path):
    import datasets

    images = [PIL.Image.new("RGB", (8, 8), (i * 20, 0, 0)) for i in range(5)]
    dataset = datasets.Dataset.from_dict({"picture": images, "label": list(range(5))})
    dataset = dataset.cast_column("picture", datasets.Image())
    dataset.save_to_disk(str(tmp_path / "saved"))
    loaded = load_images(str(tmp_path / "saved"), resolution=8)  # the only image column is found
    assert loaded.pixels.shape == (5, 3, 8, 8)
    assert sorted(int(v) for v in loaded.pixels[:, 0, 0, 0]) == [0, 20, 40, 60, 80]
    with pytest.raises(ValueError, match=r"--image_column 'img' is not a column.*\['picture', 'label'\]"):
        load_images(str(tmp_path / "saved"), image_column="img")


def test_augment_scales_and_flips_whole_batches():
    batch = torch.arange(2 * 3 * 2 * 4, dtype=torch.uint8).reshape(2, 3, 2, 4) * 10
    out = augment(batch, random_flip=False)
    assert out.dtype == torch.float32 and out.min() >= -1 and out.max() <= 1
    torch.testing.assert_close(out, batch.float() / 127.5 - 1)
    flipped = augment(batch, random_flip=True, generator=torch.Generator().manual_seed(0))
    for i in range(2):  # each image is either itself or its mirror
        assert torch.equal(flipped[i], out[i]) or torch.equal(flipped[i], out[i].flip(-1))
    many = augment(batch[:1].expand(256, -1, -1, -1), random_flip=True, generator=torch.Generator().manual_seed(0))
    mirrored = sum(torch.equal(m, out[0].flip(-1)) for m in many)
    assert 90 < mirrored < 166  # about half


def test_sets_larger_than_memory_are_read_from_the_mapped_cache(monkeypatch):
    import ddpm_hub.data as data

    in_memory = load_images("shapes", resolution=8, max_train_samples=12)
    monkeypatch.setattr(data.images, "IN_MEMORY_FRACTION", 0.0)  # as if the decoded set did not fit
    mapped = load_images("shapes", resolution=8, max_train_samples=12)
    assert not isinstance(mapped.pixels, torch.Tensor)
    batch = data.ImageBatchDataset(mapped).__getitems__([3, 0, 7])
    assert batch.dtype == torch.uint8 and batch.shape == (3, 3, 8, 8)
    torch.testing.assert_close(batch, in_memory.pixels[[3, 0, 7]])


def test_every_file_imagefolder_reads_is_trained_on_and_the_others_are_counted(tmp_path, caplog):
    # .jfif and .jpe are JPEGs under names datasets' imagefolder reads; notes.txt is not an image; broken.jfif is
    # read by the loader but cannot be decoded.
    folder = tmp_path / "photos"
    folder.mkdir()
    PIL.Image.new("RGB", (20, 20), (250, 10, 10)).save(folder / "red.jfif", format="JPEG", quality=100)
    PIL.Image.new("RGB", (20, 20), (10, 10, 250)).save(folder / "blue.jpe", format="JPEG", quality=100)
    (folder / "broken.jfif").write_bytes(b"\xff\xd8 not really a JPEG")
    (folder / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        images = load_images(train_data_dir=str(folder), resolution=8, center_crop=True)
    centres = sorted(tuple(int(v) for v in images.pixels[i, :, 4, 4]) for i in range(len(images)))
    assert len(centres) == 2 and centres[0][2] > 200 and centres[1][0] > 200  # blue and red, both trained on
    assert images.num_skipped == 1 and "broken.jfif" in caplog.text and "Skipped 1 of 3 images" in caplog.text
    assert "Skipping 1 files" in caplog.text  # notes.txt only

    only_jfif = tmp_path / "only_jfif"
    only_jfif.mkdir()
    shutil.copy(folder / "red.jfif", only_jfif / "red.jfif")
    assert len(load_images(train_data_dir=str(only_jfif), resolution=8)) == 1  # not refused as "no image files"
