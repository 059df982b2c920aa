"""Tiles: overlapping crops of a grid, run by any function and blended back without seams.

Tiles are blended with a Tukey window: flat in the middle and at image borders, raised-cosine ramps exactly over
each overlap, so the windows of neighbouring tiles sum to 1 and no weight is ever 0. `TiledDenoiser` runs a
denoiser on latent tiles at EVERY sampling step and blends the x0 predictions, so tiles agree and every sampler
works unchanged.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Callable, Sequence

import torch
from torch.nn import functional as F

def tile_spans(length: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """[start, end) of equal tiles covering [0, length), evenly spaced, starts on multiples of `align`; neighbours
    overlap by at least `overlap` rounded up to a multiple of `align`.

    The tile is `tile` rounded down to a multiple of `align` (at least `align`). When that leaves no room for the
    overlap (tile <= overlap), the tile grows to twice the overlap: the smallest tile whose neighbours overlap by
    `overlap` with no third tile reaching into the overlap."""
    if length % align:
        raise ValueError(f"length {length} is not a multiple of {align}")
    # in units of `align`
    units, size = length // align, max(1, tile // align)
    lap = -(-max(overlap, 0) // align)
    if size <= lap:
        size = 2 * lap
    if units <= size:
        return [(0, length)]
    n = -(-(units - size) // (size - lap)) + 1  # the fewest tiles whose steps are all <= size - lap
    step = Fraction(units - size, n - 1)  # >= 1, so rounded starts are distinct and steps stay <= size - lap
    starts = [math.floor(k * step + Fraction(1, 2)) * align for k in range(n)]
    return [(s, s + size * align) for s in starts]


def chop_starts(length: int, size: int, stride: int) -> list[int]:
    """Starts of the official ResShift / SinSR chops of one side (their `ImageSpliterTh.extract_starts`): every
    `stride` px, the last ones moved back to end at `length`, duplicates dropped; [0] when it fits in one chop."""
    if length <= size:
        return [0]
    return list(dict.fromkeys(min(s, length - size) for s in range(0, length, stride)))


def _ramp(n: int) -> torch.Tensor:
    """Raised-cosine ramp up over n samples, strictly between 0 and 1; ramp + flipped ramp = 1."""
    i = torch.arange(n, dtype=torch.float64)
    return torch.sin(math.pi * (i + 0.5) / (2 * n)) ** 2


def span_windows(spans: Sequence[tuple[int, int]], scale: int = 1) -> list[torch.Tensor]:
    """1-D windows of the tiles at `scale`x resolution that sum to 1 everywhere: Tukey windows (ramps exactly over
    the overlaps, flat elsewhere), divided by their sum where three tiles overlap (the ramps of two neighbours
    are complementary on their own)."""
    windows = []
    for k, (start, end) in enumerate(spans):
        w = torch.ones((end - start) * scale, dtype=torch.float64)
        if k > 0 and spans[k - 1][1] > start:
            n = min((spans[k - 1][1] - start) * scale, len(w))
            w[:n] *= _ramp(n)
        if k + 1 < len(spans) and spans[k + 1][0] < end:
            n = min((end - spans[k + 1][0]) * scale, len(w))
            w[len(w) - n:] *= _ramp(n).flip(0)
        windows.append(w)
    total = torch.zeros(max(end for _, end in spans) * scale, dtype=torch.float64)
    for (start, end), w in zip(spans, windows):
        total[start * scale:end * scale] += w
    return [(w / total[start * scale:end * scale]).float() for (start, end), w in zip(spans, windows)]


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
    def _conds(cond) -> list[torch.Tensor]:  # cond: a tensor, a Condition / tuple of tensors, or None
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
            # a Condition (NamedTuple) or plain tuple is rebuilt as its own type, each part cropped
            rest = type(cond)(*crops[1:]) if isinstance(cond, tuple) else (crops[1] if cond is not None else None)
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
