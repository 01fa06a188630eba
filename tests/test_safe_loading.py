"""Models load from safetensors only; small bad inputs are one line (issue 20, items 10 and 12)."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import make_tiny_pipeline

from ddpm_hub.cli import main as cli_main


def pickled_pipeline(folder):
    """A saved pipeline whose UNet weights are a pickle (`.bin`), as older diffusers versions wrote them."""
    import torch
    from safetensors.torch import load_file

    make_tiny_pipeline().save_pretrained(folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), folder / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    return folder


def sample(capsys, *args) -> tuple[int, str]:
    try:
        status = cli_main(["sample", *args, "--num_inference_steps", "1", "--num_images", "1"])
    except SystemExit as exit:
        status = exit.code
    return status, (capsys.readouterr().err.strip().splitlines() or [""])[-1]  # after the usage line: the error


def test_a_folder_with_only_pickled_weights_is_refused_unless_the_user_opts_in(tmp_path, capsys, monkeypatch):
    model = pickled_pipeline(tmp_path / "pickled")
    status, err = sample(capsys, str(model), "--output", str(tmp_path / "grid.png"))
    assert status == 2 and err.startswith("ddpm-hub: error: "), err
    assert "holds only pickled weights (pickled/unet/diffusion_pytorch_model.bin)" in err
    assert "use_safetensors=False).save_pretrained(" in err and "DDPM_HUB_ALLOW_PICKLED_WEIGHTS=1" in err
    assert not (tmp_path / "grid.png").exists()
    monkeypatch.setenv("DDPM_HUB_ALLOW_PICKLED_WEIGHTS", "1")
    status, err = sample(capsys, str(model), "--output", str(tmp_path / "grid.png"))
    assert status == 0 and (tmp_path / "grid.png").is_file(), err


def test_training_from_pickled_weights_is_refused_too(tmp_path, capsys):
    from ddpm_hub.train import main as train_main

    model = pickled_pipeline(tmp_path / "pickled")
    code = train_main(["--output_dir", str(tmp_path / "out"), "--pretrained_model_name_or_path", str(model),
                       "--dataset_name", "shapes", "--max_train_steps", "1"])  # fmt: skip
    assert code == 2 and "holds only pickled weights" in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("content", [[], ["unet", "scheduler"], "a string"])
def test_a_model_index_that_is_not_an_object_is_one_line(saved_pipeline_dir, tmp_path, capsys, content):
    model = tmp_path / "odd"
    shutil.copytree(saved_pipeline_dir, model)
    (model / "model_index.json").write_text(json.dumps(content))
    status, err = sample(capsys, str(model), "--output", str(tmp_path / "grid.png"))
    assert status == 2 and "model_index.json holds a" in err, err


def test_sample_output_is_checked_before_sampling(saved_pipeline_dir, tmp_path, capsys):
    status, err = sample(capsys, str(saved_pipeline_dir), "--output", str(tmp_path))
    assert status == 2 and "is a folder; give a file name" in err, err
    status, err = sample(capsys, str(saved_pipeline_dir), "--output", str(tmp_path / "grid.txt"))
    assert status == 2 and "'.txt' is not an image format" in err, err
    (tmp_path / "file").write_text("x")
    status, err = sample(capsys, str(saved_pipeline_dir), "--output", str(tmp_path / "file" / "grid.png"))
    assert status == 2 and "is a file, not a folder" in err, err
    # A missing folder is made, and the user is told so.
    target = tmp_path / "new" / "dir" / "grid.png"
    status = cli_main(["sample", str(saved_pipeline_dir), "--output", str(target), "--num_inference_steps", "1",
                       "--num_images", "1"])  # fmt: skip
    assert status == 0 and target.is_file()
    assert f"Creating the folder {target.parent} for --output" in capsys.readouterr().out


def test_a_model_with_nan_weights_is_refused_not_sampled_black(tmp_path, capsys):
    import torch

    pipe = make_tiny_pipeline()
    with torch.no_grad():
        for parameter in pipe.unet.parameters():
            parameter.fill_(float("nan"))
    pipe.unet.save_pretrained(tmp_path / "nan" / "unet")  # as a diverged export that slipped through
    make_tiny_pipeline().scheduler.save_pretrained(tmp_path / "nan" / "scheduler")
    shutil.copy(_index_of_a_saved_pipeline(tmp_path), tmp_path / "nan" / "model_index.json")
    status, err = sample(capsys, str(tmp_path / "nan"), "--output", str(tmp_path / "grid.png"))
    assert status == 2 and "has NaN or infinite weights" in err, err
    assert not (tmp_path / "grid.png").exists()


def _index_of_a_saved_pipeline(tmp_path):
    folder = tmp_path / "good"
    make_tiny_pipeline().save_pretrained(folder)
    return folder / "model_index.json"


def test_a_fully_transparent_mask_is_refused(saved_pipeline_dir, tmp_path, capsys):
    import PIL.Image

    PIL.Image.new("RGB", (16, 16), (200, 10, 10)).save(tmp_path / "init.png")
    PIL.Image.new("RGBA", (16, 16), (255, 255, 255, 0)).save(tmp_path / "mask.png")
    status, err = sample(capsys, str(saved_pipeline_dir), "--output", str(tmp_path / "grid.png"),
                         "--init_image", str(tmp_path / "init.png"),
                         "--mask_image", str(tmp_path / "mask.png"))  # fmt: skip
    assert status == 2 and "is fully transparent, so it marks nothing" in err, err


def test_zip_archives_in_an_image_folder_are_read_as_imagefolder_reads_them(tmp_path):
    import zipfile

    import PIL.Image

    from ddpm_hub.data import load_images

    folder = tmp_path / "images"
    folder.mkdir()
    with zipfile.ZipFile(folder / "more.zip", "w") as archive:
        for i in range(3):
            PIL.Image.new("RGB", (20, 20), (60 * i, 0, 0)).save(tmp_path / f"{i}.png")
            archive.write(tmp_path / f"{i}.png", f"inner/{i}.png")
    PIL.Image.new("RGB", (20, 20), (0, 0, 200)).save(folder / "loose.png")
    images = load_images(train_data_dir=str(folder), resolution=16, cache_dir=str(tmp_path / "cache"))
    assert len(images) == 4 and images.num_skipped == 0


@pytest.mark.parametrize("kind", ["device", "large"])
def test_from_metadata_checks_the_file_before_reading_it(tmp_path, capsys, kind):
    from ddpm_hub.text2img import main as text2img_main

    if kind == "device":
        path = "/dev/zero"
    else:
        path = tmp_path / "huge.json"
        with open(path, "wb") as handle:
            handle.truncate(3 << 30)  # sparse: 3 GB that would be read in full
    try:
        status = text2img_main(["--from_metadata", str(path), "--output_dir", str(tmp_path / "out")])
    except SystemExit as exit:  # checked while the command line is parsed
        status = exit.code
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2 and ("is not a regular file" if kind == "device" else "MB, more than a metadata file") in error
