"""ONNX export of one-step models, and the upscaler that runs the exported graph with onnxruntime.

`export_onnx` writes the whole one-step inference of a model folder as ONE graph: the LR image reflect-padded
to the model's multiple, y = the codec's latent of its bicubic upsampling, x_T from the family's prior, the one
network pass at the model's own timestep, the decode, the crop back to scale x the input size. Height, width
and batch are dynamic.

- The default graph has one input, `image` (N, 3, H, W, float32 in [0, 1]), and one output, `output`
  (N, 3, sH, sW in [0, 1]): what chaiNNer's ONNX node and other upscaler tools feed. The method's noise (the
  standard normal of x_T = y + kappa sqrt(eta_T) eps for ResShift-family models, a generator's extra noise
  channels for RSD) is drawn inside the graph (RandomNormalLike), afresh at every run, as the torch upscaler
  draws it with seed=None (a seed has no effect on such a graph).
- `noise_input=True` (`instantsr export --noise-input`) makes that noise explicit inputs instead: `noise`
  (N, C, h, w, the latent's shape) and, for models with extra noise channels, `lq_noise` (N, k, H', W', the
  padded LR's shape). `OnnxUpscaler` feeds them from the seed exactly as the torch upscaler draws them, so that a
  seed gives torch's output to float rounding.
- `fp16=True`: the model runs in half precision inside the graph; input and output stay float32 (the bicubic
  upsampling and the final scaling too, as in the torch upscaler), so callers need not know.

Models that need more than one network pass (a teacher at its multi-step default) are refused: a graph holds one
pass. `OnnxUpscaler` is an `instantsr.pipeline.ImageUpscaler`, so `instantsr upscale --onnx` runs it through the
torch path's file loop, colour fix and atomic writes. It runs whole images only: the exact tiles of
`instantsr upscale --tile` run our UNets layer by layer in torch, and tiles of the whole network, blended, leave
seams with a GroupNorm UNet (README, Tiling).

Nothing here is imported by the rest of instantsr: onnx, onnxscript and onnxruntime are the `onnx` extra.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from . import __version__
from .diffusion.family import Condition
from .model import SRModel
from .pipeline import (ImageUpscaler, check_lr_batch, finish_output, load_model, resolve_model_path, seeded_noise,
                       step_seed)

__all__ = ["OneStepGraph", "OnnxUpscaler", "export_onnx", "prior_coefficients"]

IMAGE, NOISE, LQ_NOISE, OUTPUT = "image", "noise", "lq_noise", "output"
META = "instantsr."  # prefix of the graph's metadata keys
INSTALL = 'pip install "instantsr[onnx]"'
MIN_OPSET = 18  # torch's (dynamo) exporter writes 18 and converts down from there, which fails for our Pad


def require(module: str):
    """Import an optional dependency, or a one-line RuntimeError saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise RuntimeError(f"{module} is not installed; {INSTALL}") from None


# ---- the graph ----------------------------------------------------------------------------------------------
def prior_coefficients(model: SRModel) -> tuple[float, float]:
    """(a, b) with model.prior(cond, noise) == a * y + b * noise, found by evaluating the prior once.

    Every family's x_T is such a combination (ResShift: y + kappa sqrt(eta_T) eps; VP: eps; VP from the LR
    latent: y). It is evaluated here, eagerly, because the families compute their schedule constants with torch
    ops and Python floats, which a traced graph would hold as data-dependent values."""
    shape = (1, model.codec.latent_channels, 1, 1)

    def full(value: float) -> torch.Tensor:
        return torch.full(shape, float(value), dtype=torch.float64)

    def prior(y: float, noise: float) -> torch.Tensor:
        return model.prior(Condition(full(0), full(y)), full(noise)).double()

    a, b = prior(1, 0), prior(0, 1)
    uniform = bool((a == a.flatten()[0]).all() and (b == b.flatten()[0]).all())  # one number each, not per channel
    if not (uniform and torch.equal(prior(0, 0), 0 * a) and torch.allclose(prior(2, -3), 2 * a - 3 * b)):
        raise ValueError(f"cannot export a {model.family} model: its prior is not a * y + b * noise")
    return float(a.flatten()[0]), float(b.flatten()[0])


