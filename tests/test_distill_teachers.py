"""`ddpm-hub distill` of the teachers beyond pixel-space unconditional ones: latent and class-conditional teachers.

Tiny random teachers (a latent teacher's VAE is the f2 `AutoencoderKL` of `test_latents.py`: 16 px images, 4x8x8
latents), a round or two of two optimizer steps each, on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import TINY_UNET
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, UNet2DModel
from safetensors.torch import load_file
from test_conditional import COLOURS, labelled_folder  # noqa: F401 (a fixture)
from test_latents import TINY_KL

from ddpm_hub import DDPMHubPipeline, make_noise_scheduler
from ddpm_hub.cli import main as cli_main
from ddpm_hub.distill.rounds import step_grid
from ddpm_hub.distill.step import DistillStep
from ddpm_hub.distill.targets import Level, x_target

# The procedural shapes at 16 px, two optimizer steps per round, no scores unless a test asks for them.
DATA = (
    "--dataset_name shapes --max_train_samples 24 --train_batch_size 8 --logger none --eval_batch_size 4 "
    "--logging_steps 1 --lr_warmup_steps 0 --steps_per_round 2"
).split()
LATENT_UNET = {**TINY_UNET, "sample_size": 8, "in_channels": 4, "out_channels": 4}
SCALING = 0.5  # the teacher's own latent scaling factor, not its VAE's 0.18215: the student must keep it


def distill(*args) -> None:
    assert cli_main(["distill", *map(str, args)]) == 0


def tensors(folder: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(folder / name / "diffusion_pytorch_model.safetensors"))


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- latent teachers ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def latent_teacher(tmp_path_factory) -> Path:
    """A random latent pipeline (v-prediction) with a tiny KL VAE and an overridden latent scaling factor."""
    torch.manual_seed(0)
    vae = AutoencoderKL(**TINY_KL).eval()
    unet = UNet2DModel(**LATENT_UNET).eval()
    scheduler = make_noise_scheduler(prediction_type="v_prediction")
    folder = tmp_path_factory.mktemp("latent") / "teacher"
    DDPMHubPipeline(unet=unet, scheduler=scheduler, vae=vae, latent_scaling_factor=SCALING).save_pretrained(folder)
    return folder


@pytest.fixture
def vae_calls(monkeypatch) -> dict[str, int]:
    """Counts the images AutoencoderKL encodes and decodes in this process."""
    counts = {"encode": 0, "decode": 0}
    for name in counts:
        original = getattr(AutoencoderKL, name)

        def counting(self, x, *args, _original=original, _name=name, **kwargs):
            counts[_name] += x.shape[0]
            return _original(self, x, *args, **kwargs)

        monkeypatch.setattr(AutoencoderKL, name, counting)
    return counts


def test_a_latent_teacher_gives_a_latent_student_on_its_own_vae(tmp_path, latent_teacher, vae_calls):
    out = tmp_path / "student"
    flags = "--start_steps 8 --end_steps 2 --eval_rounds false".split()
    distill(latent_teacher, "--output_dir", out, *flags, "--cache_dir", tmp_path / "cache", *DATA)
    # The 24 images are encoded once, by the teacher's VAE, for both rounds (the second reads the latent cache).
    assert vae_calls["encode"] == 24
    assert len(list((tmp_path / "cache" / "ddpm_hub_latents").glob("*.safetensors"))) == 1
    config = json.loads((out / "round-4" / "training_config.json").read_text())
    assert config["latent_shape"] == "4x8x8" and config["resolution"] == 16 and config["vae"] == f"{latent_teacher}/vae"
    assert config["latent_scaling_factor_effective"] == SCALING
    # Every round's student and the final one carry the teacher's VAE, bit for bit, and its scaling factor.
    for folder in (out / "round-4", out / "round-2", out):
        assert_same_tensors(tensors(folder, "vae"), tensors(latent_teacher, "vae"))
        assert json.loads((folder / "model_index.json").read_text())["latent_scaling_factor"] == SCALING
    # The student samples decoded 16 px images at its default 2 steps, through ddpm-hub and through diffusers.
    pipe = DDPMHubPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.vae) is AutoencoderKL and pipe.latent_scaling_factor == SCALING
    assert pipe.default_num_inference_steps == 2 and type(pipe.scheduler) is DDIMScheduler
    images = pipe(batch_size=2, generator=seeded(0), output_type="np").images
    assert images.shape == (2, 16, 16, 3) and len(pipe.scheduler.timesteps) == 2 and np.isfinite(images).all()
    stock = DiffusionPipeline.from_pretrained(out, trust_remote_code=True)
    stock.set_progress_bar_config(disable=True)
    remote = stock(batch_size=1, generator=seeded(0), output_type="np").images
    assert remote.shape == (1, 16, 16, 3) and len(stock.scheduler.timesteps) == 2
    np.testing.assert_allclose(remote, images[:1], atol=1e-5)
    # The previews are decoded (2 x 2 images of 16 px; latents would be 8 px), and the card names the VAE.
    with PIL.Image.open(out / "sample_grid.png") as grid:
        assert grid.size == (32, 32)
    card = (out / "README.md").read_text()
    assert "latent image diffusion model" in card and f"`{latent_teacher}/vae`" in card and "8 -> 4 -> 2" in card


def test_a_latent_rounds_scores_are_of_decoded_images(tmp_path, latent_teacher, vae_calls, monkeypatch):
    monkeypatch.setenv("DDPM_HUB_CACHE", str(tmp_path / "ddpm-hub-cache"))
    out = tmp_path / "student"
    scores = "--eval_features efficientnet-lite0-40 --eval_metrics kid --eval_num_samples 8 --eval_teacher_steps 8"
    flags = f"--start_steps 8 --end_steps 4 --eval_rounds true {scores}".split()
    distill(latent_teacher, "--output_dir", out, *flags, "--cache_dir", tmp_path / "cache", *DATA)
    scores = json.loads((out / "round-4" / "quality.json").read_text())["scores"]
    assert set(scores) == {"student ddim 4", "teacher ddim 4", "teacher dpmpp_2m 4", "teacher ddim 8"}
    assert all(np.isfinite(row["kid_mean"]) for row in scores.values())
    # Four rows of 8 samples went through the VAE's decoder (and one preview grid of 4), each a 16 px image.
    assert vae_calls["decode"] == 4 * 8 + 4
    assert "round 4: student ddim 4 kid_mean" in json.loads((out / "metrics.json").read_text())


def test_a_resumed_latent_distillation_reads_the_cache_and_ends_bit_identical(tmp_path, latent_teacher, vae_calls):
    import shutil

    flags = "--start_steps 8 --end_steps 2 --eval_rounds false --checkpointing_steps 1".split()
    flags += ["--cache_dir", str(tmp_path / "cache"), *DATA]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    distill(latent_teacher, "--output_dir", straight, *flags)
    # As after a SIGKILL in round 2 just after its checkpoint-1: round 1 finished, nothing of round 2 but that.
    resumed.mkdir()
    shutil.copytree(straight / "round-4", resumed / "round-4")
    (resumed / "round-2").mkdir()
    shutil.copytree(straight / "round-2" / "checkpoint-1", resumed / "round-2" / "checkpoint-1")
    distill(latent_teacher, "--output_dir", resumed, *flags, "--resume_from_checkpoint", "latest")
    assert vae_calls["encode"] == 24  # the first run's cache served the resumed round
    logged = [json.loads(line) for line in (resumed / "round-2" / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged if "loss" in entry] == [2]  # round 2 resumed after its step 1
    for name in ("unet", "vae"):
        assert_same_tensors(tensors(resumed, name), tensors(straight, name))


def test_a_latent_teacher_without_a_usable_vae_is_refused_in_one_line(tmp_path, latent_teacher, capsys):
    import shutil

    broken = tmp_path / "no-vae"
    shutil.copytree(latent_teacher, broken)
    shutil.rmtree(broken / "vae")
    code = cli_main(["distill", str(broken), "--output_dir", str(tmp_path / "out"), "--start_steps", "8"])
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1 and "latent pipeline without its vae/ folder" in lines[0], lines
    # A UNet that does not take the VAE's latents (3 channels for 4).
    mismatched = tmp_path / "mismatched"
    shutil.copytree(latent_teacher, mismatched)
    UNet2DModel(**{**LATENT_UNET, "in_channels": 3, "out_channels": 3}).save_pretrained(mismatched / "unet")
    code = cli_main(["distill", str(mismatched), "--output_dir", str(tmp_path / "out"), "--start_steps", "8"])
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1 and "in/out channels 3/3, but the latents of its vae/ have 4" in lines[0]
    assert not (tmp_path / "out").exists()


# ---- class-conditional teachers -------------------------------------------------------------------------------

# The three colour classes of test_conditional's labelled folder, by id (imagefolder sorts the sub-folders).
CLASSES = sorted(COLOURS)


def conditional_teacher(label_names=tuple(CLASSES), latent: bool = False, **scheduler) -> DDPMHubPipeline:
    """A random class-conditional teacher of 16 px images (a latent one: of 4x8x8 latents, with its tiny VAE)."""
    torch.manual_seed(0)
    unet = UNet2DModel(**(LATENT_UNET if latent else TINY_UNET), num_class_embeds=len(CLASSES) + 1).eval()
    torch.nn.init.normal_(unet.class_embedding.weight, std=1.0)  # classes that make a visible difference
    vae = AutoencoderKL(**TINY_KL).eval() if latent else None
    pipe = DDPMHubPipeline(
        unet=unet, scheduler=make_noise_scheduler(**scheduler), label_names=list(label_names), vae=vae
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def labelled_data(folder: Path) -> list[str]:
    return [*DATA[DATA.index("--max_train_samples") :], "--train_data_dir", str(folder), "--class_conditional"]


@pytest.mark.parametrize("latent", [False, True], ids=["pixel", "latent"])
def test_a_class_conditional_teacher_gives_a_class_conditional_student(tmp_path, labelled_folder, latent):
    teacher = tmp_path / "teacher"
    conditional_teacher(latent=latent, prediction_type="v_prediction").save_pretrained(teacher)
    out = tmp_path / "student"
    flags = f"--start_steps 8 --end_steps 4 --eval_rounds false --cache_dir {tmp_path / 'cache'}".split()
    distill(teacher, "--output_dir", out, *flags, *labelled_data(labelled_folder))
    assert json.loads((out / "unet" / "config.json").read_text())["num_class_embeds"] == 4
    names = {"0": "blue", "1": "green", "2": "red"}
    for folder in (out / "round-4", out):
        assert json.loads((folder / "model_index.json").read_text())["label_names"] == names
    pipe = DDPMHubPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.label_names == CLASSES and pipe.default_num_inference_steps == 4
    assert (pipe.vae is not None) == latent

    def run(**kwargs):
        return pipe(generator=[seeded(1), seeded(2)], output_type="np", **kwargs).images

    guided = run(class_labels=["red", "blue"], guidance_scale=2.0)
    conditional = run(class_labels=["red", "blue"], guidance_scale=1.0)
    assert guided.shape == (2, 16, 16, 3) and np.isfinite(guided).all()
    assert not np.allclose(guided, conditional)  # the scale is applied, on the student's own two predictions
    np.testing.assert_array_equal(run(class_labels=[2, 0], guidance_scale=2.0), guided)  # ids are names
    # The card says what the student is and names its classes; the preview grid has one row per class.
    card = (out / "README.md").read_text()
    assert "A class-conditional (3 classes)" in card and "`blue`, `green`, `red`" in card
    with PIL.Image.open(out / "sample_grid.png") as grid:
        assert grid.size == (2 * 16, 3 * 16)


def test_a_conditional_teacher_with_other_class_names_is_refused(tmp_path, labelled_folder, capsys):
    teacher = tmp_path / "teacher"
    conditional_teacher(label_names=("cat", "dog", "fish")).save_pretrained(teacher)
    flags = "--start_steps 8 --end_steps 4 --eval_rounds false".split()
    code = cli_main(
        ["distill", str(teacher), "--output_dir", str(tmp_path / "out"), *flags, *labelled_data(labelled_folder)]
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1, lines
    assert "the data's classes ['blue', 'green', 'red'] are not the teacher's ['cat', 'dog', 'fish']" in lines[0]
    assert not (tmp_path / "out" / "round-4" / "model_index.json").exists()


def test_the_teacher_target_is_its_unguided_prediction_for_the_label_given():
    # What distillation does with guidance (docs/distillation.md): the target of a labelled image is two DDIM steps
    # of the teacher's *conditional* prediction (guidance scale 1), that of a dropped label (the null class) two
    # steps of its unconditional one; the teacher's guided prediction is never used. Guidance is the student's, at
    # sampling time, from its own conditional and unconditional predictions.
    from accelerate import Accelerator

    teacher = conditional_teacher(clip_sample=False)
    unet, config = teacher.unet, teacher.scheduler.config
    grid = step_grid(config, 4)
    accelerator = Accelerator(cpu=True)
    step = DistillStep(unet, unet, grid, config.prediction_type, accelerator, lambda x, flip: x)
    ddim = DDIMScheduler.from_config(config, timestep_spacing="trailing", steps_offset=0)
    ddim.set_timesteps(8)
    null = teacher.null_class_id
    labels = torch.tensor([0, 2, null])
    i = 1  # the student's second step, t = 749 -> 499; the teacher's 749 -> 624 -> 499
    z_t = torch.randn(3, 3, 16, 16, generator=seeded(0))
    target = step.teacher_target(z_t, torch.full((3,), i), labels)

    def two_teacher_steps(guidance_scale: float) -> torch.Tensor:
        z = z_t
        for t in (int(grid.timesteps[i]), int(grid.mid_timesteps[i])):
            with torch.no_grad():
                conditional = unet(z, t, class_labels=labels).sample
                unconditional = unet(z, t, class_labels=torch.full_like(labels, null)).sample
            output = unconditional + guidance_scale * (conditional - unconditional)
            z = ddim.step(output, t, z, eta=0.0).prev_sample
        start, end = (Level(level.alpha[i], level.sigma[i]) for level in (grid.start, grid.end))
        return x_target(z_t, z, start, end)

    torch.testing.assert_close(target, two_teacher_steps(1.0), rtol=1e-4, atol=1e-4)
    guided = two_teacher_steps(3.0)  # the pipeline's default guidance scale
    assert (target[:2] - guided[:2]).abs().max() > 100 * 1e-4  # not the guided prediction ...
    torch.testing.assert_close(target[2], guided[2], rtol=1e-4, atol=1e-4)  # ... which is the same for the null class
