"""Classifier guidance: a noise-aware classifier steers any sampler of any model (Dhariwal & Nichol 2021).

The guided model is exact (`mixture.py`: two flat colours with a little noise, 70% red and 30% blue, denoised in
closed form), so the fractions below measure the guidance, not a model's training. The classifier is a tiny
`NoiseAwareClassifier` trained here, in a few seconds, on x_t drawn from the model's own forward process.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tiny_pipeline, run_python
from diffusers import DDPMScheduler
from mixture import LABELS, colour_class, draw_mixture, mixture_pipeline

from ddpm_hub.classifier import NoiseAwareClassifier, classifier_for, load_classifier

BLUE = LABELS.index("blue")  # the minority class (30% of the data)
TINY_CLASSIFIER = dict(width=8, layers_per_block=1, attention_head_dim=8)


def train_classifier(pipe, steps: int = 120, batch_size: int = 64, seed: int = 0) -> NoiseAwareClassifier:
    """A plain loop: x_t = q(x_t | x_0) of the model's own schedule at uniform t, cross-entropy on the class."""
    torch.manual_seed(seed)
    classifier = classifier_for(pipe, LABELS, **TINY_CLASSIFIER)
    forward = DDPMScheduler.from_config(pipe.scheduler.config)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        clean, labels = draw_mixture(batch_size, generator)
        t = torch.randint(0, forward.config.num_train_timesteps, (batch_size,), generator=generator)
        noisy = forward.add_noise(clean, torch.randn(clean.shape, generator=generator), t)
        loss = torch.nn.functional.cross_entropy(classifier(noisy, t).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return classifier.eval()


@pytest.fixture(scope="module")
def pipe():
    return mixture_pipeline()


@pytest.fixture(scope="module")
def classifier(pipe):
    return train_classifier(pipe)


def generators(count: int, start: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(start + i) for i in range(count)]


def guided(pipe, classifier, scale, *, sampler="ddim", count=64, label="blue", steps=20, **kwargs) -> torch.Tensor:
    pipe.set_sampler(sampler)
    images = pipe(
        batch_size=count, class_labels=label, classifier=classifier, classifier_scale=scale,
        generator=generators(count), num_inference_steps=steps, output_type="pt", **kwargs,
    ).images  # fmt: skip
    return images * 2 - 1


def share_of_blue(images: torch.Tensor) -> float:
    return (colour_class(images) == BLUE).double().mean().item()


# --- The classifier -------------------------------------------------------------------------------------------


def test_the_classifier_is_noise_aware(pipe, classifier):
    """Near x_0 the two colours are told apart; near x_T nothing is left to tell them by (chance is 50%)."""
    forward = DDPMScheduler.from_config(pipe.scheduler.config)
    generator = torch.Generator().manual_seed(123)  # held-out images: another stream than training's
    clean, labels = draw_mixture(512, generator)
    accuracy = {}
    with torch.no_grad():
        for t in (10, 300, 990):
            noisy = forward.add_noise(clean, torch.randn(clean.shape, generator=generator), torch.full((512,), t))
            accuracy[t] = (classifier(noisy, t).logits.argmax(1) == labels).double().mean().item()
    assert accuracy[10] > 0.95 and accuracy[300] > 0.95, accuracy
    assert abs(accuracy[990] - 0.5) < 0.1, accuracy


def test_the_classifier_config_records_what_it_was_trained_for(pipe, classifier, tmp_path):
    config = classifier.config
    assert (config.sample_size, config.in_channels, config.latent) == (8, 3, False)
    assert config.noise_schedule.startswith("linear-1000-") and config.num_train_timesteps == 1000
    assert classifier.label_names == LABELS
    classifier.save_pretrained(tmp_path / "clf")
    loaded = load_classifier(str(tmp_path / "clf"))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 700])
    torch.testing.assert_close(loaded(x, t).logits, classifier(x, t).logits)
    assert loaded.config.noise_schedule == config.noise_schedule and loaded.label_names == LABELS


