"""`instantsr demo`: a local web page to upscale images (Gradio, `pip install "instantsr[demo]"`).

Drop one image or several, pick a model (the default, a model folder, or an ONNX graph of `instantsr export`),
set steps / tile / colour fix where the model has them, and look at each result against bicubic with a
before/after slider; the results download as files. Big images run tiled with a progress bar; a failure shows
the CLI's one line. Offline: no hub, no analytics, no share link, no web fonts; it listens on 127.0.0.1 only
unless told otherwise.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: nothing leaves the machine

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from .evaluate import bicubic_baseline  # noqa: E402
from .io import read_image, save_image  # noqa: E402
from .pipeline import FILE_ERRORS, Upscaler, default_device, default_dtype, failure_line  # noqa: E402

# system fonts only: the default theme would fetch Google's
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
SLIDER_MAX_SIDE = 2048  # px of the before/after pair shown in the page (the downloads are full size)


class Models:
    """Upscalers loaded once per (model, device): 'default', a model folder, or an .onnx file."""

    def __init__(self, device: str | None = None):
        self.device = default_device(device)
        self._loaded: dict[str, object] = {}

    def get(self, spec: str):
        spec = (spec or "default").strip()
        if spec not in self._loaded:
            if spec.endswith(".onnx"):
                from .onnx_export import OnnxUpscaler  # the onnx extra

                if not Path(spec).is_file():
                    raise FileNotFoundError(f"{spec}: no such ONNX file")
                self._loaded[spec] = OnnxUpscaler(spec)
            else:
                self._loaded[spec] = Upscaler.from_pretrained(None if spec == "default" else spec, self.device,
                                                              default_dtype(self.device))
        return self._loaded[spec]


def model_options(models: Models, spec: str) -> tuple[dict, dict]:
    """What the model takes: steps (a teacher: 1 to its max) and tile (torch models); every model takes the
    colour fix."""
    try:
        up = models.get(spec)
    except FILE_ERRORS as e:
        raise gr.Error(failure_line(spec, e)) from None
    model = getattr(up, "model", None)
    many = model is not None and model.max_steps > 1
    steps = gr.update(visible=many, maximum=model.max_steps if many else 1, value=model.steps if model else 1)
    return steps, gr.update(visible=model is not None)


def upscale_files(models: Models, files: list[str] | None, spec: str, steps: int, tile: int, color_fix: str,
                  out_dir: Path, progress=gr.Progress(track_tqdm=True)):
    """Upscale the dropped files into out_dir: (before/after pair of the first, output paths, notes)."""
    if not files:
        raise gr.Error("drop one or more images first")
    try:
        up = models.get(spec)
    except FILE_ERRORS as e:
        raise gr.Error(failure_line(spec, e)) from None
    model = getattr(up, "model", None)
    options = {"seed": 0, "color_fix": color_fix}
    if model is not None:
        options.update(steps=int(steps) if model.max_steps > 1 else None, tile=int(tile) or None)
    outputs, failed, pair = [], [], None
    for path in progress.tqdm([Path(f) for f in files], desc="images"):
        try:
            image = read_image(path)
            sr = up.upscale_loaded([image], progress="tiles", **options)[0]
        except FILE_ERRORS as e:  # named by its file name, not by the page's upload folder
            failed.append(failure_line(path, e).replace(str(path), path.name))
            continue
        dst = out_dir / f"{path.stem}_x{up.scale}.png"
        save_image(sr.rgb, dst, bits=sr.bits, alpha=sr.alpha, grey=sr.grey)
        outputs.append(str(dst))
        if pair is None:
            bicubic = bicubic_baseline(image.rgb, tuple(sr.rgb.shape[-2:]))
            pair = (_shown(bicubic), _shown(sr.rgb))
    if not outputs:
        raise gr.Error("; ".join(failed))
    return pair, outputs, "\n".join(failed) or f"{len(outputs)} upscaled"


def _shown(rgb: torch.Tensor):
    """HxWx3 uint8 for the slider, at most SLIDER_MAX_SIDE px a side (nearest: pixels stay pixels)."""
    side = max(rgb.shape[-2:])
    if side > SLIDER_MAX_SIDE:
        step = -(-side // SLIDER_MAX_SIDE)
        rgb = rgb[:, ::step, ::step]
    return (rgb.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def build_demo(model: str = "default", device: str | None = None) -> gr.Blocks:
    models = Models(device)
    out_dir = Path(tempfile.mkdtemp(prefix="instantsr-demo-"))
    with gr.Blocks(title="instantsr", analytics_enabled=False) as demo:
        gr.Markdown("# instantsr\nOne-step diffusion super-resolution. Drop images, press **Upscale**; drag the "
                    "slider to compare with bicubic.")
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="images", file_count="multiple", file_types=["image"], elem_id="images")
                spec = gr.Textbox(label="model", value=model, elem_id="model",
                                  info="default, a model folder, or an .onnx file of `instantsr export`")
                steps = gr.Slider(1, 15, value=1, step=1, label="steps", visible=False, elem_id="steps")
                tile = gr.Number(value=0, precision=0, minimum=0, label="tile (LR px; 0 = whole image)",
                                 elem_id="tile")
                color_fix = gr.Radio(["none", "wavelet", "adain"], value="none", label="colour fix")
                run = gr.Button("Upscale", variant="primary", elem_id="upscale")
            with gr.Column(scale=2):
                slider = gr.ImageSlider(label="bicubic | instantsr", elem_id="slider", buttons=["fullscreen"])
                results = gr.File(label="results", file_count="multiple", elem_id="results", interactive=False)
                notes = gr.Textbox(label="status", interactive=False, elem_id="status")
        spec.submit(lambda s: model_options(models, s), spec, [steps, tile])
        demo.load(lambda s: model_options(models, s), spec, [steps, tile])
        run.click(lambda *a: upscale_files(models, *a, out_dir=out_dir), [files, spec, steps, tile, color_fix],
                  [slider, results, notes])
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, block: bool = True):
    """Serve the page locally (never a share link), with system fonts."""
    return demo.launch(server_name=host, server_port=port, share=False, theme=THEME, prevent_thread_lock=not block,
                       quiet=True, footer_links=[], show_error=True)
