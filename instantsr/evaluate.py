"""Evaluate SR outputs against HR folders (or alone, for no-reference metrics): per-image rows, a summary,
a terminal table, CSV and JSON. `instantsr eval` and `instantsr bench` both use this."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data import find_images
from .io import ImageReadError, read_image


def bicubic_baseline(lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Plain bicubic upscaling (MATLAB imresize, the papers' baseline) of a 3xhxw LR image to `size`."""
    from .imresize import imresize

    return imresize(lr[None], size=size)[0].clamp(0, 1)


def some(names: list[str], n: int = 5) -> str:
    """'a, b, c' naming at most n, then 'and K more'."""
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def whole_scale(sr: torch.Tensor, lr: torch.Tensor) -> int | None:
    """SR size / LR size when it is the same whole number for both sides, else None."""
    (h, w), (lh, lw) = sr.shape[-2:], lr.shape[-2:]
    if lh == 0 or lw == 0 or h % lh or w % lw or h // lh != w // lw:
        return None
    return h // lh


def evaluate_folder(sr_dir: str | Path | None, hr_dir: str | Path | None, metrics: list[str],
                    lr_dir: str | Path | None = None, device: str = "cpu", crop_border: int = 0,
                    suite=None, desc: str = "eval", name_unpaired_hr: bool = False, scale: int | None = None,
                    grid_period: int = 4) -> tuple[list[dict], dict]:
    """Score every image of `sr_dir` (or, when `sr_dir` is None, bicubic of `lr_dir`) against `hr_dir`.

    Pairs are matched by file stem; an SR image whose size differs from its HR, or without an HR partner,
    is left out and named in one line on stderr (as are animations, scored on their first frame, and with
    `name_unpaired_hr` the HR images without a partner: `instantsr eval`, not bench, which scores a subset).
    With `lr_dir` beside `sr_dir`, each SR image's LR partner (same stem) goes to the suite for the metrics that
    need it (``color``), at the scale SR size / LR size; when such a metric is asked for, an SR image without an
    LR partner, or whose size is not a whole multiple of its LR's, is left out the same way. The bicubic path
    (`sr_dir` None) upscales each LR image to its HR's size, or without `hr_dir` by `scale` (default: the
    suite's, 4), and passes the LR along too. `scale` and `grid_period` configure the suite when none is given.
    Returns (rows, summary) where summary holds the means."""
    from .metrics import FULL_REFERENCE, NEEDS_LR, MetricSuite

    suite = suite or MetricSuite(metrics, device=device, crop_border=crop_border, grid_period=grid_period,
                                 scale=scale or 4)
    up = int(scale or getattr(suite, "scale", 4))  # the bicubic path's factor where there is no HR
    source = Path(sr_dir if sr_dir is not None else lr_dir)
    hr_files = {p.stem: p for p in find_images(hr_dir, recursive=False)} if hr_dir else {}
    needs_hr = any(m in FULL_REFERENCE for m in metrics)
    if needs_hr and not hr_files:
        raise ValueError(f"metrics {', '.join(m for m in metrics if m in FULL_REFERENCE)} need --hr")
    needs_lr = any(m in NEEDS_LR for m in metrics)
    if needs_lr and lr_dir is None:
        raise ValueError(f"metric(s) {', '.join(m for m in metrics if m in NEEDS_LR)} need the LR images: "
                         "give --lr LR_DIR")
    lr_files = {p.stem: p for p in find_images(lr_dir, recursive=False)} if sr_dir is not None and lr_dir else {}
    rows, problems, animated = [], [], []
    sources = find_images(source, recursive=False)
    # a bar redrawn in place only on a terminal: in a log it is carriage-return noise
    for path in tqdm(sources, desc=desc, leave=False, file=sys.stderr, disable=not sys.stderr.isatty()):
        try:
            loaded = read_image(path)
            img, hr, lr = loaded.rgb, None, None
            if loaded.frames > 1:
                animated.append(path.name)
            if sr_dir is None:
                lr = img
            if hr_files:
                if path.stem not in hr_files:
                    problems.append(f"{path.name}: no HR image of that name")
                    continue
                hr = read_image(hr_files[path.stem]).rgb
                if sr_dir is None:
                    img = bicubic_baseline(img, tuple(hr.shape[-2:]))
                if img.shape != hr.shape:
                    problems.append(f"{path.name} is {img.shape[-1]}x{img.shape[-2]} px, its HR image "
                                    f"{hr.shape[-1]}x{hr.shape[-2]} px (width x height)")
                    continue
            elif sr_dir is None:
                img = bicubic_baseline(img, (img.shape[-2] * up, img.shape[-1] * up))
            if lr_files:
                if path.stem in lr_files:
                    lr = read_image(lr_files[path.stem]).rgb
                elif needs_lr:
                    problems.append(f"{path.name}: no LR image of that name")
                    continue
            lr_scale = whole_scale(img, lr) if lr is not None else None
            if lr is not None and lr_scale is None:
                if needs_lr:
                    problems.append(f"{path.name} is {img.shape[-1]}x{img.shape[-2]} px, its LR image "
                                    f"{lr.shape[-1]}x{lr.shape[-2]} px: not a whole-number scale")
                    continue
                lr = None  # not needed
        except ImageReadError as e:
            problems.append(str(e))
            continue
        with torch.no_grad():
            scores = suite(img[None].to(device), None if hr is None else hr[None].to(device),
                           None if lr is None else lr[None].to(device), scale=lr_scale)
        rows.append({"image": path.name, **{k: float(v[0]) for k, v in scores.items()}})
    # plain lines, not Python warnings: they are for the person at the terminal
    if problems:
        print(f"{source}: {len(problems)} image(s) left out: " + "; ".join(problems[:5])
              + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""), file=sys.stderr)
    if animated:
        print(f"{source}: {len(animated)} animated image(s) scored on their first frame: {some(animated)}",
              file=sys.stderr)
    stems = {p.stem for p in sources}
    unpaired = sorted(p.name for stem, p in hr_files.items() if stem not in stems)
    if name_unpaired_hr and unpaired:
        print(f"{hr_dir}: {len(unpaired)} HR image(s) have no {'SR' if sr_dir is not None else 'LR'} partner: "
              f"{some(unpaired)}", file=sys.stderr)
    if not rows:
        raise ValueError(f"no image of {source} could be scored")
    summary = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "image"}
    summary["images"] = len(rows)
    return rows, summary


def format_table(summaries: dict[str, dict], metrics: list[str]) -> str:
    """A Markdown table, one row per method, with the direction of each metric in the header."""
    from .metrics import HIGHER_IS_BETTER

    head = ["method"] + [f"{m} {'↑' if HIGHER_IS_BETTER.get(m, True) else '↓'}" for m in metrics] + ["images"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summaries.items():
        cells = [name] + [f"{s[m]:.4f}" if m in s else "-" for m in metrics] + [str(s.get("images", ""))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_rows_csv(rows: list[dict], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def write_json(data, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