# --- Guidance -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp_2m", "euler", "unipc"])
def test_guidance_steers_unconditional_samples_towards_the_class(pipe, classifier, sampler):
    """About the data's share (30%) without guidance; at least 80% with a large scale. DDPM shifts the mean, the
    others eps (ddim clips x_0; euler steps in sigma; unipc goes through the scheduler's own step)."""
    assert 0.15 < share_of_blue(guided(pipe, classifier, 0.0, sampler=sampler)) < 0.45
    assert share_of_blue(guided(pipe, classifier, 16.0, sampler=sampler)) >= 0.8
    assert share_of_blue(guided(pipe, classifier, 16.0, sampler=sampler, label="red")) <= 0.1


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp_2m", "euler"])
def test_guided_device_steps_match_the_schedulers_own_steps(pipe, classifier, sampler):
    """The shift enters the same place whether the step runs on the device or through `scheduler.step`; the same
    seeds give the same images."""
    on_device = guided(pipe, classifier, 4.0, sampler=sampler, count=4, steps=8)
    torch.testing.assert_close(guided(pipe, classifier, 4.0, sampler=sampler, count=4, steps=8), on_device)
    pipe.device_steps = False
    try:
        reference = guided(pipe, classifier, 4.0, sampler=sampler, count=4, steps=8)
    finally:
        pipe.device_steps = True
    torch.testing.assert_close(reference, on_device, atol=2e-5, rtol=0)


def test_scale_zero_is_the_unguided_sampler(pipe, classifier):
    pipe.set_sampler("ddim")
    plain = pipe(batch_size=4, generator=generators(4), num_inference_steps=8, output_type="pt").images
    assert torch.equal(guided(pipe, classifier, 0.0, count=4, steps=8), plain * 2 - 1)


@pytest.mark.parametrize("sampler", ["ddim", "euler"])
def test_guidance_is_the_same_for_eps_v_and_x0_models(classifier, sampler):
    """The shift is made in eps and converted to what the model predicts: three parameterizations of one denoiser
    give one set of guided images."""
    results = [
        guided(mixture_pipeline(prediction_type), classifier, 4.0, sampler=sampler, count=8, steps=10)
        for prediction_type in ("epsilon", "v_prediction", "sample")
    ]
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], atol=1e-4, rtol=0)


def test_classifier_guidance_combines_with_classifier_free_guidance(classifier):
    conditional = mixture_pipeline(conditional=True)
    # guidance_scale 0 is the model's unconditional (null-class) half: the classifier alone steers it.
    assert share_of_blue(guided(conditional, classifier, 0.0, guidance_scale=0.0)) < 0.45
    assert share_of_blue(guided(conditional, classifier, 16.0, guidance_scale=0.0)) >= 0.8
    # Both together: the conditional model is already all blue; at scale 0 the classifier changes nothing.
    both = guided(conditional, classifier, 2.0, count=8, guidance_scale=3.0)
    alone = conditional(batch_size=8, class_labels="blue", guidance_scale=3.0, generator=generators(8),
                        num_inference_steps=20, output_type="pt").images * 2 - 1  # fmt: skip
    assert share_of_blue(both) == 1.0 and not torch.allclose(both, alone)
    torch.testing.assert_close(guided(conditional, classifier, 0.0, count=8, guidance_scale=3.0), alone)


def test_a_latent_model_is_guided_through_its_latents_only():
    from test_latent_pipeline import make_latent_pipeline

    latent = make_latent_pipeline("kl")
    classifier = classifier_for(latent, ["a", "b"], **TINY_CLASSIFIER)
    assert (classifier.config.in_channels, classifier.config.sample_size, classifier.config.latent) == (4, 16, True)
    calls = []
    decode = latent.vae.decode
    latent.vae.decode = lambda *args, **kwargs: calls.append(torch.is_grad_enabled()) or decode(*args, **kwargs)
    latent.vae.requires_grad_(True)
    kwargs = dict(batch_size=2, class_labels="b", generator=generators(2), num_inference_steps=3, output_type="np")
    guided_images = latent(classifier=classifier, classifier_scale=50.0, **kwargs).images
    assert calls == [False]  # decoded once, at the end, without a graph
    assert all(p.grad is None for p in latent.vae.parameters())
    kwargs["generator"] = generators(2)
    plain = latent(classifier=classifier, classifier_scale=0.0, **kwargs).images
    assert np.isfinite(guided_images).all() and np.abs(guided_images - plain).max() > 1e-3
    pixel_classifier = classifier_for(make_tiny_pipeline(), ["a", "b"], **TINY_CLASSIFIER)
    pixel_classifier.register_to_config(sample_size=16, in_channels=4)  # the right shape, but pixels
    with pytest.raises(ValueError, match="trained on pixels, but this is a latent model"):
        latent(classifier=pixel_classifier, class_labels="a", num_inference_steps=1)


