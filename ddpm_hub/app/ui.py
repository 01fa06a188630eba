"""The Gradio layout of the explorer: one tab per panel, each wired to a function of `panels` or `monitor`.

Every event has an `api_name`, so that `gradio_client` (and the tests) can call the panels of a running app.
Errors become `gr.Error` messages in the page; nothing a user types or uploads can stop the server.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import tempfile
import threading
from pathlib import Path

# Gradio reports usage to its servers unless told not to; the explorer must work, and stay quiet, offline.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from ..choices import EXPLORER_STEPS  # noqa: E402
from ..pipeline import SAMPLERS  # noqa: E402
from ..sampling import default_steps  # noqa: E402
from ..text2img.clip_score import DEFAULT_CLIP_MODEL  # noqa: E402
from ..text2img.upscale import DEFAULT_UPSCALER  # noqa: E402
from . import monitor, panels  # noqa: E402
from .access import Access, Limits, is_exposed  # noqa: E402
from .models import describe_pipeline, load_pipeline  # noqa: E402

TITLES = {
    "forward": "Forward process",
    "schedules": "Schedules",
    "steps": "Step by step",
    "compare": "Samplers compared",
    "upscale": "Upscaling",
    "text2image": "Text to image",
    "monitor": "Training monitor",
}
COMPARED_SAMPLERS = ["ddpm", "ddim", "euler_a", "dpmpp_2m", "unipc"]
REFRESH_SECONDS = 5.0
INLINE_MATH = [{"left": "$", "right": "$", "display": False}]  # Gradio's Markdown renders only $$...$$ by default
# System fonts only: the default theme would fetch its fonts from Google, which an offline laptop cannot reach.
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "Consolas", "monospace"]
)


def _shown_as_message(fn, access: Access | None = None):
    """Turn any exception of a panel into a one-line `gr.Error` shown in the page (the server keeps running)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001 - any failure is the user's to read, not a crash
            message = (str(error).strip().splitlines() or [""])[0]
            prefix = "" if isinstance(error, ValueError) else f"{type(error).__name__}: "
            message = prefix + message if access is None else access.public(prefix + message)
            raise gr.Error(message, print_exception=not isinstance(error, ValueError)) from error

    return wrapper


class ClientGone(RuntimeError):
    """The visitor who asked for this work has left; it is stopped at the next step."""


def _client_gone(demo: gr.Blocks, request: gr.Request | None) -> bool:
    """Whether Gradio's queue has given up this request's job: its client disconnected (the job is marked dead) or
    cancelled it (the job left the queue's running jobs, while this worker thread, which Gradio cannot stop, runs on).
    """
    session = getattr(request, "session_hash", None)
    queue = getattr(demo, "_queue", None)
    if session is None or queue is None or not hasattr(queue, "active_jobs"):
        return False
    jobs = [event for job in queue.active_jobs if job for event in job if event.session_hash == session]
    return not any(event.alive for event in jobs)


def _progress(tracker: gr.Progress, demo: gr.Blocks | None = None, request: gr.Request | None = None):
    def report(fraction, description):
        if demo is not None and _client_gone(demo, request):
            raise ClientGone("The page was closed; the work it asked for was stopped.")
        tracker(fraction, desc=description)

    return report


class Session:
    """One visitor's own loaded model (kept in a `gr.State`); without one, a session uses the served model."""

    def __init__(self, pipeline, source: str):
        self.pipeline, self.source = pipeline, source


