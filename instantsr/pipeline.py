"""Inference: upscale images of any size, kind and bit depth with an `SRModel`.

- `Upscaler` loads a model folder once; `upscaler(image)` takes a PIL image, a tensor, a numpy array or a list
  of them and gives back the same kind (grey stays grey, alpha is kept, 16 bits stay 16 bits).
- Large images: `TiledDenoiser` runs the denoiser on overlapping latent tiles at EVERY sampling step and blends
  the x0 predictions, so tiles agree and every sampler works unchanged; the noise is drawn once for the whole
  latent. Tiles are blended with a Tukey window: flat in the middle and at image borders, raised-cosine ramps
  exactly over each overlap, so the windows of neighbouring tiles sum to 1 and no weight is ever 0.
- Each image's noise comes from `seed` alone: the same image and seed give the same output in any batch.
- `upscale_paths` is the file loop of `instantsr upscale`: atomic writes, existing outputs skipped, a failed
  file reported in one line, files shared between processes by rank.
"""

from __future__ import annotations

import itertools
import math
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from .codecs import PixelUnshuffleCodec
from .io import LoadedImage, read_image, save_image, to_array
from .model import ModelFolderError, SRModel, bicubic_upsample

__all__ = [
    "DEFAULT_MODEL_DIR",
    "Upscaler",
    "TiledDenoiser",
    "UpscaleCounts",
    "load_model",
    "upscale_paths",
    "output_path",
    "tile_spans",
    "span_windows",
    "blend_tiles",
    "pad_to_multiple",
    "wavelet_color_fix",
    "adain_color_fix",
]

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
MIN_SIDE = 8  # smallest LR side accepted
COLOR_FIXES = ("none", "wavelet", "adain")
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
AUTO_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # kept by --ext auto; others become .png


# ---- model loading ----------------------------------------------------------------------------------------
def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """torch dtype from a dtype or a name (fp32, fp16, bf16, ...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose fp32, fp16 or bf16") from None


def resolve_model_path(path_or_default: str | Path | None = None) -> Path:
    """The model folder: the given one, or the one shipped in the package for None / 'default'."""
    if path_or_default is None or str(path_or_default) == "default":
        if not (DEFAULT_MODEL_DIR / "model_index.json").is_file():
            raise ModelFolderError(f"no default model is shipped at {DEFAULT_MODEL_DIR}; "
                                   "pass a model folder (-m MODEL_DIR)")
        return DEFAULT_MODEL_DIR
    return Path(path_or_default)


def load_model(path_or_default: str | Path | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype | str = torch.float32) -> SRModel:
    """An SRModel from a folder (None / 'default': the packaged model), in eval mode."""
    return SRModel.from_pretrained(resolve_model_path(path_or_default), device=device, dtype=parse_dtype(dtype))


# ---- tiling -----------------------------------------------------------------------------------------------
def tile_spans(length: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """[start, end) of equal tiles covering [0, length), evenly spaced, starts on multiples of `align`."""
    if length % align:
        raise ValueError(f"length {length} is not a multiple of {align}")
    tile = max(align, tile // align * align)
    if length <= tile:
        return [(0, length)]
    overlap = min(max(overlap, 0), tile // 2)
    n = math.ceil((length - tile) / (tile - overlap)) + 1
    step = (length - tile) / (n - 1)
    starts = sorted({round(k * step / align) * align for k in range(n)})
    return [(s, s + tile) for s in starts]


def _ramp(n: int) -> torch.Tensor:
    """Raised-cosine ramp up over n samples, strictly between 0 and 1; ramp + flipped ramp = 1."""
    i = torch.arange(n, dtype=torch.float64)
    return torch.sin(math.pi * (i + 0.5) / (2 * n)) ** 2


def span_windows(spans: Sequence[tuple[int, int]], scale: int = 1) -> list[torch.Tensor]:
    """1-D Tukey windows of the tiles at `scale`x resolution: ramps exactly over the overlaps, flat elsewhere."""
    windows = []
    for k, (start, end) in enumerate(spans):
        w = torch.ones((end - start) * scale, dtype=torch.float64)
        if k > 0 and spans[k - 1][1] > start:
            n = min((spans[k - 1][1] - start) * scale, len(w))
            w[:n] *= _ramp(n)
        if k + 1 < len(spans) and spans[k + 1][0] < end:
            n = min((end - spans[k + 1][0]) * scale, len(w))
            w[len(w) - n:] *= _ramp(n).flip(0)
        windows.append(w.float())
    return windows


def _as_int(x: Fraction, what: str) -> int:
    if x.denominator != 1:
        raise ValueError(f"{what} is not a whole number of pixels ({x})")
    return int(x)


def _ratios(inputs: Sequence[torch.Tensor], grid: tuple[int, int]) -> list[tuple[Fraction, Fraction]]:
    return [(Fraction(t.shape[-2], grid[0]), Fraction(t.shape[-1], grid[1])) for t in inputs]


def grid_spans(inputs: Sequence[torch.Tensor], grid: tuple[int, int], tile: int, overlap: int, align: int = 1):
    """Row and column spans of the tiles; aligned so that every input's crop falls on whole pixels."""
    ratios = _ratios(inputs, grid)
    align_h = math.lcm(align, *(r[0].denominator for r in ratios))
    align_w = math.lcm(align, *(r[1].denominator for r in ratios))
    return tile_spans(grid[0], tile, overlap, align_h), tile_spans(grid[1], tile, overlap, align_w)


