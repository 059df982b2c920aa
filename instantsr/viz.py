"""Pictures people look at: comparison strips (LR | SR | HR ...) with labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.nn import functional as F

from .io import save_image, to_array


def comparison_strip(rows: list[tuple[torch.Tensor, ...]], labels: list[str], path: str | Path,
                     height: int = 192) -> None:
    """One row per image, one column per label; every panel resized (nearest) to the same height.

    Panels smaller than the largest one in a row (e.g. the LR image) are upscaled by nearest neighbour so
    that pixels stay visible, as upscaler comparisons show them."""
    panels = []
    for row in rows:
        resized = []
        for img in row:
            img = img.float().clamp(0, 1)
            w = round(img.shape[-1] * height / img.shape[-2])
            resized.append(F.interpolate(img[None], size=(height, w), mode="nearest")[0])
        panels.append(torch.cat(resized, -1))
    width = max(p.shape[-1] for p in panels)
    label_h = 18
    canvas = torch.ones(3, label_h + sum(p.shape[-2] for p in panels), width)
    y = label_h
    for p in panels:
        canvas[:, y : y + p.shape[-2], : p.shape[-1]] = p
        y += p.shape[-2]
    im = Image.fromarray(to_array(canvas))
    draw = ImageDraw.Draw(im)
    col_w = panels[0].shape[-1] // max(1, len(labels)) if panels else width
    for i, label in enumerate(labels):
        draw.text((i * col_w + 4, 3), label, fill=(0, 0, 0))
    arr = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255
    save_image(arr, path)