class Explorer:
    """What every session shares: the served DDPM pipeline, the text-to-image model, the limits, where files go.

    A visitor's Load gives that visitor's session its own model (`load_session`); the served one never changes.
    """

    def __init__(
        self,
        model: str | None = None,
        run_dir: str | None = None,
        outputs_dir: str | Path = "outputs",
        *,
        access: Access | None = None,
        limits: Limits | None = None,
        data: str | None = None,
    ):
        self.pipeline = None
        self.source = None
        self.status = "No model loaded: the Forward process, Schedules and Training monitor panels work without one."
        self.run_dir = run_dir
        self.access = access or Access()
        self.access.allow([model, run_dir, data])  # what the server was started with may always be opened
        self.data = data
        self._data_images: collections.OrderedDict[str, list] = collections.OrderedDict()  # newest last
        self._data_lock = threading.Lock()
        self.limits = limits or Limits()
        self._shared: dict = {}  # model name -> pipeline, when exposed
        self._classifiers: collections.OrderedDict[str, object] = collections.OrderedDict()  # newest last
        self._classifier_lock = threading.Lock()
        self.text2image = panels.TextToImagePanel(Path(outputs_dir))
        self.work_dir = Path(tempfile.mkdtemp(prefix="ddpm-hub-explore-"))
        if model:
            self.load(model)

    def load_session(self, model: str, session: Session | None) -> tuple[Session | None, str]:
        """Load `model` for one session; on failure keep that session's model and say why (paths hidden if shared)."""
        current = session or (Session(self.pipeline, self.source) if self.pipeline is not None else None)
        try:
            self.access.check(model)
            if self.access.exposed:  # only the allowed few: each is loaded once and shared (read-only) by sessions
                if model not in self._shared:
                    self._shared[model] = self.pipeline if model == self.source else load_pipeline(model)
                loaded = Session(self._shared[model], model)
            else:
                loaded = Session(load_pipeline(model), model)
            return loaded, self.access.public(describe_pipeline(loaded.pipeline, model))
        except ValueError as error:
            kept = f" Still using {current.source}." if current is not None else ""
            return session, self.access.public(f"Error: {error}{kept}")

    def pipeline_of(self, session: Session | None):
        return session.pipeline if session is not None else self.pipeline

    def load(self, model: str) -> str:
        """Load `model` (folder or Hub id); on failure keep the previous model and say why in the status."""
        try:
            self.pipeline = load_pipeline(model)
            self.source = model
            self.status = describe_pipeline(self.pipeline, model)
        except ValueError as error:
            kept = f" Still using {self.source}." if self.pipeline is not None else ""
            self.status = f"Error: {error}{kept}"
        return self.status

    def data_image(self, data: str, index: int):
        """Image `index` of the first `limits.max_data_images` of a streamed set; each set is read once and kept
        (at most `limits.max_data_sets` of them). A shared explorer opens only the sets it was started with."""
        data = data.strip()
        self.access.check(data, "data sets")
        if not 0 <= int(index) < self.limits.max_data_images:
            raise ValueError(f"The image number must be between 0 and {self.limits.max_data_images - 1}, got {index}.")
        with self._data_lock:  # one reading per set, even when two visitors ask for it at once
            if data not in self._data_images:
                self._data_images[data] = panels.data_images(data, self.limits.max_data_images)
                while len(self._data_images) > self.limits.max_data_sets:
                    self._data_images.popitem(last=False)
            self._data_images.move_to_end(data)
            images = self._data_images[data]
        if int(index) >= len(images):
            raise ValueError(f"The data set has {len(images)} images; choose a number from 0 to {len(images) - 1}.")
        return images[int(index)]

    def classifier(self, name: str, device):
        """The classifier `name` (folder or Hub id) for classifier guidance, on `device`; each is loaded once and
        kept (the last `limits.max_data_sets` of them). A shared explorer opens only those it was started with."""
        from ..classifier import load_classifier

        name = name.strip()
        self.access.check(name, "classifiers")
        with self._classifier_lock:
            if name not in self._classifiers:
                self._classifiers[name] = load_classifier(name, flag="The classifier")
                while len(self._classifiers) > self.limits.max_data_sets:
                    self._classifiers.popitem(last=False)
            self._classifiers.move_to_end(name)
            return self._classifiers[name].to(device)

    def require_model(self, session: Session | None = None):
        pipeline = self.pipeline_of(session)
        if pipeline is None:
            raise ValueError("No model is loaded: enter a pipeline folder or Hub id at the top and press Load.")
        return pipeline

    def schedule_choices(self, session: Session | None = None) -> list[str]:
        has_model = self.pipeline_of(session) is not None
        return list(panels.NAMED_SCHEDULES) + ([panels.MODEL_SCHEDULE] if has_model else [])


@dataclasses.dataclass
class _Page:
    """What every tab of one page shares: the explorer, the visitor's session and model status, and the rules."""

    demo: gr.Blocks
    explorer: Explorer
    access: Access
    session: gr.State
    model_status: gr.Markdown
    served_steps: int  # a distilled student's own count, else 20; Load resets it

    @property
    def limits(self) -> Limits:
        return self.explorer.limits

    @property
    def model_work(self) -> dict:
        # One queue for heavy work, limited to `limits.concurrency` at a time.
        return {"concurrency_id": "model", "concurrency_limit": self.limits.concurrency}

    def shown(self, fn):
        return _shown_as_message(fn, access=self.access)

    def progress(self, tracker: gr.Progress, request: gr.Request):
        return _progress(tracker, self.demo, request)


