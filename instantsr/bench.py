"""`instantsr bench`: speed, memory, size and quality of SR models side by side, with the conditions.

Every model runs as one or more *candidates* (a model at one step count): teachers (max_steps > 1) at
each of `steps`, students at their own step count, Real-ESRGAN x4plus at 1 pass, bicubic at 0. Each
candidate goes through the same two measurements:

- speed: seconds per image at each setting (LR size x batch, or LR size tiled), after warm-up runs, with
  the device synchronised around every timed run; median and min/max over the repeats; the peak memory of
  the setting (CUDA: `max_memory_allocated`, weights included; CPU: the rise of the peak RSS over the RSS
  before the setting, the kernel's high-water mark being reset through /proc/self/clear_refs); network
  passes per image, counted by a forward hook on the network.
- quality: SR images of a paired folder written as 8-bit PNGs (as `instantsr upscale` writes them) and
  scored by `instantsr.evaluate.evaluate_folder`, the code of `instantsr eval`; bicubic is scored exactly as
  `instantsr eval --baseline bicubic`. With LR images alone (no HR), the metrics that need no HR
  (niqe, grid, grid_levels, color: `instantsr.metrics.NO_HR`) on those, and a strip without the HR column.

`run_bench` writes report.md, bench.csv, images.csv, conditions.json and (with matplotlib) the
perception-distortion plot, the speed-vs-steps plot and a comparison strip of crops. The measurements and their
conditions are in :mod:`instantsr.timing`, the pictures in :mod:`instantsr.viz`; this module chooses the
candidates, runs them and writes the report.
"""

from __future__ import annotations

import csv
import math
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .diffusion.family import FAMILIES
from .evaluate import bicubic_baseline, evaluate_folder, write_json, write_rows_csv
from .io import read_image, save_image
from .model import model_folder
from .pipeline import Upscaler, blend_tiles, parse_dtype
from .timing import (Setting, available_mib, conditions, count_passes, out_of_memory, speed_settings,
                     time_setting)
from .viz import crops_strip, plot_perception_distortion, plot_scaling, plot_speed

DEFAULT_STEPS = (1, 4, 15)
METRIC_LABELS = {"psnr": "PSNR-Y ↑", "ssim": "SSIM-Y ↑", "lpips": "LPIPS ↓", "dists": "DISTS ↓",
                 "niqe": "NIQE ↓", "grid": "grid ↓", "grid_levels": "grid_levels ↓", "color": "color ↓"}


# ---- what is benchmarked ----------------------------------------------------------------------------------
@dataclass
class Candidate:
    """One model at one step count. `run(lq, tile, overlap, batch)` maps an LR batch (N,3,h,w) in [0, 1] on
    the device to SR (N,3,sh,sw) in [0, 1]; `network` is the module whose forward calls are network passes."""

    name: str
    steps: int
    params: int
    source: str
    run: Callable[[torch.Tensor, int | None, int, int], torch.Tensor]
    network: nn.Module | None = None
    scale: int = 4
    sampler: str = ""  # a teacher's sampler at several steps; "" where there is no choice (one step, others)
    passes: int | None = None  # network passes per image where no hook can count them (an ONNX graph)
    tiles: bool = True  # False: whole images only (an ONNX graph): its tiled settings are not timed

    @property
    def label(self) -> str:
        if self.name in ("bicubic", "realesrgan"):
            return self.name
        sampler = f", {self.sampler}" if self.sampler else ""
        return f"{self.name} ({self.steps} step{'' if self.steps == 1 else 's'}{sampler})"

    @property
    def slug(self) -> str:
        return f"{self.name}-s{self.steps}" + (f"-{self.sampler}" if self.sampler else "")


class RealESRGANUpscaler:
    """Real-ESRGAN x4plus with the Upscaler's `upscale_tensor` interface: batches, or blended tiles."""

    scale = 4

    def __init__(self, net: nn.Module, dtype: torch.dtype = torch.float32):
        self.net = net.to(dtype).eval()
        self.dtype = dtype

    @torch.no_grad()
    def upscale_tensor(self, lq: torch.Tensor, tile: int | None = None, tile_overlap: int = 32,
                       batch_size: int = 4, **_) -> torch.Tensor:
        device = next(self.net.parameters()).device
        lq = lq.to(device, self.dtype)
        if tile and max(lq.shape[-2:]) > tile:  # one image at a time; batch_size counts tiles
            outs = [blend_tiles(lambda crops, n: self.net(crops[0]), [lq[i:i + 1]], tuple(lq.shape[-2:]), tile,
                                tile_overlap, 1, batch_size) for i in range(lq.shape[0])]
        else:
            outs = [self.net(lq[i:i + batch_size]) for i in range(0, lq.shape[0], max(1, batch_size))]
        return torch.cat(outs).float().clamp_(0, 1)