def test_a_learned_variance_model_is_guided_with_its_own_variance():
    """DDPM's mean moves by the learned Σ of each step (on the device as through `scheduler.step`); the other
    samplers shift eps of the mean prediction only, as for the same network without the variance channels."""
    from test_learned_variance import pipelines

    learned, twin = pipelines()
    classifier = classifier_for(learned, ["a", "b"], **TINY_CLASSIFIER)
    kwargs = dict(class_labels="b", classifier=classifier, batch_size=2, num_inference_steps=4, output_type="pt")

    def run(pipe, scale=50.0):
        return pipe(generator=generators(2), classifier_scale=scale, **kwargs).images

    on_device = run(learned)
    learned.device_steps = False
    torch.testing.assert_close(run(learned), on_device, atol=2e-5, rtol=0)
    assert (run(learned, 0.0) - on_device).abs().max() > 1e-3
    for pipe in (learned, twin):
        pipe.set_sampler("ddim")
    torch.testing.assert_close(run(learned), run(twin), atol=1e-5, rtol=0)


# --- Bad input, one line ----------------------------------------------------------------------------------------


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_classifier_for_another_model_is_refused(pipe, classifier):
    cosine = mixture_pipeline()
    cosine.scheduler = DDPMScheduler.from_config(cosine.scheduler.config, beta_schedule="squaredcos_cap_v2")
    with pytest.raises(ValueError, match="noise schedule linear-1000-.* but this model's is squaredcos_cap_v2-1000"):
        cosine(class_labels="blue", classifier=classifier, num_inference_steps=1)
    sixteen = classifier_for(make_tiny_pipeline(), LABELS, **TINY_CLASSIFIER)
    with pytest.raises(ValueError, match=r"on 16x16 samples with 3 channel\(s\), but this model's images are 8x8"):
        pipe(class_labels="blue", classifier=sixteen, num_inference_steps=1)
    one_channel = classifier_for(pipe, LABELS, **TINY_CLASSIFIER)
    one_channel.register_to_config(in_channels=1)
    with pytest.raises(ValueError, match="with 1 channel") as error:
        pipe(class_labels="blue", classifier=one_channel, num_inference_steps=1)
    one_line(error)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (dict(class_labels="green"), "Unknown class label 'green'; the classifier knows: red, blue."),
        (dict(class_labels=2), r"Class id 2 is out of range; the classifier has 2 classes \(ids 0 to 1\)."),
        (dict(class_labels="blue", classifier_scale=-1.0), "`classifier_scale` must be a finite number >= 0"),
        (dict(class_labels="blue", classifier_scale=float("nan")), "`classifier_scale` must be a finite number"),
        (dict(class_labels=None), "Classifier guidance needs `class_labels`"),
        (dict(class_labels="blue", guidance_scale=2.0), "`guidance_scale` .* needs a class-conditional model"),
    ],
)
def test_bad_guidance_input_is_refused_in_one_line(pipe, classifier, call, message):
    with pytest.raises(ValueError, match=message) as error:
        pipe(classifier=classifier, num_inference_steps=1, **call)
    one_line(error)


def test_a_scale_without_a_classifier_is_refused(pipe):
    with pytest.raises(ValueError, match=r"`classifier_scale` \(2.0\) needs a `classifier`"):
        pipe(classifier_scale=2.0, num_inference_steps=1)