def build_app(
    model: str | None = None,
    *,
    run_dir: str | None = None,
    outputs_dir: str | Path = "outputs",
    text2image_model: str | None = None,
    exposed: bool | None = None,
    allow: tuple[str, ...] | list[str] = (),
    limits: Limits | None = None,
    data: str | None = None,
) -> gr.Blocks:
    """The explorer as a `gr.Blocks`; `model` (folder or Hub id) and `run_dir` (a training output) are optional.

    `data` (optional) is a streamed set (WebDataset shards: a pattern, folder or URL, as for `--train_shards`) whose
    first images the Forward process panel offers.

    `exposed` (default: on a Space) restricts what visitors may load to `model`, `run_dir`, `data`,
    `text2image_model` and `allow`; `launch` on an address other than 127.0.0.1 turns it on too. `limits` bounds
    every request.

    Example:

    ```py
    >>> from ddpm_hub.app import build_app
    >>> build_app("ddpm-model", run_dir="ddpm-model").launch(server_name="127.0.0.1")
    ```
    """
    from ..text2img import DEFAULT_MODEL

    access = Access(exposed=is_exposed(None) if exposed is None else exposed)
    access.allow([text2image_model or DEFAULT_MODEL, DEFAULT_CLIP_MODEL, DEFAULT_UPSCALER, *allow])
    explorer = Explorer(model, run_dir, outputs_dir, access=access, limits=limits, data=data)
    # delete_cache: files Gradio copies for the page (images, GIFs) go after a day, so a long-lived Space stays small.
    with gr.Blocks(title="ddpm-hub explorer", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# ddpm-hub explorer\nWatch diffusion happen: noise added step by step, schedules compared, "
                    "images emerging from noise.")  # fmt: skip
        with gr.Row():
            model_box = gr.Textbox(
                value=model or "", label="Model (pipeline folder or Hub id)", scale=4, placeholder="ddpm-model"
            )
            load_button = gr.Button("Load", scale=1)
        page = _Page(
            demo,
            explorer,
            access,
            session=gr.State(None, time_to_live=explorer.limits.session_seconds),  # this visitor's own model, if any
            model_status=gr.Markdown(access.public(explorer.status), elem_id="model-status"),
            served_steps=default_steps(explorer.pipeline, EXPLORER_STEPS),
        )
        with gr.Tabs():
            schedule = _forward_tab(page, data)
            _schedules_tab(page)
            steps = _steps_tab(page)
            compare_steps = _compare_tab(page)
            upscale_steps = _upscale_tab(page)
            _text2image_tab(page, text2image_model or DEFAULT_MODEL, outputs_dir)
            _monitor_tab(page, run_dir)
        _wire_loading(page, model_box, load_button, schedule, [steps, compare_steps, upscale_steps])
    demo.explorer = explorer  # for tests and embedding: the shared state behind the page
    return demo


def _wire_loading(page: _Page, model_box, load_button, schedule, step_sliders) -> None:
    """Load (button or Enter): the session's own model, the Forward tab's schedules, the step sliders at its count."""
    explorer = page.explorer

    @page.shown
    def load(model: str, current: Session | None):
        loaded, status = explorer.load_session(model, current)
        return status, gr.Dropdown(choices=explorer.schedule_choices(loaded)), loaded

    def model_steps(current: Session | None):
        """The step sliders at the session's model's own count (a distilled student's), else 20."""
        count = default_steps(explorer.pipeline_of(current), EXPLORER_STEPS)
        return (count,) * len(step_sliders)

    inputs, outputs = [model_box, page.session], [page.model_status, schedule, page.session]
    loaded = load_button.click(load, inputs, outputs, api_name="load_model", **page.model_work)
    loaded.then(model_steps, page.session, step_sliders, api_name="model_steps")
    submitted = model_box.submit(load, inputs, outputs, api_visibility="private", **page.model_work)
    submitted.then(model_steps, page.session, step_sliders, api_visibility="private")


