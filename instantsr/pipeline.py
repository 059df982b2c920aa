"""Inference: upscale images of any size, kind and bit depth with an `SRModel`, whatever its diffusion family.

- `Upscaler` loads a model folder once; `upscaler(image)` takes a PIL image, a tensor, a numpy array or a list
  of them and gives back the same kind (grey stays grey, alpha is kept, 16 bits stay 16 bits).
- `Upscaler.upscale_tensor` is the one inference path (the CLI, bench and training validation all use it): it
  reflect-pads to the model's multiple, draws each image's noise from `seed` alone (the same image and seed give
  the same output in any batch), and with `tile` runs large images in tiles (`instantsr.tiling`): our UNets
  exactly, layer by layer; other backbones and non-exact codecs on blended tiles. Without `tile` nothing is
  tiled, the codec included, except that a model folder may record chops (`"chop": {"size", "stride"}` in its
  `extra`: the converted official ResShift / SinSR, 512 LR px every 448, as their inference splits big images),
  which `tile=0` turns off. A backbone that is not exactly tileable that runs out of memory is retried in tiles
  of half the size, down to `MIN_RETRY_TILE` LR px, with one line on stderr (ComfyUI's way).
- `upscale_paths` is the file loop of `instantsr upscale`: atomic writes, existing outputs skipped, a failed
  file reported in one line, files shared between processes by rank. It takes any `ImageUpscaler` (the image
  kinds and the colour fix live there): `Upscaler`, or `instantsr.onnx_export.OnnxUpscaler` for a graph of
  `instantsr export` run by onnxruntime (`instantsr upscale --onnx`).
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
from torch.nn import functional as F

from .codecs import PixelUnshuffleCodec
from .colorfix import adain_color_fix, wavelet_color_fix
from .io import LoadedImage, loaded_from_array, read_image, save_image, to_loaded
from .model import ModelFolderError, SRModel, bicubic_upsample, model_folder
from .tiling import TiledDenoiser, blend_tiles, chop_starts, pad_to_multiple

__all__ = [
    "DEFAULT_MODEL_DIR",
    "ImageUpscaler",
    "Upscaler",
    "TiledDenoiser",
    "UpscaleCounts",
    "load_model",
    "upscale_paths",
    "output_path",
    "blend_tiles",
    "pad_to_multiple",
    "wavelet_color_fix",
    "adain_color_fix",
]

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
MIN_SIDE = 8  # smallest LR side accepted
MIN_RETRY_TILE = 64  # LR px: out-of-memory retries halve the tile down to this, then give up
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


def default_device(device: str | None = None) -> str:
    """The device asked for; else CUDA where there is a GPU, the CPU otherwise."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: str, dtype: str | None = None) -> str:
    """The dtype asked for; else fp16 on a GPU (half the memory, twice the speed), fp32 on the CPU."""
    return dtype or ("fp16" if device.startswith("cuda") else "fp32")


def resolve_model_path(path_or_default: str | Path | None = None) -> Path:
    """The model folder: the given one (or a run folder's model/), or the one shipped in the package for None /
    'default'."""
    if path_or_default is None or str(path_or_default) == "default":
        if not (DEFAULT_MODEL_DIR / "model_index.json").is_file():
            raise ModelFolderError(f"no default model is shipped at {DEFAULT_MODEL_DIR}; "
                                   "pass a model folder (-m MODEL_DIR)")
        return DEFAULT_MODEL_DIR
    return model_folder(path_or_default)


def load_model(path_or_default: str | Path | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype | str = torch.float32) -> SRModel:
    """An SRModel from a folder (None / 'default': the packaged model), in eval mode."""
    return SRModel.from_pretrained(resolve_model_path(path_or_default), device=device, dtype=parse_dtype(dtype))


# ---- the upscaler -----------------------------------------------------------------------------------------
def check_lr_batch(lq: torch.Tensor, color_fix: str = "none") -> None:
    """A one-line ValueError for an LR batch no upscaler takes (not N x 3 x H x W, too small) or an unknown
    colour fix."""
    if color_fix not in COLOR_FIXES:
        raise ValueError(f"unknown colour fix {color_fix!r}; choose from {', '.join(COLOR_FIXES)}")
    if lq.ndim != 4 or lq.shape[1] != 3:
        raise ValueError(f"expected an RGB batch N x 3 x H x W, got {tuple(lq.shape)}")
    if min(lq.shape[-2:]) < MIN_SIDE:
        raise ValueError(f"image is {lq.shape[-1]}x{lq.shape[-2]} px (width x height); the smallest side "
                         f"accepted is {MIN_SIDE} px")


