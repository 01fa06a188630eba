"""Text to image, measured and upscaled: the CLIP score, `ddpm-hub eval-text2img`, and 4x upscaling.

Tiny random CLIP, Stable Diffusion and x4-upscaler pipelines (tests/tiny_sd.py) are saved to folders once per
session and loaded through the real `from_pretrained`, offline; images are 32 px, 2 denoising steps.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, SUBPROCESS_TIMEOUT, clean_env
from PIL import Image
from tiny_sd import build_tiny_clip, build_tiny_sd, build_tiny_upscaler

from ddpm_hub.cli import main as ddpm_hub_main
from ddpm_hub.text2img import CLIPScorer, ImageMetadata, Text2Image, main

SMALL = dict(num_inference_steps=2, height=32, width=32)
FAST_UPSCALE = dict(num_inference_steps=2, noise_level=30)
SAME = 1  # one 8-bit level: batched and single-image calls round differently in the last float bits


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny-models")
    build_tiny_sd(folder / "sd")
    build_tiny_clip(folder / "clip")
    build_tiny_upscaler(folder / "upscaler")
    return {name: folder / name for name in ("sd", "clip", "upscaler")}


@pytest.fixture(scope="module")
def text2image(models) -> Text2Image:
    return Text2Image.from_pretrained(str(models["sd"]), device="cpu")


@pytest.fixture(scope="module")
def scorer(models) -> CLIPScorer:
    return CLIPScorer.from_pretrained(str(models["clip"]), device="cpu")


def random_images(count: int, seed: int = 0, size=(40, 24)) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(count)]


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


def max_difference(a, b) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


def run_main(entry, argv: list[str], capsys) -> tuple[int, str, str]:
    """A command line in-process: (exit status, stdout, stderr)."""
    try:
        status = entry(argv)
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ---------------------------------------------------------------------------------------------------------------
# CLIP score
# ---------------------------------------------------------------------------------------------------------------

PROMPTS = ["a cat", "a dog in a hat", "a cat " * 40, "a red hat", "x", "a dog"]  # the third is cut at 77 tokens


def test_clip_scores_are_the_formula_on_clips_own_embeddings(models, scorer):
    from transformers import CLIPModel, CLIPProcessor

    # Every image against every prompt, plain colours beside noise: some pairs point apart (negative cosines).
    pictures = [*random_images(3), *(Image.new("RGB", (24, 40), colour) for colour in ("white", "black", "red"))]
    images = [image for image in pictures for _ in PROMPTS]
    prompts = PROMPTS * len(pictures)
    scores = scorer(images, prompts)

    # The embeddings computed here by hand, from transformers' towers and projections.
    model = CLIPModel.from_pretrained(models["clip"]).eval()
    processor = CLIPProcessor.from_pretrained(models["clip"])
    with torch.no_grad():
        pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
        image_embeds = model.visual_projection(model.vision_model(pixel_values=pixel_values).pooler_output)
        tokens = processor(text=prompts, return_tensors="pt", padding=True, truncation=True, max_length=77)
        text_embeds = model.text_projection(model.text_model(**tokens).pooler_output)
    a, b = image_embeds.double().numpy(), text_embeds.double().numpy()
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert (cosine > 0).any() and (cosine < 0).any()  # both sides of the clamp are exercised
    np.testing.assert_allclose(scores, np.maximum(100 * cosine, 0), atol=1e-4)
    assert all(0 <= score <= 100 for score in scores)


def test_clip_scores_are_deterministic_and_do_not_depend_on_the_batch(scorer):
    images = random_images(len(PROMPTS), seed=1)
    whole = scorer(images, PROMPTS)

    assert scorer(images, PROMPTS) == whole
    np.testing.assert_allclose(scorer(images, PROMPTS, batch_size=1), whole, atol=1e-4)
    np.testing.assert_allclose(scorer(images, PROMPTS, batch_size=4), whole, atol=1e-4)
    # An image scores the same alone, among others, and as a file.
    np.testing.assert_allclose(scorer(images[3], PROMPTS[3]), whole[3:4], atol=1e-4)
    assert max(whole) > 0 and len(set(whole)) > 2


def test_text2image_clip_score_records_each_score_in_the_metadata(models, text2image, scorer, tmp_path):
    output = text2image.generate(["a cat", "a dog"], num_images_per_prompt=2, seed=0, progress=False, **SMALL)
    scores = text2image.clip_score(output, clip_model=str(models["clip"]))

    assert scores == scorer(output.images, [meta.prompt for meta in output.metadata])
    assert [meta.clip_score for meta in output.metadata] == scores
    assert {meta.clip_model for meta in output.metadata} == {str(models["clip"].resolve())}
    png = output.save(tmp_path)[0]
    with Image.open(png) as saved:
        assert float(saved.text["clip_score"]) == scores[0] and saved.text["clip_model"] == scorer.name
    assert ImageMetadata.load(png).clip_score == scores[0]


# ---------------------------------------------------------------------------------------------------------------
# Upscaling
# ---------------------------------------------------------------------------------------------------------------


def test_cli_upscales_4x_and_scores_the_saved_images(models, scorer, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "text2img.py", "--model", str(models["sd"]), "--prompt", "a cat", "--num_images_per_prompt",
         "2", "--seed", "3", "--num_inference_steps", "2", "--height", "32", "--width", "24", "--upscale",
         "--upscaler_model", str(models["upscaler"]), "--upscale_num_inference_steps", "2", "--noise_level", "30",
         "--clip_score", "--clip_model", str(models["clip"]), "--output_dir", str(out)],
        cwd=REPO_ROOT, env=clean_env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    *listed, summary = result.stdout.splitlines()
    assert sorted(Path(line) for line in listed) == sorted(out.iterdir())
    pngs = [Path(line) for line in listed if line.endswith(".png")]
    scores = []
    for png in pngs:
        meta = ImageMetadata.load(png.with_suffix(".json"))
        assert ImageMetadata.load(png) == meta
        with Image.open(png) as image:
            assert image.size == (4 * 24, 4 * 32)  # 4x the generated size, which the metadata keeps
            assert (meta.width, meta.height) == (24, 32)
            # The score is of the saved, upscaled pixels.
            assert meta.clip_score == pytest.approx(scorer(image, "a cat")[0], abs=1e-4)
        assert (meta.upscaler, meta.upscale_noise_level, meta.upscale_num_inference_steps) == (
            str(models["upscaler"].resolve()), 30, 2,
        )  # fmt: skip
        assert meta.upscale_guidance_scale == 9.0  # diffusers' default
        scores.append(meta.clip_score)
    assert summary == f"CLIP score {np.mean(scores):.4f} (mean of 2 images; {models['clip']})"


def test_upscaled_image_regenerates_from_its_metadata(models, tmp_path, capsys):
    common = ["--device", "cpu", "--upscale_num_inference_steps", "2", "--noise_level", "30"]
    status, out, err = run_main(
        main,
        ["--model", str(models["sd"]), "--prompt", "a hat", "--negative_prompt", "blurry", "--seed", "7", *SMALL_ARGS,
         "--upscale", "--upscaler_model", str(models["upscaler"]), *common, "--output_dir", str(tmp_path / "a")],
        capsys,
    )  # fmt: skip
    assert status == 0, err
    png, sidecar = (Path(line) for line in out.splitlines())

    status, out, err = run_main(main, ["--from_metadata", str(sidecar), "--output_dir", str(tmp_path / "b")], capsys)
    assert status == 0, err
    again = Path(out.splitlines()[0])
    with Image.open(png) as first, Image.open(again) as second:
        assert first.size == (128, 128) and max_difference(first, second) <= SAME
    assert ImageMetadata.load(again).upscale_kwargs() == ImageMetadata.load(sidecar).upscale_kwargs()
    # The upscaling is the sidecar's, not the command line's.
    status, _, err = run_main(main, ["--from_metadata", str(sidecar), "--noise_level", "5", "--upscale"], capsys)
    assert status == 2 and "drop --upscale, --noise_level" in err


SMALL_ARGS = ["--num_inference_steps", "2", "--height", "32", "--width", "32"]


def test_upscale_works_on_any_given_image(models, text2image, tmp_path):
    upscaler = str(models["upscaler"])
    source = tmp_path / "photo.png"
    random_images(1, size=(24, 40))[0].save(source)
    output = text2image.upscale([str(source), Image.open(source)], "a cat", seed=4, upscaler_model=upscaler,
                                progress=False, **FAST_UPSCALE)  # fmt: skip

    assert [image.size for image in output.images] == [(96, 160), (96, 160)]
    from_file, in_memory = output.metadata
    upscaler_path = str(models["upscaler"].resolve())
    assert (from_file.mode, from_file.model, from_file.upscaler) == ("upscale", upscaler_path, upscaler_path)
    assert from_file.pipeline_class == "StableDiffusionUpscalePipeline" and from_file.init_image == str(
        source.resolve()
    )
    assert (from_file.seed, in_memory.seed, in_memory.init_image) == (4, 5, None)
    # Each image depends on its own seed only, and the metadata upscales it again.
    again = text2image.upscale(**from_file.upscale_kwargs(), progress=False)
    assert max_difference(again.images[0], output.images[0]) <= SAME
    assert max_difference(output.images[0], output.images[1]) > 5  # same pixels in, another seed
    with pytest.raises(ValueError, match="in-memory init image"):
        in_memory.upscale_kwargs()
    with pytest.raises(ValueError, match="upscaled from a given image"):
        from_file.generate_kwargs()
    # The noise level is used.
    noisier = text2image.upscale(str(source), "a cat", seed=4, upscaler_model=upscaler, progress=False,
                                 num_inference_steps=2, noise_level=300)  # fmt: skip
    assert max_difference(noisier.images[0], output.images[0]) > 5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(images=random_images(1, size=(520, 32))),
            "are 520x32 (width x height); the x4 upscaler takes sides of 8 to 512 px",
        ),
        (dict(noise_level=351), "max_noise_level (350), got 351"),
        (dict(noise_level=-1), "noise_level must be an integer >= 0, got -1"),
        (dict(prompt=None), "Give the prompt"),
        (dict(images="missing.png"), "does not exist"),
    ],
)
def test_upscale_refuses_bad_input_before_upscaling(models, text2image, kwargs, match):
    arguments = {"images": random_images(1), "prompt": "a cat", "upscaler_model": str(models["upscaler"]), **kwargs}
    with pytest.raises(ValueError, match=re.escape(match)):
        text2image.upscale(**arguments)


# ---------------------------------------------------------------------------------------------------------------
# ddpm-hub eval-text2img
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("a cat in a hat\n\n  a dog  \n", encoding="utf-8")
    return path


def test_eval_text2img_compares_schedulers_on_the_same_prompts_and_seeds(models, scorer, prompts_file, tmp_path,
                                                                         capsys):  # fmt: skip
    output = tmp_path / "result.json"
    status, out, err = run_main(
        ddpm_hub_main,
        ["eval-text2img", str(models["sd"]), "--prompts", str(prompts_file), "--compare", "euler", "--clip_model",
         str(models["clip"]), *SMALL_ARGS, "--device", "cpu", "--output", str(output)],
        capsys,
    )  # fmt: skip
    assert status == 0, err

    header, first, second, shared = out.splitlines()[:4]
    assert header.split()[:6] == ["run", "model", "scheduler", "steps", "CLIP", "score"]
    assert "DDIMScheduler (model's)" in first and " euler " in second
    assert "2 prompts x 1 images, seeds 0+" in shared
    result = json.loads(output.read_text())
    runs = result["runs"]
    assert [run["scheduler"] for run in runs] == [None, "euler"]
    for run, line in zip(runs, (first, second)):
        assert [(i["prompt"], i["seed"]) for i in run["images"]] == [("a cat in a hat", 0), ("a dog", 1)]
        scores = [i["clip_score"] for i in run["images"]]
        assert run["clip_score_mean"] == pytest.approx(np.mean(scores))
        assert run["clip_score_std"] == pytest.approx(np.std(scores))
        assert f"{run['clip_score_mean']:.2f} ± {run['clip_score_std']:.2f}" in line
    # The euler run's scores are those of the same prompts and seeds generated directly.
    euler = Text2Image.from_pretrained(str(models["sd"]), device="cpu", scheduler="euler")
    direct = euler.generate(["a cat in a hat", "a dog"], seed=0, progress=False, **SMALL)
    expected = scorer(direct.images, ["a cat in a hat", "a dog"])
    np.testing.assert_allclose([i["clip_score"] for i in runs[1]["images"]], expected, atol=1e-4)
    assert runs[0]["images"] != runs[1]["images"]


def test_eval_text2img_with_a_reference_folder_scores_fid_and_kid(models, prompts_file, tmp_path, capsys):
    reference = tmp_path / "reference"
    reference.mkdir()
    for k, image in enumerate(random_images(6, seed=3, size=(40, 40))):
        image.save(reference / f"{k}.png")
    # FID needs more images than the features have dimensions: 2 prompts x 21 images > 40.
    status, out, err = run_main(
        ddpm_hub_main,
        ["eval-text2img", str(models["sd"]), "--prompts", str(prompts_file), "--num_images_per_prompt", "21",
         "--reference", str(reference), "--features", "efficientnet-lite0-40", "--cache_dir", str(tmp_path / "cache"),
         "--clip_model", str(models["clip"]), *SMALL_ARGS, "--device", "cpu", "--output", str(tmp_path / "r.json")],
        capsys,
    )  # fmt: skip
    assert status == 0, err

    header, row, shared = out.splitlines()[:3]
    assert re.search(r"CLIP score\s+FID\s+KID", header)
    run = json.loads((tmp_path / "r.json").read_text())["runs"][0]
    assert run["num_images"] == 42 and np.isfinite([run["fid"], run["kid_mean"], run["kid_std"]]).all()
    assert run["fid"] > 0 and f"{run['fid']:.2f}" in row and f"{run['kid_mean']:.4f} ± {run['kid_std']:.4f}" in row
    assert "FID/KID with efficientnet-lite0-40 against" in shared


@pytest.mark.parametrize(
    "args, match",
    [
        (["--prompts", "{empty}"], "--prompts '{empty}' holds no prompt"),
        (["--prompts", "{binary}"], "--prompts '{binary}' is not a UTF-8 text file"),
        (["--prompts", "{missing}"], "--prompts '{missing}' does not exist."),
        (["--clip_model", "{sd}"], "is not a CLIP model: the folder has no config.json."),
        (["--clip_model", "{sd}/text_encoder"], "is a clip_text_model, not a CLIP model"),
        (["--compare", "euler", "--compare", "euler"], "--compare repeats the run"),
        (["--compare", "org/not-cached"], "Cannot load 'org/not-cached' from the Hub"),  # before any image is made
        (["--reference", "{prompts}"], "is not a folder of images"),
        (["--reference", "{images}"], "2 is too few for FID with efficientnet-lite0 (1280-dimensional features)"),
        (["--metrics", "kid"], "--metrics and --features score against --reference"),
    ],
)
def test_eval_text2img_bad_input_is_one_line_exit_2(models, prompts_file, tmp_path, capsys, args, match):
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    random_images(1)[0].save(tmp_path / "binary.txt", format="PNG")
    (tmp_path / "images").mkdir()
    random_images(1)[0].save(tmp_path / "images" / "0.png")
    paths = dict(empty=tmp_path / "empty.txt", binary=tmp_path / "binary.txt", missing=tmp_path / "missing.txt",
                 sd=models["sd"], prompts=prompts_file, images=tmp_path / "images")  # fmt: skip
    args = [arg.format(**paths) for arg in args]
    argv = ["eval-text2img", str(models["sd"]), "--prompts", str(prompts_file), "--clip_model", str(models["clip"])]
    status, out, err = run_main(ddpm_hub_main, argv + args + ["--output", str(tmp_path / "r.json")], capsys)

    assert status == 2
    errors = error_lines(err)
    assert len(errors) == 1 and match.format(**paths) in errors[0], err
    assert "Traceback" not in err and not (tmp_path / "r.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# text2img.py: bad input, one line, exit 2, nothing written
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, match",
    [
        (["--prompts_file", "{empty}"], "--prompts_file '{empty}' holds no prompt"),
        (["--prompts_file", "{binary}"], "--prompts_file '{binary}' is not a UTF-8 text file"),
        (["--upscale", "--height", "520"], "are 32x520 (width x height); the x4 upscaler takes sides of 8 to 512 px"),
        (["--upscale", "--noise_level", "351"], "max_noise_level (350), got 351"),
        (
            ["--upscale", "--upscaler_model", "{sd}"],
            "is a StableDiffusionPipeline, not a StableDiffusionUpscalePipeline",
        ),
        (["--noise_level", "10"], "Without --upscale nothing is upscaled, so --noise_level cannot apply"),
        (["--clip_score", "--clip_model", "{sd}"], "is not a CLIP model"),
        (["--clip_score", "--clip_model", "{sd}/text_encoder"], "is a clip_text_model, not a CLIP model"),
        (["--clip_model", "{clip}"], "--clip_model only applies with --clip_score"),
    ],
)
def test_text2img_bad_input_is_one_line_exit_2(models, tmp_path, capsys, args, match):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    random_images(1)[0].save(tmp_path / "binary.txt", format="PNG")
    paths = dict(empty=tmp_path / "empty.txt", binary=tmp_path / "binary.txt", sd=models["sd"], clip=models["clip"])
    args = [arg.format(**paths) for arg in args]
    argv = ["--model", str(models["sd"]), "--device", "cpu", "--prompt", "a cat", "--width", "32"]
    argv += (
        ["--upscaler_model", str(models["upscaler"])] if "--upscale" in args and "--upscaler_model" not in args else []
    )
    status, _, err = run_main(main, argv + args + ["--output_dir", str(tmp_path / "out")], capsys)

    assert status == 2
    errors = error_lines(err)
    assert len(errors) == 1 and match.format(**paths) in errors[0], err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_upscale_and_clip_score_follow_the_generator_onto_cuda(models):
    t2i = Text2Image.from_pretrained(str(models["sd"]), device="cuda", dtype="fp16", cpu_offload=True)
    output = t2i.generate("a cat", seed=0, progress=False, **SMALL)
    big = t2i.upscale(output.images, metadata=output.metadata, upscaler_model=str(models["upscaler"]),
                      progress=False, **FAST_UPSCALE)  # fmt: skip

    upscaler = t2i.load_upscaler(str(models["upscaler"]))
    assert upscaler.pipeline.unet.dtype == torch.float16 and upscaler.pipeline.unet.device.type == "cpu"  # offloaded
    assert big.images[0].size == (128, 128) and pixels(big.images[0]).std() > 5
    assert big.metadata[0].device.startswith("cuda") and big.metadata[0].dtype == "fp16"
    # CLIP runs in float32 on the generator's device and gives the CPU's scores.
    scores = t2i.clip_score(big, clip_model=str(models["clip"]))
    assert t2i.load_clip_scorer(str(models["clip"])).device.type == "cuda"
    cpu_scores = CLIPScorer.from_pretrained(str(models["clip"]), device="cpu")(big.images, "a cat")
    np.testing.assert_allclose(scores, cpu_scores, atol=1e-2)