def _forward_tab(page: _Page, data: str | None) -> gr.Dropdown:
    """1. Forward process: x_t of an image at any t and schedule. Returns its schedule dropdown (Load updates it)."""
    explorer, limits = page.explorer, page.limits
    with gr.Tab(TITLES["forward"], id="forward"):
        gr.Markdown(f"## {TITLES['forward']}\n"
                    r"$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$ (DDPM eq. 4), "
                    "with the same noise $\\epsilon$ for every t.", latex_delimiters=INLINE_MATH)  # fmt: skip
        with gr.Row():
            with gr.Column(scale=1):
                builtin = gr.Dropdown(list(panels.BUILTIN_IMAGES), value=panels.BUILTIN_IMAGES[0],
                                      label="Built-in image")  # fmt: skip
                # A file, not gr.Image: an unreadable upload reaches `open_upload`, whose message is one line.
                upload = gr.File(label="Or upload an image", file_types=["image"], type="filepath", height=100)
                data_box = gr.Textbox(
                    data or "",
                    label="Or a streamed data set (shards: pattern, folder or URL)",
                    placeholder="data/shapes/train-{000000..000003}.tar",
                )
                data_index = gr.Slider(
                    0, limits.max_data_images - 1, value=0, step=1, label="Image number in the data set"
                )
                schedule = gr.Dropdown(explorer.schedule_choices(), value="linear", label="Schedule")
                forward_T = gr.Slider(10, 4000, value=1000, step=10, label="T (training timesteps)")
                forward_zero_snr = gr.Checkbox(False, label="Zero terminal SNR (rescaled)")
                t_slider = gr.Slider(0, 999, value=250, step=1, label="t", elem_id="forward-t")
                noise_seed = gr.Number(0, precision=0, label="Noise seed")
            with gr.Column(scale=1):
                noisy = gr.Image(label="x_t", type="pil", elem_id="forward-xt", format="png")
                values = gr.JSON(label="At t")
        strip = gr.Image(label="x_t over t", type="pil", format="png", elem_id="forward-strip")

    @page.shown
    def forward(builtin_name, upload_path, schedule_name, T, zero_snr, t, noise_seed, data_name, image_number, current):
        T = limits.check_timesteps(T)
        if upload_path:  # the image shown: an upload, else the data set's, else the built-in one
            image = panels.open_upload(
                upload_path, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_image_pixels
            )
        elif data_name and str(data_name).strip():
            image = explorer.data_image(str(data_name), int(image_number or 0))
        else:
            image = panels.builtin_image(builtin_name)
        pipeline = explorer.pipeline_of(current) if schedule_name == panels.MODEL_SCHEDULE else None
        if schedule_name == panels.MODEL_SCHEDULE:
            T = explorer.require_model(current).scheduler.config.num_train_timesteps
        t = min(int(t), int(T) - 1)
        result = panels.forward_process(
            image, schedule_name, t, num_train_timesteps=int(T), rescale_betas_zero_snr=bool(zero_snr),
            seed=int(noise_seed or 0), pipeline=pipeline,
        )  # fmt: skip
        return result.noisy, result.values, result.strip, gr.Slider(maximum=int(T) - 1, value=t)

    inputs = [builtin, upload, schedule, forward_T, forward_zero_snr, t_slider, noise_seed, data_box, data_index]
    gr.on(
        # `input`/`release` fire on the user's own changes only, not when this function updates the t slider.
        [page.demo.load, builtin.input, upload.change, schedule.input, forward_T.release, forward_zero_snr.input,
         t_slider.input, t_slider.release, noise_seed.submit, data_box.submit, data_index.release],
        forward, [*inputs, page.session], [noisy, values, strip, t_slider], api_name="forward_process",
        trigger_mode="always_last", show_progress="minimal", **page.model_work,
    )  # fmt: skip
    return schedule


def _schedules_tab(page: _Page) -> None:
    """2. Schedules: the signal each schedule keeps at every step, the loaded model's own among them."""
    explorer, limits = page.explorer, page.limits
    with gr.Tab(TITLES["schedules"], id="schedules"):
        gr.Markdown(f"## {TITLES['schedules']}\nHow much signal each schedule keeps at every step; "
                    "the loaded model's own schedule is the thick black line.")  # fmt: skip
        with gr.Row():
            chosen = gr.CheckboxGroup(list(panels.NAMED_SCHEDULES), value=list(panels.NAMED_SCHEDULES),
                                      label="Schedules")  # fmt: skip
            schedules_T = gr.Slider(10, 4000, value=1000, step=10, label="T (training timesteps)")
            schedules_zero_snr = gr.Checkbox(False, label="Also zero-terminal-SNR rescaled (dashed)")
        schedule_plot = gr.Plot(label="Schedules")

    @page.shown
    def plot_schedules(names, T, zero_snr, current):
        if len(names) > limits.max_schedules:
            raise ValueError(f"Choose at most {limits.max_schedules} schedules.")
        return panels.schedule_figure(limits.check_timesteps(T), list(names), zero_terminal_snr=bool(zero_snr),
                                      pipeline=explorer.pipeline_of(current))  # fmt: skip

    gr.on(
        [page.demo.load, chosen.input, schedules_T.release, schedules_zero_snr.input, page.model_status.change],
        plot_schedules, [chosen, schedules_T, schedules_zero_snr, page.session], schedule_plot, api_name="schedules",
        trigger_mode="always_last",
    )  # fmt: skip