def finish_output(sr: torch.Tensor, lq: torch.Tensor, scale: int, color_fix: str) -> torch.Tensor:
    """The last touches of every upscaler: the colour fix (`color_fix` wavelet or adain: SR with the colours of
    the bicubic-upscaled LR; none: as it is), then grey in, grey out: an LR image whose three channels are equal
    gives an SR image whose channels are equal (their mean). A one-step model sees no rule that grey stays grey;
    each colour's latent channels err on their own and paint false colour on a black-and-white photo."""
    if color_fix != "none":
        ref = bicubic_upsample(lq.to(sr.device, torch.float32), scale).clamp(0, 1)
        sr = (wavelet_color_fix if color_fix == "wavelet" else adain_color_fix)(sr, ref)
    grey = (lq[:, :1] == lq[:, 1:]).flatten(1).all(1).to(sr.device)
    if grey.any():
        sr = torch.where(grey[:, None, None, None], sr.mean(1, keepdim=True).expand_as(sr), sr)
    return sr


# The tag of the upscaler's torch.Generator stream (see `step_seed`): "step"
STEP_STREAM = 0x73746570


def step_seed(seed: int) -> int:
    """The seed of the upscaler's torch.Generator, which draws encode_condition's LQ noise channels and then
    each ancestral step's noise: a stream of its own derived from `seed`. x_T's noise (`seeded_noise`) is drawn
    from `seed` itself; were both seeded alike, the first step's draw would repeat x_T's noise bit for bit (too
    much noise after step one: 2.39 instead of 1.82 for ResShift's first step, issue 32)."""
    from .train import seed_of

    return seed_of(seed % 2**64, STEP_STREAM)


def seeded_noise(shape: Sequence[int], seed: int | None) -> torch.Tensor:
    """Standard normal of `shape` (N, ...) on the CPU: each image's from `seed` alone (the same in any batch), or
    fresh when seed is None. The one noise of the torch upscaler and of the ONNX runner, so that a seed gives
    both the same output."""
    if seed is None:
        return torch.randn(tuple(shape))
    noise = torch.randn(tuple(shape[1:]), generator=torch.Generator().manual_seed(seed))
    return noise.expand(tuple(shape)).contiguous()


class ImageUpscaler:
    """What the file loop needs of an upscaler: `scale`, and `upscale_tensor(lq, **options)` on an LR batch in
    [0, 1]; this base turns that into images of every kind (PIL, arrays, grey, alpha, 16 bits). `Upscaler` runs
    a model folder with torch, `instantsr.onnx_export.OnnxUpscaler` an exported graph with onnxruntime."""

    name: str
    scale: int

    def upscale_tensor(self, lq: torch.Tensor, **options) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, image: Any, steps: int | None = None, seed: int | None = None, tile: int | None = None,
                 tile_overlap: int = 32, color_fix: str = "none", batch_size: int = 4,
                 sampler: str | None = None, progress: bool | str = False) -> Any:
        """Upscale a PIL image, a CHW/NCHW tensor in [0, 1], an HxW[xC] array, or a list; same kind back.
        `progress`: a tile bar when tiled (a str labels it)."""
        images, rebuild = to_loaded(image)
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