def count_params(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parse_model_spec(spec: str) -> tuple[str, Path]:
    """'NAME=DIR' or 'DIR' (named after the folder; runs/x/model -> x). A run folder means its model/."""
    name, path = (spec.split("=", 1) if "=" in spec and not Path(spec).exists() else (None, spec))
    path = model_folder(path)
    return name or (path.resolve().parent.name if path.name == "model" else path.name), path


def model_candidates(name: str, path: str | Path, steps: Sequence[int], device, dtype,
                     samplers: Sequence[str] = ()) -> list[Candidate]:
    """A model that samples at several step counts (a teacher) at each of `steps` it allows, above one pass with
    each of `samplers` that its family has (default: its own); a distilled model at its own steps."""
    up = Upscaler.from_pretrained(path, device=device, dtype=dtype)
    model = up.model
    if model.max_steps > 1:
        too_many = [s for s in steps if s > model.max_steps]
        if too_many:
            warnings.warn(f"{name}: leaving out steps {too_many} (it runs at most {model.max_steps})", stacklevel=2)
        counts = [s for s in steps if s <= model.max_steps]
    else:
        counts = [model.steps]
    own = [s for s in samplers if s in model.samplers] or [model.sampler]
    params = count_params(model)

    def runner(n_steps, sampler):
        return lambda lq, tile, overlap, batch: up.upscale_tensor(lq, steps=n_steps, seed=0, tile=tile,
                                                                  tile_overlap=overlap, batch_size=batch,
                                                                  sampler=sampler or None)

    # one pass is the same whatever the sampler, so it is measured once and labelled with none
    pairs = [(s, "") if model.num_passes(s) == 1 or model.max_steps == 1 else (s, sm) for s in counts for sm in own]
    return [Candidate(name, s, params, str(path), runner(s, sm), model.backbone, model.scale, sm)
            for s, sm in dict.fromkeys(pairs)]


def onnx_candidate(name: str, path: str | Path, device, dtype) -> Candidate | None:
    """The model at its own step count exported to ONNX (`instantsr export --noise-input`, so that seed 0 gives the
    torch row's images) and run by onnxruntime with torch's thread count; None, with a warning, when the model
    needs more than one pass at its own step count."""
    from .onnx_export import OnnxUpscaler, export_onnx  # onnx, onnxscript, onnxruntime: the onnx extra

    model = Upscaler.from_pretrained(path).model
    if model.num_passes() != 1:
        warnings.warn(f"{name}: no onnxruntime row (its own {model.steps} steps are {model.num_passes()} network "
                      "passes; a graph holds one)", stacklevel=2)
        return None
    with tempfile.TemporaryDirectory(prefix="instantsr-onnx-") as tmp:  # the session holds the graph once loaded
        graph = export_onnx(model, Path(tmp) / "model.onnx", fp16=dtype == torch.float16, noise_input=True)
        up = OnnxUpscaler(graph, device=str(device))
    # whole images (the timing leaves out its tiled settings, the quality runs ignore --quality-tile)
    return Candidate(f"{name}-onnxruntime", model.steps, count_params(model), f"{path} (onnxruntime)",
                     lambda lq, tile, overlap, batch: up.upscale_tensor(lq, seed=0, batch_size=batch), None,
                     up.scale, passes=1, tiles=False)


def realesrgan_candidate(device, dtype) -> Candidate:
    from .nets.rrdbnet import load_realesrgan_x4plus

    up = RealESRGANUpscaler(load_realesrgan_x4plus(device), dtype)
    return Candidate("realesrgan", 1, count_params(up.net), "realesrgan_x4plus (instantsr weights)",
                     lambda lq, tile, overlap, batch: up.upscale_tensor(lq, tile, overlap, batch), up.net)


def bicubic_candidate(scale: int = 4) -> Candidate:
    """MATLAB-style bicubic, the code of `instantsr eval --baseline bicubic`."""
    def run(lq, tile, overlap, batch):
        size = (lq.shape[-2] * scale, lq.shape[-1] * scale)
        return torch.stack([bicubic_baseline(x.float(), size) for x in lq])

    return Candidate("bicubic", 0, 0, "MATLAB imresize", run, None, scale)


# ---- quality ----------------------------------------------------------------------------------------------
def paired_subset(lr_dir: str | Path, hr_dir: str | Path | None, max_images: int) -> list[Path]:
    """LR files with an HR partner (same stem, as `PairedFolder` matches them); the first `max_images` (0: all).
    With `hr_dir` None, the LR files alone (an LR-only set, for the metrics that need no HR)."""
    import sys

    from .data import PairedFolder, find_images

    if hr_dir is None:
        files = find_images(lr_dir, recursive=False)
        return files[:max_images] if max_images > 0 else files
    with warnings.catch_warnings(record=True) as caught:  # told as plain lines, not Python warning echoes
        warnings.simplefilter("always")
        files = [lr for _, lr, _ in PairedFolder(lr_dir, hr_dir).pairs]
    for w in caught:
        print(f"{lr_dir}: {w.message}", file=sys.stderr)
    return files[:max_images] if max_images > 0 else files


def upscale_folder(cand: Candidate, lr_files: Sequence[Path], out_dir: Path, device, tile, overlap,
                   tile_batch) -> None:
    """Upscale the LR files into out_dir as PNGs named by stem (8-bit, as `instantsr upscale` writes)."""
    for path in tqdm(lr_files, desc=f"upscaling {cand.label}", unit="img", leave=False):
        lq = read_image(path).rgb[None].to(device)
        sr = cand.run(lq, tile, overlap, tile_batch if tile else 1)
        save_image(sr[0].float().cpu(), out_dir / f"{path.stem}.png")


# ---- tables ---------------------------------------------------------------------------------------------
def _fmt(v, spec=".4f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _fmt_params(n: int) -> str:
    return "0" if n == 0 else f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def markdown_report(rows: list[dict], settings: Sequence[Setting], metrics: Sequence[str], cond: dict,
                    notes: Sequence[str], images: Sequence[str], repeats: int = 1, scale: int = 4) -> str:
    lines = ["# instantsr bench", "", "Conditions: " + ", ".join(
        f"{k} {cond[k]}" for k in ("device", "dtype", "threads", "torch_version", "cpu", "gpu", "date")
        if cond.get(k) is not None), ""]
    head = (["model", "steps", "passes/img", "params"] + [f"s/img {s.label(scale)}" for s in settings]
            + (["peak MiB"] if settings else []) + [METRIC_LABELS.get(m, m) for m in metrics])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        steps = f"{r['steps']} {r['sampler']}" if r.get("sampler") else str(r["steps"])
        cells = [r["name"], steps, str(r.get("passes_per_img", "-")), _fmt_params(r["params"])]
        for s in settings:
            k = s.key
            if r.get(f"oom_{k}") or r.get(f"s_img_{k}") is None:
                cells.append("out of memory" if r.get(f"oom_{k}") else "-")
                continue
            cell = f"{_fmt(r.get(f's_img_{k}'))} ({_fmt(r.get(f's_img_{k}_min'))}–{_fmt(r.get(f's_img_{k}_max'))})"
            if r.get(f"batch_{k}", s.batch) != s.batch:
                cell += f" at b{r[f'batch_{k}']}"
            if r.get(f"runs_{k}", repeats) < repeats:
                cell += f" ×{r[f'runs_{k}']}"
            cells.append(cell)
        if settings:
            cells.append(_fmt(r.get("peak_mem_mib"), ".0f"))
        cells += [_fmt(r.get(m), ".2f" if m == "psnr" else ".4f") for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    lines += scaling_table(rows, settings, scale)
    lines += [""] + [f"- {n}" for n in notes] + [""] + [f"![{Path(i).stem}]({i})" for i in images]
    return "\n".join(lines) + "\n"


def scaling_table(rows: list[dict], settings: Sequence[Setting], scale: int = 4) -> list[str]:
    """Markdown lines: each model's time and peak memory per size, at each tile and whole (the sizes timed whole
    and tiled), back to back."""
    whole = {s.size for s in settings if not s.tile and s.batch == 1}
    sizes = sorted({s.size for s in settings if s.tile} & whole)
    if not sizes:
        return []
    lines = ["", "Time and memory against size and tile (one image; µs per output pixel):", "",
             "| model | LR size | output MP | tile | s/img | µs/px | peak MiB |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.get("passes_per_img"):
            continue  # bicubic: no network, nothing to tile
        for size in sizes:
            mp = (size * scale) ** 2 / 1e6
            for setting in sorted((s for s in settings if s.size == size and s.batch == 1),
                                  key=lambda s: s.tile or 1 << 30):
                key = setting.key
                t = r.get(f"s_img_{key}")
                if r.get(f"oom_{key}"):
                    cells = ["out of memory", "-", "-"]
                else:
                    cells = [_fmt(t, ".2f"), _fmt(t / mp if t else None, ".3f"), _fmt(r.get(f"mem_mib_{key}"), ".0f")]
                lines.append(f"| {r['name']} ({r['steps']}) | {size}x{size} | {mp:.3g} | {setting.tile or 'whole'} | "
                             + " | ".join(cells) + " |")
    return lines


# ---- the whole run ----------------------------------------------------------------------------------------
@dataclass
class BenchConfig:
    models: list[str] = field(default_factory=list)  # "DIR" or "NAME=DIR"
    baselines: list[str] = field(default_factory=list)  # "realesrgan"
    lr: str | None = None
    hr: str | None = None
    output: str = "bench"
    steps: tuple[int, ...] = DEFAULT_STEPS
    samplers: tuple[str, ...] = ()  # a teacher's samplers above one step; () = each model's own
    sizes: tuple[int, ...] = (64, 128, 256)
    batches: tuple[int, ...] | None = None  # None: (1, 64) on CUDA, (1, 8) on CPU
    tiles: tuple[int, ...] = (64,)  # sizes above a tile run tiled at it (each of them, back to back)
    untiled: bool = False  # also time the sizes above a tile whole, and report time and memory against pixels
    tile_overlap: int = 16
    tile_batch: int = 4
    repeats: int = 3
    warmup: int = 1
    budget_s: float | None = 10.0  # timed seconds per setting before the repeats are cut short
    max_images: int = 8
    quality_tile: int | None = None
    metrics: tuple[str, ...] = ("psnr", "ssim", "lpips", "dists")
    grid_period: int = 4  # period of the grid metrics (the latent stride of the shipped x4 model)
    strip_images: int = 3
    crop: int = 48
    device: str | None = None
    dtype: str | None = None
    speed: bool = True
    quality: bool = True
    save_sr: bool = False
    seed: int = 0
    onnx: bool = False  # also each model (at its own step count) exported to ONNX and run by onnxruntime


def run_bench(cfg: BenchConfig) -> list[dict]:
    """Measure every candidate and write the report files into cfg.output; returns the table rows."""
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = parse_dtype(cfg.dtype or ("fp16" if device.type == "cuda" else "fp32"))
    batches = cfg.batches or ((1, 64) if device.type == "cuda" else (1, 8))
    from .metrics import NO_HR

    lr_only = [m for m in cfg.metrics if m in NO_HR] == list(cfg.metrics)  # no metric needs the HR
    quality = cfg.quality and cfg.lr is not None and (cfg.hr is not None or lr_only)
    if cfg.quality and not quality and (cfg.lr or cfg.hr):
        raise ValueError("quality needs both --lr LR_DIR and --hr HR_DIR, or --lr alone with no-reference "
                         f"--metrics ({','.join(NO_HR)}), or --no-quality")
    if cfg.repeats < 1 or cfg.warmup < 0:
        raise ValueError("--repeats must be at least 1 and --warmup at least 0")
    known = {name for fam in FAMILIES.values() for name in fam.samplers}
    if set(cfg.samplers) - known:
        raise ValueError(f"--samplers: no model family has {', '.join(sorted(set(cfg.samplers) - known))}; "
                         f"the samplers are {', '.join(sorted(known))}")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    cands: list[Candidate] = [bicubic_candidate()]
    names: set[str] = {"bicubic"}
    for spec in cfg.models:
        name, path = parse_model_spec(spec)
        base, k = name, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.add(name)
        cands += model_candidates(name, path, cfg.steps, device, dtype, cfg.samplers)
        if cfg.onnx:
            cands += [c for c in [onnx_candidate(name, path, device, dtype)] if c is not None]
    if "realesrgan" in cfg.baselines:
        if "realesrgan" in names:
            raise ValueError("the name realesrgan is taken by the --baseline; name the model otherwise (NAME=DIR)")
        cands.append(realesrgan_candidate(device, dtype))
    scales = {c.scale for c in cands[1:]} or {4}
    if len(scales) > 1:
        raise ValueError(f"models of different scales ({sorted(scales)}) cannot share one benchmark")
    scale = scales.pop()
    cands[0] = bicubic_candidate(scale)

    settings = speed_settings(cfg.sizes, batches, cfg.tiles, cfg.untiled) if cfg.speed else []
    rows = [{"name": c.name, "steps": c.steps, "sampler": c.sampler, "params": c.params, "source": c.source,
             "passes_per_img": c.passes if c.passes is not None else count_passes(c, device, min(cfg.sizes))}
            for c in cands]
    if cfg.speed:
        for c, row in zip(tqdm(cands, desc="speed", unit="model"), rows):
            # per (tile, batch): peak MiB and seconds per LR pixel at the last size, to foresee the next one
            mems, mib_per_px, s_per_px = [], {}, {}
            for s in tqdm(settings, desc=c.label, leave=False):
                if s.tile and (not c.tiles or (c.network is None and cfg.untiled)):
                    continue  # bicubic does not tile: timed once, whole; an ONNX graph cannot: its "-"
                pixels = s.size ** 2 * s.batch
                need = mib_per_px.get((s.tile, s.batch), 0) * pixels
                # a warm-up is worth its time for short runs only (lazy initialisation); the model is warm by then
                long_run = cfg.budget_s is not None and s_per_px.get((s.tile, s.batch), 0) * pixels > cfg.budget_s
                free = available_mib() if device.type == "cpu" else None
                if free is not None and need > 0.8 * free:  # a host out-of-memory kills the process: predict it
                    t = out_of_memory(f"not run: the smaller sizes say it needs about {need / 1024:.0f} GiB, "
                                      f"{free / 1024:.0f} GiB available")
                else:
                    t = time_setting(c, s, device, cfg.repeats, 0 if long_run else cfg.warmup, cfg.tile_overlap,
                                     cfg.tile_batch, cfg.seed, cfg.budget_s)
                if t["mem_mib"] is not None:
                    mib_per_px[s.tile, s.batch] = t["mem_mib"] / (s.size ** 2 * t["batch"])
                    s_per_px[s.tile, s.batch] = t["median"] / s.size ** 2
                if t.get("oom"):
                    row[f"oom_{s.key}"] = t["oom"]
                row.update({f"s_img_{s.key}{k}": t[v] for k, v in
                            (("", "median"), ("_min", "min"), ("_max", "max"), ("_q1", "q1"), ("_q3", "q3"))})
                row.update({f"runs_{s.key}": t["runs"], f"mem_mib_{s.key}": t["mem_mib"],
                            f"batch_{s.key}": t["batch"]})
                if t["mem_mib"] is not None:
                    mems.append(t["mem_mib"])
            row["peak_mem_mib"] = max(mems) if mems else None

    images, notes, per_image = [], [], []
    n_quality = 0
    if quality:
        from .metrics import MetricSuite

        lr_files = paired_subset(cfg.lr, cfg.hr, cfg.max_images)
        n_quality = len(lr_files)
        suite = MetricSuite(cfg.metrics, device=device, grid_period=cfg.grid_period, scale=scale)
        with tempfile.TemporaryDirectory(prefix="instantsr-bench-") as tmp:
            sr_root = out / "sr" if cfg.save_sr else Path(tmp)
            lr_subset = Path(tmp) / "lr"  # the subset as a folder, for `evaluate_folder`'s bicubic
            lr_subset.mkdir()
            for f in lr_files:
                try:
                    (lr_subset / f.name).symlink_to(f.resolve())
                except OSError:  # no symlinks here (Windows without the right): copy
                    shutil.copy2(f, lr_subset / f.name)
            sr_dirs = {}
            for c, row in zip(tqdm(cands, desc="quality", unit="model"), rows):
                if c.name == "bicubic":
                    img_rows, summary = evaluate_folder(None, cfg.hr, list(cfg.metrics), lr_dir=lr_subset,
                                                        device=str(device), suite=suite, desc="bicubic",
                                                        scale=scale)
                else:
                    sr_dir = sr_root / c.slug
                    shutil.rmtree(sr_dir, ignore_errors=True)  # no stale images from an earlier run
                    upscale_folder(c, lr_files, sr_dir, device, cfg.quality_tile, cfg.tile_overlap,
                                   cfg.tile_batch)
                    sr_dirs[c.label] = sr_dir
                    img_rows, summary = evaluate_folder(sr_dir, cfg.hr, list(cfg.metrics), lr_dir=lr_subset,
                                                        device=str(device), suite=suite, desc=c.label)
                row.update({m: summary[m] for m in cfg.metrics}, images=summary["images"])
                per_image += [{"name": c.name, "steps": c.steps, "sampler": c.sampler, **r} for r in img_rows]
            if cfg.strip_images > 0:
                crops_strip(lr_files[:cfg.strip_images], Path(cfg.hr) if cfg.hr else None, sr_dirs,
                            out / "strip.png", cfg.crop, scale)
                images.append("strip.png")
        write_rows_csv(per_image, out / "images.csv")

    try:
        if quality and {"psnr", "lpips"} <= set(cfg.metrics):
            plot_perception_distortion(rows, out / "perception_distortion.png")
            images.append("perception_distortion.png")
        if settings and len({r["steps"] for r in rows if r.get("passes_per_img")}) > 1:  # else: one point a line
            plot_speed(rows, settings, out / "speed_vs_steps.png")
            images.append("speed_vs_steps.png")
        if cfg.untiled and len(cfg.sizes) > 1 and settings:
            plot_scaling(rows, settings, out / "scaling.png")
            images.append("scaling.png")
    except ImportError:
        warnings.warn("plots need matplotlib: pip install 'instantsr[plots]'", stacklevel=2)
    images.sort(key=["perception_distortion.png", "speed_vs_steps.png", "scaling.png", "strip.png"].index)

    cond = conditions(device, dtype)
    cond["settings"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}
    cond["settings"]["batches"] = list(batches)
    cond["quality_images"] = n_quality
    write_json(cond, out / "conditions.json")
    if settings:
        budget = f", fewer (×n: n runs) where they would pass {cfg.budget_s:g} s" if cfg.budget_s else ""
        no_warmup = f" (none where one run would pass {cfg.budget_s:g} s)" if cfg.budget_s else ""
        notes.append(f"s/img: median (min–max) of {cfg.repeats} timed run(s){budget} after {cfg.warmup} warm-up "
                     f"run(s){no_warmup}, on random LR inputs; tiled settings run one image: our UNets layer by "
                     f"layer in exact tiles, other networks in tiles of the whole network blended over "
                     f"{cfg.tile_overlap} px, {cfg.tile_batch} per pass. Peak memory: {cond['memory']}.")
        notes.append("passes/img: network forward calls per image, counted by a hook (bicubic has none).")
        if any(not c.tiles for c in cands):
            notes.append(f"NAME-onnxruntime: the model exported by `instantsr export --noise-input` "
                         f"({'fp16' if dtype == torch.float16 else 'fp32'}) and run by onnxruntime on "
                         f"{torch.get_num_threads()} thread(s), as many as torch; whole images only (no tiled "
                         f"settings); seed 0 gives the torch row's images.")
        notes += [f"{r['name']} ({r['steps']}) at {s.label(scale)}: out of memory ({r[f'oom_{s.key}']})"
                  for r in rows for s in settings if r.get(f"oom_{s.key}")]
    if quality:
        against = f"against {cfg.hr}" if cfg.hr else "(LR only, no HR: no-reference metrics)"
        on_y = " (PSNR/SSIM on Y, no border crop)" if {"psnr", "ssim"} & set(cfg.metrics) else ""
        notes.append(f"Quality on {n_quality} image(s) of {cfg.lr} {against}, SR written as 8-bit PNG "
                     f"and scored by `instantsr eval` code{on_y}; seed 0, "
                     f"{'tiles of ' + str(cfg.quality_tile) + ' px' if cfg.quality_tile else 'whole images'}.")
        if {"grid", "grid_levels"} & set(cfg.metrics):
            notes.append(f"grid: median over 32 px blocks of the amplitude ratio of period-{cfg.grid_period} "
                         f"patterns to period {cfg.grid_period - 1} and {cfg.grid_period + 1} ones (about 1 "
                         f"without a grid); grid_levels: RMS amplitude of the period-{cfg.grid_period} pattern "
                         "beyond noise and texture, in 8-bit levels (`instantsr.artifacts.grid_strength`).")
        if "color" in cfg.metrics:
            notes.append(f"color: mean BT.601 chroma distance, in 8-bit levels, between the SR image and the "
                         f"torch bicubic x{scale} of its LR, both average-pooled over {2 * scale}x{2 * scale} px "
                         "(`instantsr.artifacts.color_shift`).")
    (out / "report.md").write_text(markdown_report(rows, settings, cfg.metrics if quality else (), cond, notes,
                                                   images, cfg.repeats, scale))
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "bench.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return rows