def _steps_tab(page: _Page) -> gr.Slider:
    """3. Step by step: x_t and the predicted x_0 at every step, scrubbed, as a GIF. Returns its step slider."""
    explorer, limits = page.explorer, page.limits
    with gr.Tab(TITLES["steps"], id="steps"):
        gr.Markdown(f"## {TITLES['steps']}\nThe noisy sample $x_t$ and the model's prediction of the "
                    "clean image $x_0$ at every step.", latex_delimiters=INLINE_MATH)  # fmt: skip
        with gr.Row():
            sampler = gr.Dropdown(list(SAMPLERS), value="ddim", label="Sampler")
            steps = gr.Slider(1, 200, value=page.served_steps, step=1, label="Steps", elem_id="steps")
            eta = gr.Slider(0, 1, value=0, step=0.05, label="eta (DDIM)")
            seed = gr.Number(0, precision=0, label="Seed")
        with gr.Accordion("Class and classifier guidance", open=False):
            with gr.Row():
                class_label = gr.Textbox("", label="Class (name or id)",
                                         placeholder="a conditional model's, or the classifier's")  # fmt: skip
                classifier = gr.Textbox("", label="Classifier (folder or Hub id)",
                                        placeholder="from ddpm-hub train-classifier; empty: none")  # fmt: skip
                classifier_scale = gr.Slider(0, 20, value=1, step=0.5, label="Classifier scale")
        generate = gr.Button("Generate", variant="primary")
        trajectory = gr.State(None)
        scrub = gr.Slider(1, 20, value=20, step=1, label="Step (scrub)")
        with gr.Row():
            frame = gr.Image(label="x_t | predicted x_0", type="pil", format="png")
            with gr.Column():
                final = gr.Image(label="Final image", type="pil", format="png")
                gif = gr.File(label="Trajectory (animated GIF)")
        steps_info = gr.Markdown()

    @page.shown
    def step_by_step(sampler_name, num_steps, eta_value, seed_value, label="", classifier_name="", scale=1.0,
                     current=None, request: gr.Request = None, progress=gr.Progress()):  # fmt: skip
        pipeline = explorer.require_model(current)
        guidance = {"class_label": label.strip()} if (label or "").strip() else {}
        if (classifier_name or "").strip():
            guidance["classifier"] = explorer.classifier(classifier_name, pipeline.device)
            guidance["classifier_scale"] = float(scale)
        result = panels.sample_trajectory(
            pipeline, sampler_name, limits.check_steps(num_steps), float(eta_value), int(seed_value or 0),
            progress=page.progress(progress, request), **guidance,
        )  # fmt: skip
        progress(1.0, desc="writing the GIF")
        gif_path = panels.save_gif(result, Path(tempfile.mkdtemp(dir=explorer.work_dir)) / "trajectory.gif")
        count = len(result.timesteps)
        info = f"{result.sampler}: {count} steps in {result.seconds:.2f} s (seed {int(seed_value or 0)})."
        return (result, gr.Slider(minimum=1, maximum=count, value=count), result.frame(count - 1),
                panels.enlarge(result.image), str(gif_path), info)  # fmt: skip

    generate.click(
        step_by_step, [sampler, steps, eta, seed, class_label, classifier, classifier_scale, page.session],
        [trajectory, scrub, frame, final, gif, steps_info],
        api_name="step_by_step", **page.model_work,
    )  # fmt: skip

    @page.shown
    def show_step(result, step):
        if result is None:
            raise ValueError("Press Generate first.")
        index = min(max(int(step), 1), len(result.timesteps)) - 1
        return result.frame(index)

    scrub.change(show_step, [trajectory, scrub], frame, api_name="scrub", show_progress="hidden")
    return steps