def test_a_conditional_model_takes_only_a_classifier_of_its_classes(classifier):
    conditional = mixture_pipeline(conditional=True)
    other = classifier_for(conditional, ["cat", "dog"], **TINY_CLASSIFIER)
    with pytest.raises(ValueError, match=r"classifier's classes \(cat, dog\) are not this conditional model's"):
        conditional(class_labels="blue", classifier=other, num_inference_steps=1)


# --- ddpm-hub sample --classifier -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """An (untrained) classifier of the 16 px tiny pipeline's samples, with the classes "a" and "b"."""
    folder = tmp_path_factory.mktemp("classifier") / "tiny-classifier"
    torch.manual_seed(0)
    classifier_for(make_tiny_pipeline(), ["a", "b"], **TINY_CLASSIFIER).save_pretrained(folder)
    return folder


def sample_cli(*args) -> int:
    from ddpm_hub.cli import main

    return main(["sample", *map(str, args)])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--classifier_scale", "2"], "--classifier_scale (2.0) needs --classifier"),
        (["--classifier", "{clf}", "--classifier_scale", "-1"], "--classifier_scale must be a finite number >= 0"),
        (["--classifier", "{clf}", "--class_label", "c"], "Unknown class label 'c'; the classifier knows: a, b."),
        (["--classifier", "{clf}", "--class_label", "7"], "Class id 7 is out of range; the classifier has 2 classes"),
        (["--classifier", "{model}"], "is a pipeline folder; give the folder of a classifier"),
        (["--classifier", "{clf}", "--init_image", "{clf}/config.json"], "--classifier guides sampling from noise"),
        (["--output_dir", "{clf}/config.json"], "config.json' is a file, not a folder"),
    ],
)
def test_sample_refuses_bad_guidance_flags_in_one_line(saved_pipeline_dir, classifier_dir, tmp_path, capsys, args,
                                                       message):  # fmt: skip
    args = [arg.format(clf=classifier_dir, model=saved_pipeline_dir) for arg in args]
    with pytest.raises(SystemExit) as exit_info:
        sample_cli(saved_pipeline_dir, "--output", tmp_path / "g.png", "--device", "cpu", *args)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error, error
    assert not (tmp_path / "g.png").exists()


def test_sample_refuses_a_classifier_of_another_model(saved_pipeline_dir, tmp_path, capsys):
    other = classifier_for(mixture_pipeline(), ["a", "b"], **TINY_CLASSIFIER)  # 8 px
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(SystemExit) as exit_info:
        sample_cli(saved_pipeline_dir, "--output", tmp_path / "g.png", "--classifier", tmp_path / "other")
    assert exit_info.value.code == 2
    assert "The classifier was trained on 8x8 samples" in capsys.readouterr().err


@pytest.mark.slow  # a subprocess of its own; every pipeline loaded without ddpm-hub elsewhere imports this code too
def test_a_pipeline_loaded_without_ddpm_hub_is_guided_by_any_classifier_module(saved_pipeline_dir):
    """The guidance travels with the pipeline files: stock diffusers' remote code, and a classifier that is any
    torch module of (x_t, t) -> logits."""
    out = run_python(
        "import torch\n"
        "from diffusers import DiffusionPipeline\n"
        f"pipe = DiffusionPipeline.from_pretrained({str(saved_pipeline_dir)!r}, custom_pipeline="
        f"{str(saved_pipeline_dir)!r}, trust_remote_code=True)\n"
        "class Redness(torch.nn.Module):\n"
        "    def forward(self, x, t):\n"
        "        red = x[:, 0].mean((1, 2)) - x[:, 2].mean((1, 2))\n"
        "        return torch.stack([10 * red, -10 * red], 1)\n"
        "def run(scale):\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    return pipe(class_labels=0, classifier=Redness(), classifier_scale=scale, generator=g,\n"
        "                num_inference_steps=4, output_type='pt').images\n"
        "plain, red = run(0.0), run(20.0)\n"
        "redness = lambda images: (images[:, 0] - images[:, 2]).mean().item()\n"
        "print(type(pipe).__name__, redness(red) > redness(plain))\n",
        without_ddpm_hub=True,
    )
    assert "DDPMHubPipeline True" in out
