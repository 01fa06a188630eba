"""The explorer on a streamed data set (issue 17, item 6): `ddpm-hub explore --data SHARDS` offers the first images
of WebDataset shards in the Forward process panel, called through gradio_client as a visitor would; shared, it
opens only the sets it was started with (or `--allow`), names no path, and reads a bounded number of images."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import pytest  # noqa: E402
from conftest import SUBPROCESS_TIMEOUT, clean_env  # noqa: E402
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from test_app import free_port, pixels  # noqa: E402

from ddpm_hub.app import panels  # noqa: E402
from ddpm_hub.data import draw_shapes  # noqa: E402
from ddpm_hub.prepare import main as prepare_main  # noqa: E402

REFUSED = "only opens the data sets it was started with"


def forward(client, data, number, t=0, builtin="cat (Twemoji)", schedule="linear"):
    """The Forward process panel's x_t (enlarged) for image `number` of `data` (the API's inputs, by name)."""
    noisy, values, _, _ = client.predict(
        builtin, None, schedule, 1000, False, t, 0, data, number, api_name="/forward_process"
    )
    return pixels(noisy), values


def first_members(folder, count: int) -> list[np.ndarray]:
    """The first `count` images of the shards in shard order, read straight from the tars."""
    images = []
    for shard in sorted(folder.glob("train-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".png") and len(images) < count:
                    images.append(np.asarray(PIL.Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")))
    return images


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two sets written by `ddpm-hub prepare`: the built-in shapes (16 px, 64 per shard) and 5 images of a folder."""
    root = tmp_path_factory.mktemp("shards")
    assert prepare_main(["shapes", str(root / "shapes"), "--resolution", "16", "--shard_size", "64"]) == 0
    photos = root / "photos"
    photos.mkdir()
    for index, image in enumerate(draw_shapes(5, size=24, seed=7)):
        image.save(photos / f"{index}.png")
    assert prepare_main([str(photos), str(root / "five"), "--resolution", "16", "--shard_size", "2"]) == 0
    return root / "shapes", root / "five"


@pytest.fixture(scope="module")
def local(shards, tmp_path_factory):
    from ddpm_hub.app.ui import build_app, launch

    demo = build_app(
        outputs_dir=tmp_path_factory.mktemp("t2i"), text2image_model="no-such-org/no-such-model", data=str(shards[0])
    )
    url = launch(demo, port=free_port(), block=False)
    yield demo, Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    demo.close()


@pytest.fixture(scope="module")
def shared(shards, tmp_path_factory):
    from ddpm_hub.app.access import Limits
    from ddpm_hub.app.ui import build_app, launch

    demo = build_app(
        outputs_dir=tmp_path_factory.mktemp("t2i"),
        text2image_model="no-such-org/no-such-model",
        data=str(shards[0]),
        exposed=True,
        limits=Limits(max_data_images=8),
    )
    url = launch(demo, port=free_port(), block=False)
    yield demo, Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    demo.close()


def test_data_images_are_the_first_images_of_the_shards_in_order(shards):
    images = panels.data_images(str(shards[1]), 4)
    expected = first_members(shards[1], 4)
    assert [image.size for image in images] == [(16, 16)] * 4  # the manifest's resolution
    for image, member in zip(images, expected):
        assert np.array_equal(np.asarray(image), member)
    assert len(panels.data_images(str(shards[1]), 64)) == 5  # all there is, not more


def test_the_forward_process_noises_an_image_of_the_streamed_set(local, shards):
    _, client = local
    members = first_members(shards[0], 4)
    clean = [pixels(panels.enlarge(PIL.Image.fromarray(m).resize((64, 64), PIL.Image.BICUBIC))) for m in members]
    start, values = forward(client, str(shards[0]), 0)
    assert values["t"] == 0 and start.shape == (256, 256, 3)
    assert np.abs(start - clean[0]).mean() < 20  # image 0 of the shards, not the built-in cat
    cat = pixels(panels.enlarge(panels.builtin_image("cat (Twemoji)").resize((64, 64), PIL.Image.BICUBIC)))
    assert np.abs(start - cat).mean() > np.abs(start - clean[0]).mean() + 10
    third, _ = forward(client, str(shards[0]), 3)
    assert np.abs(third - clean[3]).mean() < np.abs(third - clean[0]).mean()
    late, _ = forward(client, str(shards[0]), 3, t=999)
    assert np.abs(late - clean[3]).mean() > 40  # t = T-1: almost pure noise
    # With the model-free default, the set the app was started with is what the panel shows first.
    default = client.predict("cat (Twemoji)", None, "linear", 1000, False, 0, 0, api_name="/forward_process")[0]
    assert np.array_equal(pixels(default), start)


def test_a_local_explorer_opens_any_streamed_set_by_pattern_and_says_what_is_wrong(local, shards, tmp_path):
    _, client = local
    pattern = str(shards[1] / "train-{000000..000002}.tar")
    noisy, _ = forward(client, pattern, 4)
    member = first_members(shards[1], 5)[4]
    clean = pixels(panels.enlarge(PIL.Image.fromarray(member).resize((64, 64), PIL.Image.BICUBIC)))
    assert np.abs(noisy - clean).mean() < 20
    with pytest.raises(AppError, match="The data set has 5 images; choose a number from 0 to 4"):
        forward(client, pattern, 7)
    with pytest.raises(AppError, match="The data set: .*matches no .tar shard|is not a .tar file"):
        forward(client, str(tmp_path / "nothing-here" / "*.tar"), 0)
    # The built-in image again once the data set box is cleared.
    cleared, _ = forward(client, "", 0)
    cat = pixels(panels.enlarge(panels.builtin_image("cat (Twemoji)").resize((64, 64), PIL.Image.BICUBIC)))
    assert np.abs(cleared - cat).mean() < 20


def test_a_shared_explorer_opens_only_the_set_it_was_started_with_and_reads_a_bounded_number(shared, shards, tmp_path):
    demo, client = shared
    opened, _ = forward(client, str(shards[0]), 7)
    assert opened.std() > 5
    messages = []
    for other in (shards[1], tmp_path / "missing", "/etc/*.tar", "hf://datasets/org/name/train-000000.tar"):
        with pytest.raises(AppError, match=REFUSED) as error:
            forward(client, str(other), 0)
        assert str(shards[1].parent) not in str(error.value) and str(tmp_path) not in str(error.value)
        messages.append(str(error.value))
    assert len(set(messages)) == 1  # the same words whether it exists or not
    with pytest.raises(AppError, match="between 0 and 7|greater than maximum value 7"):
        forward(client, str(shards[0]), 8)  # beyond the first max_data_images: not read
    assert [len(images) for images in demo.explorer._data_images.values()] == [8]  # only 8 images were decoded


def test_explore_refuses_missing_data_in_one_line_before_it_starts(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ddpm_hub.cli", "explore", "--data", str(tmp_path / "no-shards")],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddpm-hub explore: --data: "), result.stderr