def _compare_tab(page: _Page) -> gr.Slider:
    """4. Samplers compared: one seed and step count through each sampler, timed. Returns its step slider."""
    explorer, limits = page.explorer, page.limits
    with gr.Tab(TITLES["compare"], id="compare"):
        gr.Markdown(f"## {TITLES['compare']}\nThe same seed and number of steps through each sampler.")
        with gr.Row():
            compared = gr.CheckboxGroup(list(SAMPLERS), value=COMPARED_SAMPLERS, label="Samplers")
            compare_steps = gr.Slider(1, 200, value=page.served_steps, step=1, label="Steps", elem_id="compare-steps")
            compare_seed = gr.Number(0, precision=0, label="Seed")
        compare_button = gr.Button("Compare", variant="primary")
        comparison = gr.Gallery(label="Samples", columns=5, height="auto", format="png")
        timings = gr.Dataframe(headers=["sampler", "seconds"], label="Time taken", interactive=False)

    @page.shown
    def compare(names, num_steps, seed_value, current, request: gr.Request, progress=gr.Progress()):
        names, num_steps = limits.check_samplers(list(names)), limits.check_steps(num_steps)
        results = panels.compare_samplers(
            explorer.require_model(current), names, num_steps, int(seed_value or 0), page.progress(progress, request)
        )
        gallery = [(panels.enlarge(image, 128), f"{name}: {seconds:.2f} s") for name, image, seconds in results]
        return gallery, [[name, round(seconds, 3)] for name, _, seconds in results]

    compare_button.click(
        compare, [compared, compare_steps, compare_seed, page.session], [comparison, timings],
        api_name="compare_samplers", **page.model_work,
    )  # fmt: skip
    return compare_steps


def _upscale_tab(page: _Page) -> gr.Slider:
    """5. Upscaling: a super-resolution model's upscale of an image, beside its input and bicubic upscaling. Returns
    its step slider."""
    explorer, limits = page.explorer, page.limits
    with gr.Tab(TITLES["upscale"], id="upscale"):
        gr.Markdown(f"## {TITLES['upscale']}\nA super-resolution model (SR3) refines the bicubically upsampled input "
                    "from noise. An image at the model's low resolution is upscaled as it is; any other is cropped "
                    "to the output size and downsampled first, so the original shows what was lost.")  # fmt: skip
        with gr.Row():
            with gr.Column(scale=1):
                builtin = gr.Dropdown(list(panels.BUILTIN_IMAGES), value=panels.BUILTIN_IMAGES[0],
                                      label="Built-in image")  # fmt: skip
                upload = gr.File(label="Or upload an image", file_types=["image"], type="filepath", height=100)
                sampler = gr.Dropdown(list(SAMPLERS), value="ddim", label="Sampler")
                steps = gr.Slider(1, 200, value=page.served_steps, step=1, label="Steps", elem_id="upscale-steps")
                noise_level = gr.Number(0, precision=0, label="Noise level (conditioning augmentation)")
                seed = gr.Number(0, precision=0, label="Seed")
                upscale_button = gr.Button("Upscale", variant="primary")
            with gr.Column(scale=2):
                strip = gr.Image(label="input | bicubic | upscaled | original", type="pil", format="png")
                upscale_info = gr.Markdown()

    @page.shown
    def upscale(builtin_name, upload_path, sampler_name, num_steps, level, seed_value, current,
                request: gr.Request, progress=gr.Progress()):  # fmt: skip
        if upload_path:
            image = panels.open_upload(
                upload_path, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_image_pixels
            )
        else:
            image = panels.builtin_image(builtin_name)
        result = panels.upscale_image(
            explorer.require_model(current), image, sampler_name, limits.check_steps(num_steps), int(level or 0),
            int(seed_value or 0), progress=page.progress(progress, request),
        )  # fmt: skip
        return result.strip, f"{sampler_name}: {int(num_steps)} steps in {result.seconds:.2f} s."

    upscale_button.click(
        upscale, [builtin, upload, sampler, steps, noise_level, seed, page.session], [strip, upscale_info],
        api_name="upscale", **page.model_work,
    )  # fmt: skip
    return steps