def bicubic_kernel(scale: int, channels: int = 3, a: float = -0.75) -> torch.Tensor:
    """Weights (channels * scale^2, 1, 5, 5) of a grouped conv that, on an input replicate-padded by 2 and followed
    by pixel_shuffle(scale), is torch's bicubic upsampling by the integer `scale` (align_corners=False).

    Output pixel s*i + p reads the source coordinate i + (p + 0.5) / s - 0.5, so its four cubic taps (Keys, a =
    -0.75 as torch) fall within i-2..i+2: one 5-tap filter per phase p, separable; torch clamps the taps at the
    borders, which is replicate padding."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    taps = torch.zeros(scale, 5, dtype=torch.float64)
    for p in range(scale):
        d = (p + 0.5) / scale - 0.5
        first = math.floor(d)
        t = d - first
        for k, weight in zip(range(first - 1, first + 3), (far(t + 1), near(t), near(1 - t), far(2 - t))):
            taps[p, k + 2] = weight
    kernel = (taps[:, None, :, None] * taps[None, :, None, :]).reshape(scale * scale, 1, 5, 5)
    return kernel.repeat(channels, 1, 1, 1).float()


def _pad_index(n, multiple: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Source rows (or columns) of a side of length n padded at the end to a multiple: (reflect, replicate)."""
    i = torch.arange((n + multiple - 1) // multiple * multiple, device=device)
    return torch.where(i < n, i, 2 * (n - 1) - i), i.clamp(max=n - 1)


class OneStepGraph(nn.Module):
    """The one-step inference of `Upscaler._restore` as one traceable module: image (and noise) -> SR image.

    Every step is the torch upscaler's, in its order and precision, so that the exported graph gives its output;
    where the code differs it is to keep the traced shapes symbolic (padding by index) or for speed (bicubic)."""

    def __init__(self, model: SRModel, noise_input: bool = False):
        super().__init__()
        passes = model.num_passes(model.steps)
        if passes != 1:
            raise ValueError(f"a {model.method} model at its {model.steps} steps runs {passes} network passes; "
                             "`instantsr export` writes one-step models (one pass) only")
        self.model = model.eval()
        self.a, self.b = prior_coefficients(model)
        self.noise_input = noise_input
        self.dtype = next(model.parameters()).dtype
        self.register_buffer("bicubic", bicubic_kernel(model.scale), persistent=False)

    @property
    def input_names(self) -> list[str]:
        """The graph's inputs: the image, and with `noise_input` the noise the model actually uses."""
        names = [IMAGE]
        if self.noise_input and self.b != 0:
            names.append(NOISE)
        if self.noise_input and self.model.noise_channels:
            names.append(LQ_NOISE)
        return names

    def pad(self, image: torch.Tensor) -> torch.Tensor:
        """`tiling.pad_to_multiple` with symbolic sizes: reflect at the bottom and right, replicate when a pad is
        not shorter than its side (Python ifs on the sizes would fix them at the traced example's)."""
        h, w = image.shape[-2:]
        reflect_h, replicate_h = _pad_index(h, self.model.multiple, image.device)
        reflect_w, replicate_w = _pad_index(w, self.model.multiple, image.device)
        # a reflected index is negative exactly when a pad is not shorter than its side: torch then replicates
        reflect = (reflect_h.min() >= 0) & (reflect_w.min() >= 0)
        rows, cols = torch.where(reflect, reflect_h, replicate_h), torch.where(reflect, reflect_w, replicate_w)
        return image.index_select(2, rows).index_select(3, cols)

    def forward(self, image: torch.Tensor, noise: torch.Tensor | None = None,
                lq_noise: torch.Tensor | None = None) -> torch.Tensor:
        model, dtype, s = self.model, self.dtype, self.model.scale
        h, w = image.shape[-2:]
        lq = self.pad(image.float()) * 2 - 1
        # `bicubic_upsample` (in float32, as the torch upscaler does it) as a conv: onnxruntime's cubic Resize
        # took a quarter of the whole graph's time on the CPU (86 of 350 ms at 128 -> 512 px), the conv 5 ms
        up = F.pixel_shuffle(F.conv2d(F.pad(lq, (2, 2, 2, 2), mode="replicate"), self.bicubic, groups=3), s)
        y = model.codec.encode(up.to(dtype))
        k = model.noise_channels
        if k:  # RSD's generator: standard noise channels after the LR image
            if lq_noise is None:
                lq_noise = torch.randn_like(lq[:, :1].expand(-1, k, -1, -1))
            lq = torch.cat([lq, lq_noise.float()], 1)
        cond = Condition(lq.to(dtype), y)
        x = y * self.a if self.a != 1 else y
        if self.b != 0:
            if noise is None:
                noise = torch.randn_like(y, dtype=torch.float32)  # drawn in float32, as the torch upscaler does
            noise = noise.to(dtype) * self.b if self.b != 1 else noise.to(dtype)
            x = x + noise if self.a != 0 else noise
        x0 = model.sample(x, cond, model.steps)
        sr = model.codec.decode(x0).float()[..., : h * s, : w * s]
        return ((sr + 1) / 2).clamp(0, 1)

    def example_inputs(self) -> dict[str, torch.Tensor]:
        """Inputs to trace with: sizes that are not multiples of the model's, distinct, and a batch of 2 (sizes of
        1 would be traced as constants)."""
        m = self.model.multiple
        h = max(2 * m, 16) + 1
        w = h + 2 * m + 2
        image = torch.rand(2, 3, h, w)
        hp, wp = self.pad(image).shape[-2:]
        codec, s = self.model.codec, self.model.scale
        latent = (codec.latent_channels, hp * s // codec.scale_factor, wp * s // codec.scale_factor)
        inputs = {IMAGE: image, NOISE: torch.randn(2, *latent),
                  LQ_NOISE: torch.randn(2, self.model.noise_channels, hp, wp)}
        return {name: inputs[name] for name in self.input_names}

    def metadata(self, source: str) -> dict[str, str]:
        """What `OnnxUpscaler` (and a person) needs to know about the graph, as ONNX metadata_props."""
        m = self.model
        facts = {"version": __version__, "model": source, "method": m.method, "family": m.family, "scale": m.scale,
                 "multiple": m.multiple, "steps": m.steps, "dtype": str(self.dtype).replace("torch.", ""),
                 "latent_channels": m.codec.latent_channels, "latent_factor": m.codec.scale_factor,
                 "noise_channels": m.noise_channels, "inputs": ",".join(self.input_names)}
        return {META + k: str(v) for k, v in facts.items()}


# ---- export ---------------------------------------------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # terminal colour codes (torch's exporter writes \x1b[96m...)
_CLASS_PREFIX = re.compile(r"^<class '[\w.]+'>:\s*")  # "<class 'AssertionError'>: ..." of its exception summary
_ATEN_OP = re.compile(r"target=torch\.ops\.(\w+\.\w+)")  # the node that could not be translated


def export_failure(e: BaseException, limit: int = 300) -> str:
    """The cause of an export failure in one line of plain text. torch's exporter raises pages of text with
    colour codes, its first line a generic 'Failed to convert the exported program ... This is step 3/3', the
    cause (onnxscript's 'only 4D query, key, and value are supported') deepest in the exception chain.

    The chain is read innermost first, its lines without colour codes: the first that says what is not
    supported, else the innermost exception's first line; the aten op of the node that failed goes before it
    when the text names one."""
    chain, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    texts = [_ANSI.sub("", str(x)) for x in reversed(chain)]  # innermost first
    lines = [_CLASS_PREFIX.sub("", line.strip()).strip() for text in texts for line in text.splitlines()]
    lines = [line for line in lines if line.strip("⬆️ ")]
    telling = [line for line in lines if "supported" in line.lower()]
    reason = telling[0] if telling else lines[0] if lines else type(chain[-1]).__name__
    op = next((m.group(1) for m in map(_ATEN_OP.search, texts) if m), None)
    if op and op.split(".")[-1] not in reason:
        reason = f"{op}: {reason}"
    return reason if len(reason) <= limit else reason[:limit - 3] + "..."


def export_onnx(model: SRModel | str | Path | None, output: str | Path, fp16: bool = False, opset: int | None = None,
                noise_input: bool = False) -> Path:
    """Write `model` (a model or run folder, None for the shipped default, or an SRModel) as one ONNX graph at
    `output`, atomically; see the module docstring. Returns the path written."""
    require("onnx")
    require("onnxscript")  # torch's exporter needs it; told here in one line rather than deep in torch
    if opset is not None and opset < MIN_OPSET:  # torch would write 18 after a failed conversion, and a traceback
        raise ValueError(f"--opset {opset}: torch's ONNX exporter writes opset {MIN_OPSET} and above")
    output = Path(output)
    dtype = torch.float16 if fp16 else torch.float32
    if isinstance(model, SRModel):  # traced on the CPU; the caller's model is left as it is
        first = next(model.parameters())
        if first.dtype != dtype or first.device.type != "cpu":
            model = copy.deepcopy(model).to(device="cpu", dtype=dtype)
        where, source = f"{model.method} model", model.method
    else:
        folder = resolve_model_path(model)
        where, source, model = str(folder), folder.name, load_model(folder, "cpu", dtype)
    try:
        graph = OneStepGraph(model.eval(), noise_input)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    inputs = graph.example_inputs()
    dynamic = {name: {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
               for name in inputs}
    # "torchvision is not installed" and the like, logged at every export: kept quiet, our errors say what failed
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # non-strict torch.export: Python runs as written (the prior is a constant already); then ONNX
            exported = torch.export.export(graph, (), kwargs=inputs, dynamic_shapes=dynamic, strict=False)
            program = torch.onnx.export(exported, (), input_names=list(inputs), output_names=[OUTPUT],
                                        opset_version=opset, verbose=False)
    except Exception as e:  # the exporters raise many kinds, with pages of text: one line, naming the model
        raise RuntimeError(f"{where}: cannot export to ONNX ({export_failure(e)})") from None
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    written = program.model.opset_imports.get("", opset)
    if opset is not None and written != opset:
        raise ValueError(f"--opset {opset}: torch's ONNX exporter could only write opset {written} for this model")
    program.model.metadata_props.update(graph.metadata(source))
    program.model.doc_string = (f"instantsr {model.method} x{model.scale}, one step: image (N,3,H,W) in [0, 1] -> "
                                f"(N,3,{model.scale}H,{model.scale}W)")
    output.parent.mkdir(parents=True, exist_ok=True)
    # written into a folder beside the output and moved into place: no half-written .onnx after a crash, and
    # weights over 2 GB go to OUTPUT.data beside it, whose name the graph records
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".instantsr-export-") as tmp:
        program.save(Path(tmp) / output.name)
        files = sorted(Path(tmp).iterdir(), key=lambda p: p.name == output.name)  # the .onnx itself last
        for f in files:
            os.replace(f, output.parent / f.name)
    return output


# ---- running it -----------------------------------------------------------------------------------------------
def _one_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def providers_for(device: str | None, available: list[str]) -> list:
    """onnxruntime execution providers for a --device: None: CUDA when this onnxruntime has it, else the CPU."""
    if device is None:
        device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    kind, _, index = str(device).partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ValueError(f"--device {device}: this onnxruntime has no CUDA provider (it has "
                             f"{', '.join(available)}); pip install onnxruntime-gpu, or use --device cpu")
        return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
    raise ValueError(f"--device {device}: onnxruntime runs on cpu or cuda[:N]")


class OnnxUpscaler(ImageUpscaler):
    """A graph written by `export_onnx`, run with onnxruntime behind the `ImageUpscaler` interface."""

    def __init__(self, path: str | Path, device: str | None = None, threads: int | None = None):
        ort = require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        options = ort.SessionOptions()
        # as many threads as torch uses, so that a torch and an onnxruntime figure compare like with like
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        providers = providers_for(device, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # onnxruntime's own exceptions are not OSError/ValueError: one line here
            raise ValueError(f"{path}: not a readable ONNX graph ({_one_line(e)})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if META + "scale" not in meta:
            raise ValueError(f"{path}: not a graph written by `instantsr export` (no instantsr metadata); export "
                             "the model with `instantsr export -m MODEL_DIR -o FILE.onnx`")
        self.name, self.meta = str(path), {k[len(META):]: v for k, v in meta.items() if k.startswith(META)}
        self.scale, self.steps = int(self.meta["scale"]), int(self.meta["steps"])
        self.multiple, self.factor = int(self.meta["multiple"]), int(self.meta["latent_factor"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def upscale_tensor(self, lq: torch.Tensor, steps: int | None = None, seed: int | None = None,
                       tile: int | None = None, tile_overlap: int = 32, color_fix: str = "none",
                       batch_size: int = 4, sampler: str | None = None, progress: bool | str = False) -> torch.Tensor:
        """LR batch (N,3,h,w) in [0, 1] -> SR batch (N,3,h*scale,w*scale) in [0, 1], float32 on the CPU."""
        check_lr_batch(lq, color_fix)
        if tile:
            raise ValueError("an ONNX graph runs whole images (no --tile); tile with -m MODEL_DIR, whose tiles "
                             "are exact")
        if steps is not None and steps != self.steps:
            raise ValueError(f"{self.name} runs {self.steps} step(s), fixed at export; not {steps}")
        lq = lq.detach().float().cpu()
        out = [self._run(lq[i:i + max(1, batch_size)], seed) for i in range(0, lq.shape[0], max(1, batch_size))]
        return finish_output(torch.cat(out), lq, self.scale, color_fix)

    def _run(self, lq: torch.Tensor, seed: int | None) -> torch.Tensor:
        feed = {IMAGE: lq.contiguous().numpy()}
        n, m = lq.shape[0], self.multiple
        hp, wp = -(-lq.shape[-2] // m) * m, -(-lq.shape[-1] // m) * m  # the graph pads to this
        if NOISE in self.inputs:  # as `Upscaler._noise`: per image from the seed alone
            s, f = self.scale, self.factor
            feed[NOISE] = seeded_noise((n, int(self.meta["latent_channels"]), hp * s // f, wp * s // f), seed).numpy()
        if LQ_NOISE in self.inputs:  # as `encode_condition` draws it with the upscaler's generator (`step_seed`)
            generator = torch.Generator().manual_seed(step_seed(seed)) if seed is not None else None
            feed[LQ_NOISE] = torch.randn((n, int(self.meta["noise_channels"]), hp, wp), generator=generator).numpy()
        try:
            return torch.from_numpy(self.session.run([OUTPUT], feed)[0])
        except Exception as e:
            msg = _one_line(e)
            if "alloc" in msg.lower():  # without "out of memory" in it: the torch path's hint (--tile) is not for us
                msg = f"onnxruntime could not allocate memory ({msg}); upscale this image with -m MODEL_DIR --tile 256"
            raise RuntimeError(msg) from None