def blend_tiles(fn: Callable[[list[torch.Tensor], int], torch.Tensor], inputs: Sequence[torch.Tensor],
                grid: tuple[int, int], tile: int, overlap: int, align: int = 1, batch_size: int = 1,
                on_batch: Callable[[int], Any] | None = None) -> torch.Tensor:
    """fn(crops, n_tiles) on overlapping tiles of a (H, W) grid, outputs blended as weighted sum / weight sum."""
    # Each input covers the grid at its own resolution (e.g. the LR image at half the latent's); crops of
    # `batch_size` tiles are concatenated along the batch axis, so fn sees n_tiles * N samples.
    spans_h, spans_w = grid_spans(inputs, grid, tile, overlap, align)
    if len(spans_h) == len(spans_w) == 1:
        out = fn(list(inputs), 1)
        if on_batch is not None:
            on_batch(1)
        return out
    ratios = _ratios(inputs, grid)
    boxes = [(a, b) for a in range(len(spans_h)) for b in range(len(spans_w))]
    out = weight = None
    for first in range(0, len(boxes), max(1, batch_size)):
        chunk = boxes[first:first + max(1, batch_size)]
        crops = []
        for t, (rh, rw) in zip(inputs, ratios):
            parts = []
            for a, b in chunk:
                (y0, y1), (x0, x1) = spans_h[a], spans_w[b]
                parts.append(t[..., _as_int(y0 * rh, "crop"):_as_int(y1 * rh, "crop"),
                               _as_int(x0 * rw, "crop"):_as_int(x1 * rw, "crop")])
            crops.append(torch.cat(parts))
        result = fn(crops, len(chunk))
        if out is None:  # the output's resolution relative to the grid, from the first result
            th, tw = spans_h[0][1] - spans_h[0][0], spans_w[0][1] - spans_w[0][0]
            sh = _as_int(Fraction(result.shape[-2], th), "output scale")
            sw = _as_int(Fraction(result.shape[-1], tw), "output scale")
            n = result.shape[0] // len(chunk)
            out = torch.zeros(n, result.shape[1], grid[0] * sh, grid[1] * sw, device=result.device)
            weight = torch.zeros(grid[0] * sh, grid[1] * sw, device=result.device)
            win_h = [w.to(result.device) for w in span_windows(spans_h, sh)]
            win_w = [w.to(result.device) for w in span_windows(spans_w, sw)]
            out_dtype = result.dtype
        for (a, b), piece in zip(chunk, result.chunk(len(chunk))):
            w = win_h[a][:, None] * win_w[b][None, :]
            ys = slice(spans_h[a][0] * sh, spans_h[a][1] * sh)
            xs = slice(spans_w[b][0] * sw, spans_w[b][1] * sw)
            out[..., ys, xs] += piece.float() * w
            weight[ys, xs] += w
        if on_batch is not None:
            on_batch(len(chunk))
    return (out / weight).to(out_dtype)