def _text2image_tab(page: _Page, model: str, outputs_dir: str | Path) -> None:
    """6. Text to image: Stable Diffusion through `ddpm_hub.Text2Image`, loaded at the first Generate."""
    explorer, limits = page.explorer, page.limits
    with gr.Tab(TITLES["text2image"], id="text2image"):
        gr.Markdown(f"## {TITLES['text2image']}\nStable Diffusion through `ddpm_hub.Text2Image`; the model "
                    f"loads the first time you press Generate. Images and their metadata are saved in "
                    f"`{outputs_dir}`.")  # fmt: skip
        with gr.Row():
            with gr.Column():
                t2i_model = gr.Textbox(model, label="Model (Hub id or folder)")
                prompt = gr.Textbox(label="Prompt", value="a watercolour fox in the snow")
                negative = gr.Textbox(label="Negative prompt")
                with gr.Row():
                    t2i_scheduler = gr.Dropdown([panels.MODEL_SCHEDULER, *SAMPLERS],
                                                value=panels.MODEL_SCHEDULER, label="Scheduler")  # fmt: skip
                    t2i_steps = gr.Slider(1, 150, value=25, step=1, label="Steps")
                    guidance = gr.Slider(0, 20, value=7.5, step=0.5, label="Guidance scale")
                with gr.Row():
                    height = gr.Number(0, precision=0, label="Height (0: the model's)")
                    width = gr.Number(0, precision=0, label="Width (0: the model's)")
                    t2i_seed = gr.Number(0, precision=0, label="Seed")
                with gr.Row():
                    clip_on = gr.Checkbox(False, label="CLIP score (how well the image follows the prompt)")
                    clip_model = gr.Textbox(DEFAULT_CLIP_MODEL, label="CLIP model")
                t2i_button = gr.Button("Generate", variant="primary")
            with gr.Column():
                t2i_image = gr.Image(label="Image", type="pil", format="png")
                clip_shown = gr.Number(label="CLIP score: max(100 cos(image, prompt), 0)", interactive=False)
                t2i_metadata = gr.JSON(label="Saved metadata")
        _upscale_controls(page, t2i_image, t2i_metadata, clip_on, clip_model)

    @page.shown
    def text_to_image(model_id, text, negative_text, scheduler_name, num_steps, scale, h, w, seed_value, score,
                      clip_id, request: gr.Request, progress=gr.Progress(track_tqdm=True)):  # fmt: skip
        page.access.check(model_id)
        clip_id = _clip_choice(page, score, clip_id)
        height_px, width_px = int(h or 0) or None, int(w or 0) or None
        limits.check_text2image_size(height_px, width_px)
        image, metadata, _ = explorer.text2image.generate(
            model_id, text, negative_text, scheduler_name,
            limits.check_steps(num_steps, limits.max_text2image_steps), float(scale), height_px, width_px,
            int(seed_value or 0), progress=page.progress(progress, request), clip_model=clip_id,
        )  # fmt: skip
        return image, metadata

    generated = t2i_button.click(
        text_to_image,
        [t2i_model, prompt, negative, t2i_scheduler, t2i_steps, guidance, height, width, t2i_seed, clip_on, clip_model],
        [t2i_image, t2i_metadata],
        api_name="text_to_image",
        **page.model_work,
    )
    _show_clip_score(generated, t2i_metadata, clip_shown)


def _show_clip_score(event, metadata, shown) -> None:
    """After `event`, show the CLIP score saved in `metadata` (empty when the image was not scored)."""
    event.then(lambda saved: (saved or {}).get("clip_score"), metadata, shown, api_visibility="private")


def _clip_choice(page: _Page, score: bool, clip_id: str) -> str | None:
    """The CLIP model to score with (one a shared explorer may open), or `None` when the score is off."""
    if not score:
        return None
    clip_id = (clip_id or "").strip() or DEFAULT_CLIP_MODEL
    page.access.check(clip_id)
    return clip_id


