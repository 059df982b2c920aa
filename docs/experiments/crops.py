"""The images the experiments here score on: centre crops of the RealSR x4 test pairs in ../shared/data."""

from pathlib import Path

import torch

from instantsr.io import read_image

shared = Path(__file__).resolve().parents[3] / "shared/data"


def centre(image: torch.Tensor, size: int) -> tuple[int, int]:
    """(top, left) of the centred size x size crop."""
    return (image.shape[-2] - size) // 2, (image.shape[-1] - size) // 2


def realsr_crops(n: int = 20, size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """(LR, HR) centre crops (size px LR, 4 size px HR) of the first n RealSR x4 pairs, in [0, 1]."""
    lrs, hrs = [], []
    for f in sorted((shared / "test/realsr/lr").iterdir())[:n]:
        lr, hr = read_image(f).rgb, read_image(shared / "test/realsr/hr" / f.name).rgb
        top, left = centre(lr, size)
        lrs.append(lr[:, top:top + size, left:left + size])
        hrs.append(hr[:, 4 * top:4 * (top + size), 4 * left:4 * (left + size)])
    return torch.stack(lrs), torch.stack(hrs)