class TiledDenoiser:
    """denoiser(x_t, t_index, cond) -> x0_hat run on overlapping latent tiles and blended; works with any sampler."""

    def __init__(self, denoiser: Callable, tile: int, overlap: int, batch_size: int = 1, align: int = 1,
                 on_batch: Callable[[int], Any] | None = None):
        # tile, overlap: latent pixels; align: tile starts and sizes are multiples of it (the backbone's multiple)
        self.denoiser, self.tile, self.overlap = denoiser, tile, overlap
        self.batch_size, self.align, self.on_batch = batch_size, align, on_batch

    @staticmethod
    def _conds(cond) -> list[torch.Tensor]:
        return [] if cond is None else list(cond) if isinstance(cond, tuple) else [cond]

    def num_tiles(self, x_t: torch.Tensor, cond=None) -> int:
        """How many tiles one call runs."""
        inputs = [x_t] + self._conds(cond)
        spans_h, spans_w = grid_spans(inputs, x_t.shape[-2:], self.tile, self.overlap, self.align)
        return len(spans_h) * len(spans_w)

    def __call__(self, x_t: torch.Tensor, t_index: torch.Tensor, cond=None) -> torch.Tensor:
        # cond: a tensor, a tuple of tensors (lq, y) or None; each is cropped at its own resolution
        t_index = torch.as_tensor(t_index, device=x_t.device).reshape(-1).expand(x_t.shape[0])
        inputs = [x_t] + self._conds(cond)

        def run(crops: list[torch.Tensor], n_tiles: int) -> torch.Tensor:
            rest = tuple(crops[1:]) if isinstance(cond, tuple) else (crops[1] if cond is not None else None)
            return self.denoiser(crops[0], t_index.repeat(n_tiles), rest)

        return blend_tiles(run, inputs, tuple(x_t.shape[-2:]), self.tile, self.overlap, self.align,
                           self.batch_size, self.on_batch)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad bottom and right to multiples of `multiple` (replicate when the image is too small)."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


# ---- colour fix -------------------------------------------------------------------------------------------
def _wavelet_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    k = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=x.dtype, device=x.device) / 16
    k = k.expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (radius,) * 4, mode="replicate"), k, groups=x.shape[1], dilation=radius)


