"""Pictures people look at: comparison strips (LR | SR | HR ...) with labels, and the plots of `instantsr bench`
(perception-distortion, speed vs steps, time and memory vs pixels; they need matplotlib, imported on use:
`pip install 'instantsr[plots]'`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.nn import functional as F

from .evaluate import bicubic_baseline
from .io import list_images, read_image, save_image, to_array

if TYPE_CHECKING:
    from .timing import Setting


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


def pick_crops(lr: torch.Tensor, crop: int) -> dict[str, tuple[int, int]]:
    """Where to look in an LR image (3 x h x w in [0, 1]): the top-left (y, x) of a `crop`-px window that is
    the most detailed (highest mean gradient energy) and of one that is the flattest (lowest std) among those of
    mid brightness, not black or blown out: flat areas are where a grid or a colour cast shows first."""
    c = min(crop, *lr.shape[-2:])
    grey = lr.float().mean(0, keepdim=True)[None]
    gy, gx = grey.diff(dim=-2)[..., :, :-1], grey.diff(dim=-1)[..., :-1, :]
    energy = F.avg_pool2d(gy**2 + gx**2, c - 1, 1)[0, 0]
    mean = F.avg_pool2d(grey, c, 1)[0, 0]
    std = (F.avg_pool2d(grey**2, c, 1)[0, 0] - mean**2).clamp_min(0).sqrt()
    std = torch.where((mean > 0.2) & (mean < 0.9), std, std.max() + 1)

    def where(score):
        i = int(score.flatten().argmax())
        return divmod(i, score.shape[-1])

    return {"detailed": where(energy), "flat": where(-std)}


def plot_perception_distortion(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    for r in rows:
        if r.get("lpips") is None or r.get("psnr") is None:
            continue
        ax.scatter(r["lpips"], r["psnr"])
        steps = f"{r['steps']} {r['sampler'][:5]}" if r.get("sampler") else r["steps"]
        ax.annotate(f"{r['name']} ({steps})", (r["lpips"], r["psnr"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.set_xlabel("LPIPS (alex) ↓")
    ax.set_ylabel("PSNR-Y (dB) ↑")
    ax.set_title("Perception-distortion (label: model (steps))")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_speed(rows: list[dict], settings: Sequence[Setting], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    styles, markers = ["-", "--", ":", "-."], ["o", "s", "^", "D"]
    # one line per model and sampler; a row without a sampler (one step) belongs to each of its model's lines
    lines: dict[str, list[dict]] = {}
    for r in rows:
        samplers = {q["sampler"] for q in rows if q["name"] == r["name"] and q.get("sampler")}
        for sm in ([r["sampler"]] if r.get("sampler") else sorted(samplers) or [""]):
            lines.setdefault(f"{r['name']} {sm}".strip(), []).append(r)
    names = list(lines)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(names):
        mine = sorted(lines[name], key=lambda r: r["steps"])
        for j, s in enumerate(settings):
            pts = [(r["steps"], r[f"s_img_{s.key}"]) for r in mine if r.get(f"s_img_{s.key}")]
            if pts:
                ax.plot(*zip(*pts), styles[j % 4], marker=markers[j % 4], color=colours[i % len(colours)])
    # two small legends: colour = model, line and marker = setting
    ax.add_artist(ax.legend([Line2D([], [], color=colours[i % len(colours)], lw=3) for i in range(len(names))],
                            names, loc="upper center", fontsize=7, title="model", title_fontsize=7))
    ax.legend([Line2D([], [], color="0.3", ls=styles[j % 4], marker=markers[j % 4]) for j in range(len(settings))],
              [s.label() for s in settings], loc="lower right", fontsize=7, title="LR size", title_fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("steps (network passes per image for diffusion models)")
    ax.set_ylabel("seconds per image (median)")
    ax.set_title("Speed vs steps")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_scaling(rows: list[dict], settings: Sequence["Setting"], path: Path) -> None:
    """Seconds per image and peak memory against LR pixels (log-log), tiled and whole, one colour per model; a
    dotted line of slope 1 through each series' smallest size shows where cost stops being linear."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    one_image = [s for s in settings if s.batch == 1]
    tiles = sorted({s.tile or 0 for s in one_image}, reverse=True)  # each tile, then whole (0)
    styles = ["-", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1))]
    for i, r in enumerate(r for r in rows if r.get("passes_per_img")):
        for j, tile in enumerate(tiles):
            mine = sorted((s for s in one_image if (s.tile or 0) == tile), key=lambda s: s.size)
            label = f"{r['name']} ({r['steps']}), {f'tile {tile}' if tile else 'whole'}"
            for ax, key in ((ax_t, "s_img_"), (ax_m, "mem_mib_")):
                pts = [(s.size ** 2, r[key + s.key]) for s in mine if r.get(key + s.key)]
                if not pts:
                    continue
                style = styles[j % len(styles)] if tile else "--"
                ax.plot(*zip(*pts), linestyle=style, marker="o", color=colours[i % len(colours)], label=label)
                x0, y0 = pts[0]
                ax.plot([x0, pts[-1][0]], [y0, y0 * pts[-1][0] / x0], ":", color=colours[i % len(colours)],
                        alpha=0.5)
                for s in mine:
                    if r.get("oom_" + s.key) and key == "s_img_":
                        ax.annotate("out of memory", (s.size ** 2, pts[-1][1]), fontsize=7, rotation=90,
                                    va="bottom", color=colours[i % len(colours)])
    for ax, ylabel, title in ((ax_t, "seconds per image (median)", "Time vs pixels"),
                              (ax_m, "peak memory (MiB)", "Memory vs pixels")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("LR pixels (dotted: linear from the smallest size)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:  # nothing measured (all out of memory): no legend
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def crops_strip(lr_files: Sequence[Path], hr_dir: Path | None, sr_dirs: dict[str, Path], path: Path, crop: int,
                scale: int) -> None:
    """LR | bicubic | each candidate | HR, a central crop of `crop` LR pixels of each image, labelled; without
    `hr_dir` (an LR-only set) no HR column, and bicubic at `scale` x the LR size."""
    hr_files = {p.stem: p for p in list_images(hr_dir)} if hr_dir is not None else {}
    rows = []
    for f in lr_files:
        lr = read_image(f).rgb
        hr = read_image(hr_files[f.stem]).rgb if hr_dir is not None else None
        c = min(crop, *lr.shape[-2:])
        y, x = (lr.shape[-2] - c) // 2, (lr.shape[-1] - c) // 2
        big = (slice(y * scale, (y + c) * scale), slice(x * scale, (x + c) * scale))
        size = tuple(hr.shape[-2:]) if hr is not None else (lr.shape[-2] * scale, lr.shape[-1] * scale)
        panels = [lr[:, y:y + c, x:x + c], bicubic_baseline(lr, size)[:, big[0], big[1]]]
        panels += [read_image(d / f"{f.stem}.png").rgb[:, big[0], big[1]] for d in sr_dirs.values()]
        rows.append(tuple(panels + ([hr[:, big[0], big[1]]] if hr is not None else [])))
    comparison_strip(rows, ["LR", "bicubic", *sr_dirs] + (["HR"] if hr_dir is not None else []), path)
