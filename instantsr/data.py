"""Datasets: HR folders with random crops (for training; LR is made on the fly by `instantsr.degrade`), paired
LR/HR folders and LR-only folders (for evaluation).

A corrupt or unreadable file is named in one warning and skipped; an empty folder is a clear error.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import Dataset

from .io import IMAGE_SUFFIXES, ImageReadError, list_images, read_image


class EmptyFolderError(FileNotFoundError):
    pass


def find_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Image files in `folder` (and its sub-folders), sorted; an error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    if recursive:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        files = list_images(folder)
    if not files:
        raise EmptyFolderError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return files


class HRCropDataset(Dataset):
    """Random `crop`x`crop` crops of HR images with flips and 90-degree rotations, as 3xHxW floats in [0, 1].

    Images smaller than the crop are reflect-padded up to it (said once). With `cache=True` the decoded images
    are kept in memory as uint8 (worth it for a few hundred photos; DataLoader workers share them on fork).
    `scales` is Real-ESRGAN's multi-scale HR (its generate_multiscale_DF2K.py: 1, 0.75, 0.5, 1/3), drawn per
    crop instead of stored: each crop is the image downscaled by one of them (antialiased bicubic), among
    those that leave its short side at least the crop. Downscaling also averages away film grain and JPEG
    noise, which our teacher drew at 15 steps (README, "Known problems").
    """

    def __init__(self, folder: str | Path, crop: int = 256, augment: bool = True, cache: bool = False,
                 min_side: int = 8, scales: Sequence[float] = (1.0,)):
        self.files = find_images(folder)
        if not scales or not all(0 < s <= 1 for s in scales):
            raise ValueError(f"HR scales must be in (0, 1], not {list(scales)}")
        self.crop, self.augment, self.min_side, self.scales = crop, augment, min_side, tuple(scales)
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        self._bad: set[int] = set()
        self._said_small = False
        self._check_headers()

    def _check_headers(self) -> None:
        good = []
        for p in self.files:
            try:
                with Image.open(p) as im:
                    w, h = im.size
                if min(w, h) < self.min_side:
                    raise ImageReadError(f"smaller than {self.min_side} px")
                good.append(p)
            except Exception as e:  # noqa: BLE001 - any unreadable file is skipped with a warning
                warnings.warn(f"skipping {p}: not a usable image ({e})", stacklevel=3)
        if not good:
            raise EmptyFolderError("no readable images among " + str(len(self.files)) + " files")
        self.files = good

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, i: int) -> np.ndarray:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        arr = (read_image(self.files[i]).rgb.numpy() * 255).round().astype(np.uint8)
        if self._cache is not None:
            self._cache[i] = arr
        return arr

    def __getitem__(self, index: int | tuple[int, int]):
        # A (file index, seed) pair makes the crop reproducible for a given training step (see StepSampler);
        # the item is then (crop, seed) so that the collate can seed the degradation too.
        i, seed = index if isinstance(index, tuple) else (index, None)
        rng = np.random.default_rng(seed)
        for _ in range(len(self.files)):
            try:
                arr = self._load(i)
                break
            except ImageReadError as e:
                if i not in self._bad:
                    warnings.warn(f"skipping {self.files[i]}: {e}", stacklevel=2)
                    self._bad.add(i)
                i = (i + 1) % len(self.files)
        else:
            raise EmptyFolderError("no readable images left")
        c, h, w = arr.shape
        size = self.crop  # the region read from the image: crop / scale
        if self.scales != (1.0,):  # (no extra random draw otherwise: single-scale crops stay as they were)
            fits = [s for s in self.scales if s * min(h, w) >= self.crop] or [max(self.scales)]
            size = round(self.crop / fits[int(rng.integers(len(fits)))])
        if h < size or w < size:
            if not self._said_small:
                warnings.warn(f"some images are smaller than the {size}px crop; they are reflect-padded",
                              stacklevel=2)
                self._said_small = True
            ph, pw = max(0, size - h), max(0, size - w)
            arr = np.pad(arr, ((0, 0), (0, ph), (0, pw)), mode="reflect" if min(h, w) > max(ph, pw) else "edge")
            h, w = arr.shape[1:]
        top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        patch = arr[:, top : top + size, left : left + size]
        if self.augment:
            if rng.random() < 0.5:
                patch = patch[:, :, ::-1]
            patch = np.rot90(patch, k=int(rng.integers(0, 4)), axes=(1, 2))
        crop = torch.from_numpy(np.ascontiguousarray(patch)).float().div_(255)
        if size != self.crop:
            crop = F.interpolate(crop[None], size=(self.crop, self.crop), mode="bicubic", antialias=True)[0]
            crop = crop.clamp_(0, 1)
        return crop if seed is None else (crop, seed)


def degrade_collate(items, scale: int = 4, preset: str = "realesrgan"):
    """(crop, seed) items -> (hr, kernels, seed): the crops, their Real-ESRGAN blur kernels (the per-image
    Python work of the degradation, done here in the DataLoader worker; None for the other presets) and the
    seed of the pixel work that `degrade_pairs` then runs on the training device. All are seeded by the items'
    seeds: the same step gives the same LR in any run on the same device."""
    from .degrade import DegradationConfig, crop_to_multiple, draw_kernels

    hr = crop_to_multiple(torch.stack([c for c, _ in items]), scale)
    kernel_seed, pixel_seed = np.random.SeedSequence([s for _, s in items]).generate_state(2, np.uint64) >> 1
    kernels = None
    if preset == "realesrgan":
        generator = torch.Generator().manual_seed(int(kernel_seed))
        kernels = draw_kernels(len(items), DegradationConfig(scale=scale), generator)
    return hr, kernels, int(pixel_seed)


def degrade_pairs(batch, device: torch.device | str = "cpu", scale: int | Sequence[int] = 4,
                  preset: str = "realesrgan", clean_fraction: float = 0.0):
    """A `degrade_collate` batch -> (hr, lr) on `device`, degraded there (on a GPU the CPU does not bound
    training). The first round(clean_fraction * batch) pairs get plain bicubic LR instead (the batch is a random
    draw, so which ones does not matter).

    With several scales (a tuple), lr is {scale: LR}: every scale from the same HR, the same blur kernels and the
    same random stream (YONOS-SR's teacher at s/2 and student at s see one degradation, as far as the sizes let
    the draws agree: the second round's noise has the size of that scale's image)."""
    from .degrade import make_lr

    if not 0 <= clean_fraction <= 1:
        raise ValueError(f"clean_fraction must be between 0 and 1, not {clean_fraction}")
    hr, kernels, seed = batch
    hr = hr.to(device, non_blocking=True)
    clean = round(clean_fraction * hr.shape[0])
    lrs = {}
    for s in (scale if isinstance(scale, (tuple, list)) else (scale,)):
        lr = make_lr(hr, s, preset, torch.Generator(hr.device).manual_seed(seed), kernels)
        if clean:
            lr[:clean] = make_lr(hr[:clean], s, "bicubic")
        lrs[s] = lr
    return hr, (lrs if isinstance(scale, (tuple, list)) else lrs[scale])


class StepSampler(torch.utils.data.Sampler):
    """Infinite sampler whose batch for step s depends only on (seed, s, rank): a resumed run sees the same
    data as an uninterrupted one, and each process of a multi-process run sees its own share."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, start_step: int = 0, rank: int = 0):
        self.n, self.batch_size, self.seed, self.start_step, self.rank = n, batch_size, seed, start_step, rank

    def __iter__(self):
        step = self.start_step
        while True:
            rng = np.random.default_rng((self.seed, step, self.rank))
            for i in rng.integers(0, self.n, self.batch_size):
                yield int(i), int(rng.integers(0, 2**31))
            step += 1


class PairedFolder(Dataset):
    """LR/HR pairs matched by file stem. Items: (name, lr 3xhxw, hr 3xHxW) in [0, 1]."""

    def __init__(self, lr_dir: str | Path, hr_dir: str | Path):
        lr = {p.stem: p for p in find_images(lr_dir, recursive=False)}
        hr = {p.stem: p for p in find_images(hr_dir, recursive=False)}
        common = sorted(lr.keys() & hr.keys())
        if not common:
            raise EmptyFolderError(f"no file names in common between {lr_dir} and {hr_dir}")
        missing = sorted(lr.keys() ^ hr.keys())
        if missing:
            warnings.warn(f"{len(missing)} images have no partner and are left out (e.g. {', '.join(missing[:3])})",
                          stacklevel=2)
        self.pairs = [(s, lr[s], hr[s]) for s in common]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        name, lr, hr = self.pairs[i]
        return name, read_image(lr).rgb, read_image(hr).rgb


class ImageFolder(Dataset):
    """Images of one folder (LR-only sets, or SR outputs). Items: (name, image 3xHxW in [0, 1])."""

    def __init__(self, folder: str | Path):
        self.files = find_images(folder, recursive=False)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return self.files[i].stem, read_image(self.files[i]).rgb