def _wavelet_split(x: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) frequencies by repeated dilated blurs (StableSR's wavelet decomposition)."""
    high = torch.zeros_like(x)
    for i in range(levels):
        low = _wavelet_blur(x, 2**i)
        high += x - low
        x = low
    return high, x


def wavelet_color_fix(sr: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """SR's high frequencies + the reference's low frequencies (StableSR / SinSR wavelet colour fix)."""
    return (_wavelet_split(sr)[0] + _wavelet_split(ref)[1]).clamp(0, 1)


def adain_color_fix(sr: torch.Tensor, ref: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-image, per-channel mean and std of SR matched to the reference's (AdaIN colour fix)."""
    def stats(x):
        flat = x.flatten(2)
        return flat.mean(2)[..., None, None], (flat.var(2) + eps).sqrt()[..., None, None]

    (m_sr, s_sr), (m_ref, s_ref) = stats(sr), stats(ref)
    return ((sr - m_sr) / s_sr * s_ref + m_ref).clamp(0, 1)


# ---- images of every kind <-> LoadedImage -----------------------------------------------------------------
def _from_tensor(t: torch.Tensor, bits: int = 8) -> LoadedImage:
    """CxHxW float in [0, 1], C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA)."""
    if t.ndim != 3 or t.shape[0] not in (1, 2, 3, 4):
        raise ValueError(f"expected an image of shape Cx H x W with C in 1..4, got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"tensor images are float in [0, 1], got {t.dtype}")
    t = t.detach().float().clamp(0, 1)
    c = t.shape[0]
    grey = c <= 2
    rgb = t[:1].expand(3, -1, -1) if grey else t[:3]
    alpha = t[c - 1:] if c in (2, 4) else None
    return LoadedImage(rgb=rgb.contiguous(), alpha=alpha, bits=bits, grey=grey)


def _channels(img: LoadedImage) -> torch.Tensor:
    """The image's own channels (grey or RGB, then alpha) as CxHxW float."""
    colour = img.rgb.mean(0, keepdim=True) if img.grey else img.rgb
    return torch.cat([colour] + ([img.alpha.to(colour.device)] if img.alpha is not None else []))


def _from_numpy(a: np.ndarray) -> LoadedImage:
    arr = a[..., None] if a.ndim == 2 else a
    if arr.ndim != 3:
        raise ValueError(f"expected an HxW or HxWxC array, got shape {a.shape}")
    if arr.dtype == np.uint8:
        x, bits = arr.astype(np.float32) / 255, 8
    elif arr.dtype == np.uint16:
        x, bits = arr.astype(np.float32) / 65535, 16
    elif arr.dtype.kind == "f":
        x, bits = arr.astype(np.float32), 8
    else:
        raise ValueError(f"arrays are uint8, uint16 or float in [0, 1], got {arr.dtype}")
    return _from_tensor(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), bits)


def _to_numpy(img: LoadedImage, like: np.ndarray) -> np.ndarray:
    chans = _channels(img)
    if like.dtype in (np.uint8, np.uint16):
        arr = to_array(chans, 16 if like.dtype == np.uint16 else 8)
    else:
        arr = chans.detach().float().cpu().numpy().transpose(1, 2, 0).astype(like.dtype)
    return arr[..., 0] if like.ndim == 2 else arr


def _from_pil(im: Image.Image) -> tuple[LoadedImage, Callable[[LoadedImage], Image.Image]]:
    mode = im.mode
    if mode.startswith("I"):  # I;16* and I: 16-bit grey
        arr = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
        out_dtype = np.uint16 if mode.startswith("I;16") else np.int32
        return _from_numpy(arr), lambda img: Image.fromarray(_to_numpy(img, arr).astype(out_dtype))
    if mode not in ("L", "LA", "RGB", "RGBA"):
        has_alpha = "A" in mode or "a" in mode or "transparency" in im.info
        mode = ("LA" if has_alpha else "L") if mode in ("1", "La") else ("RGBA" if has_alpha else "RGB")
        im = im.convert(mode)
    arr = np.asarray(im)
    return _from_numpy(arr), lambda img: Image.fromarray(_to_numpy(img, arr))


def _to_loaded(image: Any) -> tuple[list[LoadedImage], Callable[[list[LoadedImage]], Any]]:
    """Any accepted input -> LoadedImages, and the function that turns results back into the same kind."""
    if isinstance(image, (list, tuple)):
        parts = [_to_loaded(im) for im in image]
        sizes = [len(items) for items, _ in parts]

        def rebuild_list(outs):
            res, i = [], 0
            for (_, rebuild), n in zip(parts, sizes):
                res.append(rebuild(outs[i:i + n]))
                i += n
            return res

        return [it for items, _ in parts for it in items], rebuild_list
    if isinstance(image, Image.Image):
        img, rebuild = _from_pil(image)
        return [img], lambda outs: rebuild(outs[0])
    if isinstance(image, np.ndarray):
        return [_from_numpy(image)], lambda outs: _to_numpy(outs[0], image)
    if isinstance(image, torch.Tensor):
        def back(img):
            return _channels(img).to(device=image.device, dtype=image.dtype)

        if image.ndim == 4:
            return [_from_tensor(t) for t in image], lambda outs: torch.stack([back(o) for o in outs])
        return [_from_tensor(image)], lambda outs: back(outs[0])
    if isinstance(image, LoadedImage):
        return [image], lambda outs: outs[0]
    raise TypeError(f"cannot upscale a {type(image).__name__}: give a PIL image, a tensor, a numpy array "
                    "or a list of them")


# ---- the upscaler -----------------------------------------------------------------------------------------
class Upscaler:
    """An SRModel ready for images: any size and kind, seeded noise, tiling, batching, colour fix."""

    codec_tile = 128  # latent pixels: encode/decode of non-exact codecs is tiled above this size
    codec_overlap = 16

    def __init__(self, model: SRModel, name: str | None = None):
        self.model = model.eval()
        self.name = name or type(model).__name__

    @classmethod
    def from_pretrained(cls, path_or_default: str | Path | None = None, device: str | torch.device = "cpu",
                        dtype: torch.dtype | str = torch.float32) -> "Upscaler":
        """Load a model folder once (None / 'default': the model shipped in the package)."""
        folder = resolve_model_path(path_or_default)
        return cls(load_model(folder, device, dtype), name=str(folder))

    @property
    def scale(self) -> int:
        return self.model.scale

    def _first_tensor(self) -> torch.Tensor:
        return next(itertools.chain(self.model.parameters(), self.model.buffers()), torch.empty(0))

    @property
    def device(self) -> torch.device:
        return self._first_tensor().device

    @property
    def dtype(self) -> torch.dtype:
        return self._first_tensor().dtype

    def __call__(self, image: Any, steps: int | None = None, seed: int | None = None, tile: int | None = None,
                 tile_overlap: int = 32, color_fix: str = "none", batch_size: int = 4,
                 sampler: str | None = None, progress: bool = False) -> Any:
        """Upscale a PIL image, a CHW/NCHW tensor in [0, 1], an HxW[xC] array, or a list; same kind back."""
        images, rebuild = _to_loaded(image)
        return rebuild(self.upscale_loaded(images, steps=steps, seed=seed, tile=tile, tile_overlap=tile_overlap,
                                           color_fix=color_fix, batch_size=batch_size, sampler=sampler,
                                           progress=progress))

    def upscale_loaded(self, images: Sequence[LoadedImage], batch_size: int = 4, **options) -> list[LoadedImage]:
        """Upscale LoadedImages (same-size ones batched); alpha is upscaled apart, with plain bicubic."""
        outs: list[LoadedImage | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            by_size.setdefault(tuple(img.rgb.shape[-2:]), []).append(i)
        for idx in by_size.values():
            sr = self.upscale_tensor(torch.stack([images[i].rgb for i in idx]), batch_size=batch_size, **options)
            for i, rgb in zip(idx, sr):
                alpha = images[i].alpha
                if alpha is not None:
                    alpha = F.interpolate(alpha[None].float(), scale_factor=self.scale, mode="bicubic",
                                          align_corners=False)[0].clamp(0, 1)
                outs[i] = LoadedImage(rgb=rgb, alpha=alpha, bits=images[i].bits, grey=images[i].grey)
        return outs

    @torch.no_grad()
    def upscale_tensor(self, lq: torch.Tensor, steps: int | None = None, seed: int | None = None,
                       tile: int | None = None, tile_overlap: int = 32, color_fix: str = "none",
                       batch_size: int = 4, sampler: str | None = None, progress: bool = False) -> torch.Tensor:
        """LR batch (N,3,h,w) in [0, 1] -> SR batch (N,3,h*scale,w*scale) in [0, 1], float32 on the model's device."""
        if color_fix not in COLOR_FIXES:
            raise ValueError(f"unknown colour fix {color_fix!r}; choose from {', '.join(COLOR_FIXES)}")
        if lq.ndim != 4 or lq.shape[1] != 3:
            raise ValueError(f"expected an RGB batch N x 3 x H x W, got {tuple(lq.shape)}")
        if min(lq.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"image is {lq.shape[-2]}x{lq.shape[-1]} px; the smallest side accepted is {MIN_SIDE} px")
        if tile is not None and tile <= 0:
            tile = None
        sampler = sampler or self.model.sampler
        tiled = tile is not None and max(lq.shape[-2:]) > tile
        # One image at a time when tiling (batch_size then counts tiles), and for ancestral sampling with a
        # seed (its per-step noise would otherwise depend on the batch).
        chunk = 1 if tiled or (sampler != "deterministic" and seed is not None) else max(1, batch_size)
        kwargs = dict(steps=steps, seed=seed, tile=tile, tile_overlap=tile_overlap, batch_size=batch_size,
                      sampler=sampler, progress=progress)
        sr = torch.cat([self._restore(lq[i:i + chunk], **kwargs) for i in range(0, lq.shape[0], chunk)])
        if color_fix != "none":
            ref = bicubic_upsample(lq.to(sr.device, torch.float32), self.scale).clamp(0, 1)
            sr = (wavelet_color_fix if color_fix == "wavelet" else adain_color_fix)(sr, ref)
        return sr

    # ---- internals ----------------------------------------------------------------------------------------
    def _restore(self, lq, steps, seed, tile, tile_overlap, batch_size, sampler, progress) -> torch.Tensor:
        """SRModel.restore with padding, seeded per-image noise, tiled denoising and tiled codec."""
        model, dtype, device = self.model, self.dtype, self.device
        h, w = lq.shape[-2:]
        lq = pad_to_multiple(lq.to(device, torch.float32), model.multiple)
        f = model.codec.scale_factor
        generator = torch.Generator(device).manual_seed(seed) if seed is not None else None

        def encode(up):  # bicubic in fp32 (not every device has it in half precision), the codec in `dtype`
            return self._codec(model.codec.encode, up.to(dtype), (up.shape[-2] // f, up.shape[-1] // f))

        y, cond = model.condition(lq, generator, encode)
        cond = cond.to(dtype)
        noise = self._noise(y, seed)
        denoiser, bar, exact_tiles = model.denoiser, None, False
        if tile is not None:
            latent_per_lr = Fraction(model.scale, model.codec.scale_factor)
            latent_tile = max(1, math.floor(tile * latent_per_lr))
            exact_tiles = hasattr(model.backbone, "enable_tiling") and max(y.shape[-2:]) > latent_tile
            if exact_tiles:  # the whole-image result, layer by layer in tiles: no seams (nets/tiled_unet.py)
                n_tiles = model.backbone.num_tiles(tuple(y.shape[-2:]), latent_tile)
            else:  # other backbones: whole-network tiles, blended over their overlaps
                denoiser = TiledDenoiser(model.denoiser, latent_tile, math.floor(tile_overlap * latent_per_lr),
                                         batch_size, align=getattr(model.backbone, "multiple", 1))
                n_tiles = denoiser.num_tiles(y, (cond, y))
            if progress and n_tiles > 1:
                from tqdm.auto import tqdm

                n_steps = len(model.schedule.respaced(steps or model.steps).timesteps)
                bar = tqdm(total=n_tiles * n_steps, unit="tile", desc="denoising", leave=False)
            on_tile = bar.update if bar is not None else None
            if exact_tiles:  # on a GPU the full feature maps wait in host memory: GPU memory holds one tile's
                store = "cpu" if device.type != "cpu" else None
                model.backbone.enable_tiling(latent_tile, store=store, on_tile=on_tile)
            else:
                denoiser.on_batch = on_tile
        try:
            x0 = model.sample(y, cond, steps, sampler, generator, noise, denoiser)
        finally:
            if bar is not None:
                bar.close()
            if exact_tiles:
                model.backbone.disable_tiling()
        sr = self._codec(model.codec.decode, x0, tuple(x0.shape[-2:])).float()
        s = model.scale
        return ((sr[..., : h * s, : w * s] + 1) / 2).clamp_(0, 1)

    def _noise(self, y: torch.Tensor, seed: int | None) -> torch.Tensor:
        """Standard normal like y, drawn on the CPU: from `seed` alone per image, or fresh when seed is None."""
        if seed is None:
            noise = torch.randn(y.shape)
        else:
            noise = torch.randn(y.shape[1:], generator=torch.Generator().manual_seed(seed))
            noise = noise.expand(y.shape).contiguous()
        return noise.to(device=y.device, dtype=y.dtype)

    def _codec(self, fn: Callable, x: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
        """codec.encode / codec.decode, tiled with blending when the codec is not exact and the latent large."""
        if isinstance(self.model.codec, PixelUnshuffleCodec) or max(latent_size) <= self.codec_tile:
            return fn(x)  # pixel-unshuffle is exact and per-pixel: it never needs tiles
        return blend_tiles(lambda crops, n: fn(crops[0]), [x], latent_size, self.codec_tile, self.codec_overlap)


# ---- files ------------------------------------------------------------------------------------------------
class UpscaleCounts(NamedTuple):
    upscaled: int
    skipped: int
    failed: int


def output_path(src: str | Path, out_dir: str | Path, suffix: str = "", ext: str = "auto") -> Path:
    """out_dir/NAME{suffix}.EXT; ext 'auto' keeps png/jpg/webp/bmp and gives png otherwise."""
    src = Path(src)
    if ext == "auto":
        dot_ext = src.suffix.lower() if src.suffix.lower() in AUTO_EXTS else ".png"
    else:
        dot_ext = "." + ext.lower().lstrip(".")
    return Path(out_dir) / f"{src.stem}{suffix}{dot_ext}"


def is_out_of_memory(e: BaseException) -> bool:
    """A host MemoryError or a device allocator's 'out of memory' error."""
    return isinstance(e, MemoryError) or "out of memory" in str(e).lower()


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if is_out_of_memory(e):
        msg = f"out of memory ({msg}); try a smaller --tile or --batch-size"
    return msg


FILE_ERRORS = (ValueError, OSError, RuntimeError, MemoryError)  # one file's failure: reported, the run goes on


def failure_line(src: str | Path, e: BaseException) -> str:
    """'SRC: what went wrong' in one line."""
    msg = _one_line(e)
    return msg if msg.startswith(str(src)) else f"{src}: {msg}"


def upscale_file(upscaler: Upscaler, src: str | Path, dst: str | Path, overwrite: bool = False,
                 image: np.ndarray | None = None, progress: bool = False, **options) -> str:
    """Upscale one file to dst (atomic write): 'upscaled', or 'skipped' when dst exists; raises FILE_ERRORS.
    `image` is src already decoded (HxW[xC] array, e.g. by Ray Data), so the file is not read again."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        return "skipped"
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError("the output would replace the input; give --suffix or another output folder")
    loaded = read_image(src) if image is None else _from_numpy(image)
    out = upscaler.upscale_loaded([loaded], progress=progress, **options)[0]
    save_image(out.rgb, dst, bits=out.bits, alpha=out.alpha, grey=out.grey)
    return "upscaled"


def upscale_paths(upscaler: Upscaler, inputs: Sequence[str | Path], out_dir: str | Path, suffix: str = "",
                  ext: str = "auto", overwrite: bool = False, rank: int = 0, world_size: int = 1,
                  progress: bool = True, **options) -> UpscaleCounts:
    """Upscale files[rank::world_size] into out_dir (atomic, skip existing); options go to the upscaler."""
    from tqdm.auto import tqdm

    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    inputs = [Path(p) for p in inputs]
    targets = [output_path(p, out_dir, suffix, ext) for p in inputs]
    first_with: dict[Path, Path] = {}
    for src, dst in zip(inputs, targets):
        first_with.setdefault(dst, src)
    prefix = f"[{rank}/{world_size}] " if world_size > 1 else ""
    counts = {"upscaled": 0, "skipped": 0, "failed": 0}
    mine = list(zip(inputs, targets))[rank::world_size]
    tile_progress = progress and len(mine) == 1
    for src, dst in tqdm(mine, desc=f"{prefix}upscaling", unit="img", disable=not progress, file=sys.stderr):
        if first_with[dst] != src:
            tqdm.write(f"{prefix}failed: {src}: same output name as {first_with[dst]}", file=sys.stderr)
            counts["failed"] += 1
            continue
        try:
            counts[upscale_file(upscaler, src, dst, overwrite, progress=tile_progress, **options)] += 1
        except FILE_ERRORS as e:
            counts["failed"] += 1
            tqdm.write(f"{prefix}failed: {failure_line(src, e)}", file=sys.stderr)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    print(f"{prefix}{counts['upscaled']} upscaled, {counts['skipped']} skipped (exist), {counts['failed']} failed",
          flush=True)
    return UpscaleCounts(counts["upscaled"], counts["skipped"], counts["failed"])