class Upscaler(ImageUpscaler):
    """An SRModel ready for images: any size and kind, seeded noise, tiling, batching, colour fix."""

    codec_tile = 128  # latent pixels: with --tile, encode/decode of non-exact codecs is tiled above this size
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

    @torch.no_grad()
    def upscale_tensor(self, lq: torch.Tensor, steps: int | None = None, seed: int | None = None,
                       tile: int | None = None, tile_overlap: int = 32, color_fix: str = "none",
                       batch_size: int = 4, sampler: str | None = None, progress: bool | str = False) -> torch.Tensor:
        """LR batch (N,3,h,w) in [0, 1] -> SR batch (N,3,h*scale,w*scale) in [0, 1], float32 on the model's device."""
        check_lr_batch(lq, color_fix)
        chop = self.chop if tile is None else None  # tile 0: the whole image, not even the model's chops
        if tile is not None and tile <= 0:
            tile = None
        self.model.check_steps(steps)
        sampler = self.model.check_sampler(sampler)
        tiled = (tile is not None and max(lq.shape[-2:]) > tile) or (chop and max(lq.shape[-2:]) > chop[0])
        # One image at a time when tiling (batch_size then counts tiles), and for samplers that draw noise at
        # every step with a seed (their per-step noise would otherwise depend on the batch).
        stochastic = sampler == "stochastic" and self.model.num_passes(steps) > 1
        chunk = 1 if tiled or (stochastic and seed is not None) else max(1, batch_size)
        kwargs = dict(steps=steps, seed=seed, tile_overlap=tile_overlap, batch_size=batch_size,
                      sampler=sampler, progress=progress)
        sr = torch.cat([self._fitting(lq[i:i + chunk], chop, tile, **kwargs) for i in range(0, lq.shape[0], chunk)])
        return finish_output(sr, lq, self.scale, color_fix)

    @property
    def chop(self) -> tuple[int, int] | None:
        """(size, stride) in LR px of the chops the model folder records (the official models'), or None."""
        chop = self.model.extra.get("chop")
        return (int(chop["size"]), int(chop["stride"])) if chop else None

    @property
    def exactly_tileable(self) -> bool:
        """Our UNets tile layer by layer with the untiled result; other backbones tile by blending."""
        return hasattr(self.model.backbone, "enable_tiling")

    def _fitting(self, lq, chop, tile, **kwargs) -> torch.Tensor:
        """_restore (in chops when asked), retried in tiles of half the size when a backbone that is not exactly
        tileable runs out of memory (the whole image first, or the chop, or the tile asked for)."""
        while True:
            try:
                if chop and max(lq.shape[-2:]) > chop[0]:
                    return self._chopped(lq, chop, tile=tile, **kwargs)
                return self._restore(lq, tile=tile, **kwargs)
            except (RuntimeError, MemoryError) as e:
                side = tile or (min(chop[0], max(lq.shape[-2:])) if chop else max(lq.shape[-2:]))
                smaller = side // 2
                if not is_out_of_memory(e) or self.exactly_tileable or smaller < MIN_RETRY_TILE:
                    raise
                where = f"tiles of {tile} LR px" if tile else f"chops of {chop[0]} LR px" if chop else "whole"
            # past the except clause: the failed attempt's tensors went with its traceback
            print(f"instantsr: out of memory ({where}); trying again in tiles of {smaller} LR px", file=sys.stderr)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            tile, chop = smaller, None

    def _chopped(self, lq, chop, seed, progress, **kwargs) -> torch.Tensor:
        """The official chopping: the LR image in chops of `size` px every `stride` (`tiling.chop_starts`), each
        chop upscaled whole on its own (its own noise: seed + its index), the outputs averaged where they
        overlap, uniformly, as the official ImageSpliterTh gathers them."""
        size, stride = chop
        h, w = lq.shape[-2:]
        s = self.scale
        out = torch.zeros(lq.shape[0], 3, h * s, w * s, device=self.device)
        count = torch.zeros(1, 1, h * s, w * s, device=self.device)
        places = list(itertools.product(chop_starts(h, size, stride), chop_starts(w, size, stride)))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(places), unit="chop", leave=False, file=sys.stderr,
                       desc=progress if isinstance(progress, str) else "chops")
        try:
            for k, (y, x) in enumerate(places):
                piece = self._restore(lq[..., y:y + size, x:x + size], seed=None if seed is None else seed + k,
                                      progress=False, **kwargs)
                out[..., y * s:y * s + piece.shape[-2], x * s:x * s + piece.shape[-1]] += piece
                count[..., y * s:y * s + piece.shape[-2], x * s:x * s + piece.shape[-1]] += 1
                if bar is not None:
                    bar.update()
        finally:
            if bar is not None:
                bar.close()
        return out / count

    # ---- internals ----------------------------------------------------------------------------------------
    def _restore(self, lq, steps, seed, tile, tile_overlap, batch_size, sampler, progress) -> torch.Tensor:
        """condition -> prior -> sample -> decode, with padding, seeded per-image noise and (with `tile`) tiles."""
        model, dtype, device = self.model, self.dtype, self.device
        h, w = lq.shape[-2:]
        lq = pad_to_multiple(lq.to(device, torch.float32), model.multiple)
        f = model.codec.scale_factor
        generator = torch.Generator(device).manual_seed(step_seed(seed)) if seed is not None else None

        def encode(up):  # bicubic in fp32 (not every device has it in half precision), the codec in `dtype`
            return self._codec(model.codec.encode, up.to(dtype), (up.shape[-2] // f, up.shape[-1] // f), tile)

        cond = model.condition(lq, generator, encode)
        cond = cond._replace(lq=cond.lq.to(dtype))
        y = cond.y
        x = model.prior(cond, self._noise(y, seed))
        denoiser, bar, exact_tiles = model.denoiser, None, False
        if tile is not None:
            latent_per_lr = Fraction(model.scale, f)
            latent_tile = max(1, math.floor(tile * latent_per_lr))
            exact_tiles = self.exactly_tileable and max(y.shape[-2:]) > latent_tile
            if exact_tiles:  # the whole-image result, layer by layer in tiles: no seams (nets/tiled_unet.py)
                n_tiles = model.backbone.num_tiles(tuple(y.shape[-2:]), latent_tile)
            else:  # other backbones: whole-network tiles, blended over their overlaps
                denoiser = TiledDenoiser(model.denoiser, latent_tile, math.floor(tile_overlap * latent_per_lr),
                                         batch_size, align=getattr(model.backbone, "multiple", 1))
                n_tiles = denoiser.num_tiles(x, cond)
            if progress and n_tiles > 1:
                from tqdm.auto import tqdm

                bar = tqdm(total=n_tiles * model.num_passes(steps), unit="tile", leave=False, file=sys.stderr,
                           desc=progress if isinstance(progress, str) else "denoising")
            on_tile = bar.update if bar is not None else None
            if exact_tiles:  # on a GPU the full feature maps wait in host memory: GPU memory holds one tile's
                store = "cpu" if device.type != "cpu" else None
                model.backbone.enable_tiling(latent_tile, store=store, on_tile=on_tile)
            else:
                denoiser.on_batch = on_tile
        try:
            x0 = model.sample(x, cond, steps, sampler, generator, denoiser)
        finally:
            if bar is not None:
                bar.close()
            if exact_tiles:
                model.backbone.disable_tiling()
        sr = self._codec(model.codec.decode, x0, tuple(x0.shape[-2:]), tile).float()
        s = model.scale
        return ((sr[..., : h * s, : w * s] + 1) / 2).clamp_(0, 1)

    def _noise(self, y: torch.Tensor, seed: int | None) -> torch.Tensor:
        """Standard normal like y, drawn on the CPU: from `seed` alone per image, or fresh when seed is None."""
        return seeded_noise(y.shape, seed).to(device=y.device, dtype=y.dtype)

    def _codec(self, fn: Callable, x: torch.Tensor, latent_size: tuple[int, int], tile: int | None) -> torch.Tensor:
        """codec.encode / codec.decode; with --tile, in blended tiles when the codec is not exact and the latent
        large (tiles change a non-exact codec's output a little, so never without --tile: the official way)."""
        exact = isinstance(self.model.codec, PixelUnshuffleCodec)  # per-pixel: it never needs tiles
        if tile is None or exact or max(latent_size) <= self.codec_tile:
            return fn(x)
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


def _host_out_of_memory(e: BaseException) -> bool:  # torch's CPU allocator: "DefaultCPUAllocator: not enough memory"
    return isinstance(e, MemoryError) or "not enough memory" in str(e).lower()


def is_out_of_memory(e: BaseException) -> bool:
    """A host MemoryError, torch's CPU allocator's or a device allocator's 'out of memory' error."""
    return _host_out_of_memory(e) or "out of memory" in str(e).lower()


def oom_hint(e: BaseException) -> str:
    """What to try after out-of-memory error `e` (moving to the CPU only helps when it was not the CPU's)."""
    return "try --tile 256 (or a smaller one), a smaller --batch-size" + \
        ("" if _host_out_of_memory(e) else ", or --device cpu")


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if is_out_of_memory(e):
        msg = f"out of memory ({msg}); {oom_hint(e)}"
    return msg


FILE_ERRORS = (ValueError, OSError, RuntimeError, MemoryError)  # one file's failure: reported, the run goes on


def failure_line(src: str | Path, e: BaseException) -> str:
    """'SRC: what went wrong' in one line."""
    msg = _one_line(e)
    return msg if msg.startswith(str(src)) else f"{src}: {msg}"


def upscale_file(upscaler: ImageUpscaler, src: str | Path, dst: str | Path, overwrite: bool = False,
                 image: np.ndarray | None = None, progress: bool | str = False,
                 note: Callable[[str], Any] | None = None, **options) -> str:
    """Upscale one file to dst (atomic write): 'upscaled', or 'skipped' when dst exists; raises FILE_ERRORS.
    `image` is src already decoded (HxW[xC] array, e.g. by Ray Data), so the file is not read again; `note`
    gets a one-line remark worth telling (an animation of which only the first frame is upscaled)."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        return "skipped"
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError("the output would replace the input; give --suffix or another output folder")
    loaded = read_image(src) if image is None else loaded_from_array(image)
    if loaded.frames > 1 and note is not None:
        note(f"{src}: animated ({loaded.frames} frames); only the first frame is upscaled")
    out = upscaler.upscale_loaded([loaded], progress=progress, **options)[0]
    save_image(out.rgb, dst, bits=out.bits, alpha=out.alpha, grey=out.grey)
    return "upscaled"


def upscale_paths(upscaler: ImageUpscaler, inputs: Sequence[str | Path], out_dir: str | Path | None, suffix: str = "",
                  ext: str = "auto", overwrite: bool = False, rank: int = 0, world_size: int = 1,
                  progress: bool = True, targets: Sequence[str | Path] | None = None, **options) -> UpscaleCounts:
    """Upscale files[rank::world_size] into out_dir (atomic, skip existing); options go to the upscaler.
    `targets` gives each input's output path instead (e.g. one output file named by the user).

    Progress goes to stderr: on a terminal as ONE bar (of tiles for a single tiled image, of images for several);
    elsewhere (a log file) as one line per upscaled image, since a redrawn bar there is carriage-return noise."""
    from tqdm.auto import tqdm

    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    inputs = [Path(p) for p in inputs]
    if targets is None:
        targets = [output_path(p, out_dir, suffix, ext) for p in inputs]
    targets = [Path(t) for t in targets]
    if len(targets) != len(inputs):
        raise ValueError(f"{len(inputs)} inputs but {len(targets)} output paths")
    first_with: dict[Path, Path] = {}
    for src, dst in zip(inputs, targets):
        first_with.setdefault(dst, src)
    prefix = f"[{rank}/{world_size}] " if world_size > 1 else ""
    counts = {"upscaled": 0, "skipped": 0, "failed": 0}
    mine = list(zip(inputs, targets))[rank::world_size]
    live = progress and sys.stderr.isatty()
    tile_bar = f"{prefix}{mine[0][0].name}" if live and len(mine) == 1 else False  # the one bar counts its tiles

    def say(line: str) -> None:  # above a live bar, not through it
        tqdm.write(prefix + line, file=sys.stderr)

    bar = tqdm(mine, desc=f"{prefix}upscaling", unit="img", disable=not live or bool(tile_bar), file=sys.stderr)
    for i, (src, dst) in enumerate(bar, 1):
        if first_with[dst] != src:
            say(f"failed: {src}: same output name as {first_with[dst]}")
            counts["failed"] += 1
            continue
        try:
            status = upscale_file(upscaler, src, dst, overwrite, progress=tile_bar, note=say, **options)
        except FILE_ERRORS as e:
            counts["failed"] += 1
            say(f"failed: {failure_line(src, e)}")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        counts[status] += 1
        if progress and not live and status == "upscaled":
            say(f"{src} -> {dst} ({i}/{len(mine)})")
    print(f"{prefix}{counts['upscaled']} upscaled, {counts['skipped']} skipped (exist), {counts['failed']} failed",
          flush=True)
    return UpscaleCounts(counts["upscaled"], counts["skipped"], counts["failed"])
