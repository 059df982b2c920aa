"""Side-by-side crops of upscalers on your own photos (LR only, no reference needed): `instantsr compare`.

For each photo: windows of it (picked on the photo alone, a detailed one and a flat one, as `viz.pick_crops`
finds them, or given as X,Y,SIZE), each upscaled by every upscaler (bicubic, the models, Real-ESRGAN x4plus) and
shown at 100 % side by side in one labelled PNG strip per photo; `index.html` shows the strips of every photo.

Each upscaler sees the window plus `context` LR pixels around it (clipped at the photo's edges), not the whole
photo, so that a 12 MP photo through Real-ESRGAN on a CPU takes seconds, not minutes. What a model makes of a
window is then close to, not the same as, its crop of the whole photo: its GroupNorms see the cut-out's
statistics, and a model that draws noise draws it for the cut-out (with the same seed). Bicubic is exact with 4
px of context. `context=None` runs whole photos, as `instantsr upscale` does.
"""

from __future__ import annotations

import html
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .io import read_image
from .viz import comparison_strip, pick_crops

BASELINES = ("bicubic", "realesrgan")


@dataclass(frozen=True)
class Window:
    """A square of the LR photo: top-left (x, y) and side, in LR pixels; `kind` says how it was chosen."""

    x: int
    y: int
    size: int
    kind: str = "given"


def parse_window(text: str) -> Window:
    """'X,Y,SIZE' in LR pixels (the photo's own)."""
    try:
        x, y, size = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--crop {text}: give X,Y,SIZE in the photo's pixels, e.g. --crop 120,80,48") from None
    if x < 0 or y < 0 or size < 8:
        raise ValueError(f"--crop {text}: X and Y at least 0, SIZE at least 8 px")
    return Window(x, y, size)


def windows_of(lr: torch.Tensor, given: Sequence[Window], size: int, name: str) -> list[Window]:
    """The given windows (each must lie inside the photo), or a detailed and a flat one picked on the photo."""
    h, w = lr.shape[-2:]
    if given:
        for win in given:
            if win.x + win.size > w or win.y + win.size > h:
                raise ValueError(f"{name}: --crop {win.x},{win.y},{win.size} reaches past the photo ({w}x{h} px)")
        return list(given)
    c = min(size, h, w)
    return [Window(x, y, c, kind) for kind, (y, x) in pick_crops(lr, c).items()]


def upscale_window(run: Callable[[torch.Tensor], torch.Tensor], lr: torch.Tensor, win: Window, scale: int,
                   context: int | None) -> torch.Tensor:
    """`run` (LR batch -> SR batch) on the window plus `context` LR px around it (None: the whole photo); the
    window's part of the output, (3, size*scale, size*scale)."""
    h, w = lr.shape[-2:]
    if context is None:
        y0, x0, y1, x1 = 0, 0, h, w
    else:
        y0, x0 = max(0, win.y - context), max(0, win.x - context)
        y1, x1 = min(h, win.y + win.size + context), min(w, win.x + win.size + context)
    sr = run(lr[None, :, y0:y1, x0:x1])[0]
    top, left = (win.y - y0) * scale, (win.x - x0) * scale
    return sr[:, top:top + win.size * scale, left:left + win.size * scale].float().cpu()


def write_index(out: Path, entries: list[tuple[str, str, list[Window]]], labels: list[str]) -> None:
    """out/index.html: every photo's strip, with its windows named; written atomically."""
    parts = ["<!doctype html><meta charset='utf-8'><title>instantsr compare</title>",
             "<style>body{font-family:sans-serif;background:#222;color:#ddd}img{image-rendering:pixelated;"
             "max-width:100%}</style>",
             f"<h1>instantsr compare</h1><p>Columns: {html.escape(' | '.join(labels))}. Crops at 100 %.</p>"]
    for photo, strip, wins in entries:
        where = "; ".join(f"{w.kind} at x={w.x}, y={w.y}, {w.size} px" for w in wins)
        parts.append(f"<h2>{html.escape(photo)}</h2><p>rows: {html.escape(where)} (LR pixels)</p>"
                     f"<img src='{html.escape(strip)}' alt='{html.escape(photo)}'>")
    fd, tmp = tempfile.mkstemp(prefix=".index.", suffix=".html", dir=out)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(parts) + "\n")
    os.replace(tmp, out / "index.html")


def compare_photos(photos: Sequence[Path], out: Path, upscalers: dict[str, Callable[[torch.Tensor], torch.Tensor]],
                   scale: int, windows: Sequence[Window] = (), size: int = 48,
                   context: int | None = 32, progress: bool = True) -> tuple[int, int]:
    """Write out/<photo stem>.png for each photo and out/index.html; returns (written, failed). A photo that
    cannot be read, or whose windows do not fit, is named in one line on stderr and the others go on."""
    out.mkdir(parents=True, exist_ok=True)
    labels = ["LR", *upscalers]
    entries, failed = [], 0
    for photo in tqdm(photos, desc="compare", unit="photo", disable=not progress or len(photos) < 2):
        try:
            lr = read_image(photo).rgb
            wins = windows_of(lr, windows, size, photo.name)
        except ValueError as e:
            print(f"failed: {e}", file=sys.stderr)  # as `instantsr upscale` says it
            failed += 1
            continue
        rows = []
        for win in wins:
            crop = lr[:, win.y:win.y + win.size, win.x:win.x + win.size]
            rows.append((crop, *(upscale_window(run, lr, win, scale, context) for run in upscalers.values())))
        strip = f"{photo.stem}.png"
        comparison_strip(rows, labels, out / strip, height=wins[0].size * scale)  # one SR pixel, one strip pixel
        entries.append((photo.name, strip, wins))
    write_index(out, entries, labels)
    return len(entries), failed
