"""Image files <-> tensors.

Tensors at the edges are float in [0, 1], CHW (one image) or NCHW (a batch), RGB. Reading keeps what a
writer needs to give back the same kind of file: the bit depth (8 or 16), whether the source was grey, and
the alpha channel (kept apart from the RGB so that models only ever see three channels).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
ANIMATED_FORMATS = ("GIF", "PNG", "WEBP")  # multi-frame files of these are animations: the first frame is read


class ImageReadError(ValueError):
    """A file that is missing, not an image, or cannot be decoded."""


@dataclass
class LoadedImage:
    rgb: torch.Tensor  # 3xHxW float in [0, 1]
    alpha: torch.Tensor | None = None  # 1xHxW float in [0, 1], or None
    bits: int = 8  # 8 or 16: the depth to write back
    grey: bool = False  # the source had one colour channel
    frames: int = 1  # frames of an animated source file, of which only the first was read

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return tuple(self.rgb.shape[-2:])


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name; hidden ones (a killed write's temp file, macOS ._
    files) are not images to process."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header by Pillow's own format parsers, without its pixel limit (only to
    name the size of a file over that limit)."""
    Image.init()
    try:
        with open(path, "rb") as f:
            prefix = f.read(16)
            for factory, accept in Image.OPEN.values():
                ok = accept is None or accept(prefix)
                if ok and not isinstance(ok, str):  # a str is a "maybe" warning, not a match
                    f.seek(0)
                    return factory(f, str(path)).size
    except Exception:  # noqa: BLE001 - best effort: the caller falls back to Pillow's own message
        return None
    return None


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) of an image file from its header, without decoding it; None when it cannot be told."""
    return _header_size(Path(path))


@contextmanager
def _strict_pixel_limit():
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _too_many_pixels(path: Path, e: Exception) -> ImageReadError:
    size = _header_size(path)
    what = f"{size[0]}x{size[1]} px (width x height)" if size else str(e).split(",")[0]
    return ImageReadError(f"{path}: {what} is over Pillow's limit of {Image.MAX_IMAGE_PIXELS} pixels (its guard "
                          "against decompression bombs); split or downscale it first")


def _array_to_float(arr: np.ndarray) -> tuple[np.ndarray, int]:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0, 8
    if arr.dtype in (np.uint16, np.int32, np.int16) or arr.dtype.kind in "iu":
        return arr.astype(np.float32) / 65535.0, 16
    if arr.dtype == bool:
        return arr.astype(np.float32), 8
    return np.clip(arr.astype(np.float32), 0, 1), 8


def read_image(path: str | Path) -> LoadedImage:
    """Read an image file (8/16-bit, grey, palette, RGBA, ...) as RGB floats plus alpha."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.stat().st_size == 0:  # Pillow would call it "not a readable image (cannot identify image file)"
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        # Over Pillow's pixel limit is refused, not only over twice it (where Pillow itself stops): one limit,
        # and no DecompressionBombWarning echoed in the middle of the output.
        with _strict_pixel_limit(), Image.open(path) as opened:
            im = opened
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr, bits, grey, alpha = np.array(im), 16, True, None
                arr = np.clip(arr, 0, 65535).astype(np.uint16)
            else:
                if mode == "P" or mode == "CMYK" or mode == "YCbCr" or mode == "1" or mode == "F":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                    mode = im.mode
                grey = mode in ("L", "LA")
                has_alpha = mode in ("LA", "RGBA", "PA")
                rgba = im.convert("RGBA" if has_alpha else "RGB")
                arr = np.array(rgba)
                alpha = arr[..., 3] if has_alpha else None
                arr = arr[..., :3]
                bits = 8
            # Pillow reads 16-bit RGB PNGs as 8-bit; fall back to reading raw 16-bit via numpy when available.
            if bits == 8 and path.suffix.lower() == ".png" and _png_bit_depth(path) == 16 and not grey:
                arr16 = _read_png16(path)
                if arr16 is not None:
                    arr, bits = arr16[..., :3], 16
                    alpha = arr16[..., 3] if arr16.shape[-1] == 4 else alpha
            # counted last: counting seeks through the frames
            frames = getattr(opened, "n_frames", 1) if opened.format in ANIMATED_FORMATS else 1
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _too_many_pixels(path, e) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: not a readable image ({e.__class__.__name__}: {e})") from None
    rgb, bits_ = _array_to_float(arr)
    bits = max(bits, bits_)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    rgb_t = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    alpha_t = None
    if alpha is not None:
        a, _ = _array_to_float(alpha)
        alpha_t = torch.from_numpy(np.ascontiguousarray(a))[None]
    return LoadedImage(rgb=rgb_t, alpha=alpha_t, bits=bits, grey=grey, frames=frames)


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 25 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return 8
    return head[24]


def _read_png16(path: Path) -> np.ndarray | None:
    """16-bit RGB(A) PNG as uint16 HxWxC, decoded with the stdlib (Pillow narrows these to 8 bits)."""
    import struct
    import zlib

    data = path.read_bytes()
    pos, idat, width = 8, [], 0
    color_type = interlace = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 16 or color_type not in (2, 6) or interlace:
                return None
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    channels = 3 if color_type == 2 else 4
    bpp = 2 * channels
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for r in range(height):  # PNG un-filtering is row-recursive; vectorised within a row where possible
        ftype, line = rows[r, 0], rows[r, 1:].astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 2:
            cur = (line + prev) & 0xFF
        else:
            cur = np.zeros(stride, dtype=np.int32)
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (line[i] + pred) & 0xFF
        out[r] = cur
        prev = cur
    return out.view(">u2").reshape(height, width, channels).astype(np.uint16)