def _upscale_controls(page: _Page, image, metadata, clip_on, clip_model) -> None:
    """5b. Upscale the generated image 4x (the x4 upscaler, under the image's own prompt and seed), scored as the
    generated one is."""
    explorer, limits = page.explorer, page.limits
    with gr.Accordion("Upscale 4x", open=False):
        with gr.Row():
            with gr.Column():
                upscaler_model = gr.Textbox(DEFAULT_UPSCALER, label="Upscaler (Hub id or folder)")
                with gr.Row():
                    noise_level = gr.Slider(0, 350, value=20, step=1, label="Noise level (more: more new detail)")
                    up_steps = gr.Slider(1, 150, value=25, step=1, label="Steps")
                    up_guidance = gr.Slider(0, 20, value=9.0, step=0.5, label="Guidance scale")
                up_button = gr.Button("Upscale 4x")
            with gr.Column():
                up_image = gr.Image(label="Upscaled image", type="pil", format="png")
                up_clip_shown = gr.Number(label="CLIP score of the upscaled image", interactive=False)
                up_metadata = gr.JSON(label="Saved metadata (upscaled)")

    @page.shown
    def upscale(source, source_metadata, upscaler_id, level, num_steps, scale, score, clip_id, request: gr.Request,
                progress=gr.Progress(track_tqdm=True)):  # fmt: skip
        page.access.check(upscaler_id)
        clip_id = _clip_choice(page, score, clip_id)
        if source is not None:
            limits.check_upscale_size(source.height, source.width)
        steps = limits.check_steps(num_steps, limits.max_text2image_steps)
        upscaled, saved, _ = explorer.text2image.upscale(
            source, source_metadata, upscaler_id, int(level), steps, float(scale),
            progress=page.progress(progress, request), clip_model=clip_id,
        )  # fmt: skip
        return upscaled, saved

    inputs = [image, metadata, upscaler_model, noise_level, up_steps, up_guidance, clip_on, clip_model]
    event = up_button.click(upscale, inputs, [up_image, up_metadata], api_name="upscale_image", **page.model_work)
    _show_clip_score(event, up_metadata, up_clip_shown)


def _monitor_tab(page: _Page, run_dir: str | None) -> None:
    """7. Training monitor: a training output folder's metrics, previews and settings, re-read while it runs."""
    with gr.Tab(TITLES["monitor"], id="monitor"):
        gr.Markdown(f"## {TITLES['monitor']}\nLoss (and FID/KID once logged), preview grids and settings "
                    "of a training output folder, re-read while the run goes on.")  # fmt: skip
        with gr.Row():
            run_box = gr.Textbox(run_dir or "", label="Training output folder", scale=4)
            refresh = gr.Button("Refresh", scale=1)
            auto = gr.Checkbox(True, label=f"Refresh every {REFRESH_SECONDS:g} s", scale=1)
        timer = gr.Timer(REFRESH_SECONDS, active=bool(run_dir))
        run_status = gr.Markdown()
        loss_plot = gr.Plot(label="Metrics")
        previews = gr.Gallery(label="Preview grids, newest first", columns=4, height="auto", format="png")
        settings = gr.JSON(label="Run settings (training_config.json)")

    @page.shown
    def watch(folder):
        if not folder or not str(folder).strip():
            return "Enter a training output folder (`--output_dir` of train_unconditional.py).", None, [], {}
        page.access.check(str(folder).strip(), "training folders")
        run = monitor.read_run(folder)
        # Opened here, not served by path: the folder may be anywhere, and Gradio serves only files it copied.
        latest = run.previews[: monitor.PREVIEWS_SHOWN]
        shown = [(monitor.open_preview(path), f"step {step}") for path, step in latest]
        return run.status(), monitor.metrics_figure(run), shown, run.config

    outputs = [run_status, loss_plot, previews, settings]
    gr.on([page.demo.load, refresh.click, run_box.submit], watch, run_box, outputs, api_name="training_monitor")
    timer.tick(watch, run_box, outputs, api_visibility="private", show_progress="hidden")
    for changed in (auto.change, run_box.change):
        changed(lambda on, folder: gr.Timer(active=bool(on and folder)), [auto, run_box], timer,
                api_visibility="private")  # fmt: skip


def launch(
    demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False, block: bool = True
) -> str:
    """Start `demo` on `host:port` (the first free port from 7860 when `port` is None); return its local URL.

    Served beyond 127.0.0.1 (or shared), the explorer opens only what it was started with (see `access`).
    """
    explorer = demo.explorer
    if is_exposed(host, share):
        explorer.access.exposed = True
    limits = explorer.limits
    demo.queue(default_concurrency_limit=1, max_size=limits.queue_size).launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=limits.max_upload_bytes,
        prevent_thread_lock=True,
        quiet=True,
        show_error=True,
        ssr_mode=False,
        theme=THEME,
        footer_links=[],
    )
    url = demo.local_url
    if block:
        print(f"ddpm-hub explorer: {url}  (Ctrl+C to stop)", flush=True)
        try:
            demo.block_thread()
        except KeyboardInterrupt:
            pass
    return url