def to_array(x: torch.Tensor, bits: int = 8) -> np.ndarray:
    """CHW float [0, 1] -> HxWxC integer array (uint8 or uint16), rounded."""
    scale = 65535.0 if bits == 16 else 255.0
    arr = (x.detach().float().clamp(0, 1) * scale).round().cpu().numpy()
    arr = arr.astype(np.uint16 if bits == 16 else np.uint8)
    return arr.transpose(1, 2, 0)


def save_image(
    rgb: torch.Tensor,
    path: str | Path,
    bits: int = 8,
    alpha: torch.Tensor | None = None,
    grey: bool = False,
    quality: int = 95,
) -> None:
    """Write an image atomically (temp file in the same folder, then rename): no half-written outputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if bits == 16 and suffix != ".png":
        bits = 8  # only PNG carries 16 bits here
    if grey:
        lum = rgb.mean(0, keepdim=True) if rgb.shape[0] == 3 else rgb
        chans = [lum] + ([alpha] if alpha is not None else [])
    else:
        chans = [rgb] + ([alpha] if alpha is not None else [])
    arr = to_array(torch.cat(chans, 0), bits)
    if suffix in (".jpg", ".jpeg") and arr.shape[-1] in (2, 4):
        arr = arr[..., :-1]  # JPEG has no alpha
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    PENDING_WRITES.add(tmp)
    try:
        if bits == 16:
            _write_png16(arr, tmp)
        else:
            arr2 = arr[..., 0] if arr.shape[-1] == 1 else arr
            # JPEG at `quality`; WebP lossless, like PNG (an SR output should not be re-compressed lossily)
            kw = {"quality": quality} if suffix in (".jpg", ".jpeg") else {"lossless": True} if suffix == ".webp" else \
                {"compress_level": PNG_COMPRESS_LEVEL} if suffix == ".png" else {}
            Image.fromarray(arr2).save(tmp, format=_pil_format(suffix), **kw)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        PENDING_WRITES.discard(tmp)


# Temp files being written right now (by any thread): an interrupted run removes them (`remove_pending_writes`)
# before it exits, as it cannot wait for the writing thread to unwind.
PENDING_WRITES: set[str] = set()


def remove_pending_writes() -> None:
    """Delete the temp files of writes still in progress (called on Ctrl-C before the process exits)."""
    for tmp in list(PENDING_WRITES):
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# zlib level of written PNGs: 1, OpenCV's default, as upscaler CLIs write them. Pillow's 6 took 5.5 s against 1.3 s
# for a 12 MP output (10 % smaller files), as long as a third of the one network pass that made it.
PNG_COMPRESS_LEVEL = 1

PIL_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
               ".webp": "WEBP"}  # what save_image writes, by suffix


def _pil_format(suffix: str) -> str:
    return PIL_FORMATS.get(suffix, "PNG")


def _write_png16(arr: np.ndarray, path: str) -> None:
    """uint16 HxWxC (C in 1..4) -> 16-bit PNG with the stdlib (Pillow cannot write 16-bit RGB)."""
    import struct
    import zlib

    h, w, c = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = np.zeros((h, 1 + w * c * 2), dtype=np.uint8)
    raw[:, 1:] = arr.astype(">u2").reshape(h, -1).view(np.uint8)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw.tobytes(), PNG_COMPRESS_LEVEL)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def load_rgb(path: str | Path) -> torch.Tensor:
    """Just the RGB of an image file as a 3xHxW float tensor in [0, 1]."""
    return read_image(path).rgb


# ---- images of every kind (PIL, numpy, tensors) <-> LoadedImage ------------------------------------------
def _from_tensor(t: torch.Tensor, bits: int = 8) -> LoadedImage:
    """CxHxW float in [0, 1], C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA)."""
    if t.ndim != 3 or t.shape[0] not in (1, 2, 3, 4):
        raise ValueError(f"expected an image of shape C x H x W with C in 1..4, got {tuple(t.shape)}")
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


def loaded_from_array(a: np.ndarray) -> LoadedImage:
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
        return loaded_from_array(arr), lambda img: Image.fromarray(_to_numpy(img, arr).astype(out_dtype))
    if mode not in ("L", "LA", "RGB", "RGBA"):
        has_alpha = "A" in mode or "a" in mode or "transparency" in im.info
        mode = ("LA" if has_alpha else "L") if mode in ("1", "La") else ("RGBA" if has_alpha else "RGB")
        im = im.convert(mode)
    arr = np.asarray(im)
    return loaded_from_array(arr), lambda img: Image.fromarray(_to_numpy(img, arr))


def to_loaded(image: Any) -> tuple[list[LoadedImage], Callable[[list[LoadedImage]], Any]]:
    """Any accepted input -> LoadedImages, and the function that turns results back into the same kind."""
    if isinstance(image, (list, tuple)):
        parts = [to_loaded(im) for im in image]
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
        return [loaded_from_array(image)], lambda outs: _to_numpy(outs[0], image)
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
