"""Upscale millions of images on a Ray cluster with Ray Data (the recipe of docs/distributed.md).

    from instantsr.ray_recipe import run
    run("/shared/photos/**/*.jpg", "/shared/sr", model="/shared/models/sinsr", num_gpus=1, concurrency=8)

or, as a job: `python -m instantsr.ray_recipe -i "/shared/photos/**/*.jpg" -o /shared/sr -m MODEL --num-gpus 1
--concurrency 8`. The pipeline is: the file list (on the driver) -> `ray.data.from_items` -> `map_batches`
with `UpscaleBatch`, a callable class, so each Ray actor loads the Upscaler once (in `__init__`) and keeps it
for all its batches -> each output written by the actor with the same atomic `save_image` as `instantsr
upscale` (existing outputs skipped, so a re-run after a crash only does what is missing) -> one status row per
input, counted on the driver. Inputs, outputs and the model folder must be on a file system every node sees.

`UpscaleBatch` is plain Python (no Ray needed to use or test it); Ray is imported only inside `run`, so
`pip install -e ".[ray]"` is needed only on the machines that run the recipe.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["UpscaleBatch", "list_inputs", "run", "main"]


class UpscaleBatch:
    """Ray Data `map_batches` callable: one Upscaler per worker; a batch of inputs in, one status per input out.

    The batch is a dict of columns: "path" (the input files; they name the outputs), and optionally "image"
    (decoded HxW[xC] uint8/uint16 arrays, as `ray.data.read_images(..., include_paths=True)` gives; without
    it each file is read here, with instantsr's reader: 16-bit, grey and alpha kept). Returns {"path",
    "output", "status"}: status is "upscaled", "skipped" (the output exists) or "failed: SRC: why".
    """

    def __init__(self, model: str | Path | None = None, out_dir: str | Path = "out", suffix: str = "",
                 ext: str = "auto", overwrite: bool = False, device: str | None = None, dtype: str | None = None,
                 **options: Any):
        # options: steps, seed (default 0, as `instantsr upscale`), tile, tile_overlap, color_fix, batch_size,
        # sampler -- passed to the upscaler for every image
        import torch

        from .pipeline import Upscaler

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or ("fp16" if device.startswith("cuda") else "fp32")
        self.upscaler = Upscaler.from_pretrained(model, device=device, dtype=dtype)
        self.out_dir, self.suffix, self.ext, self.overwrite = Path(out_dir), suffix, ext, overwrite
        self.options = {"seed": 0, **options}

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from .pipeline import FILE_ERRORS, failure_line, output_path, upscale_file

        if "path" not in batch:
            raise KeyError("UpscaleBatch needs a 'path' column (read_images/read_binary_files: include_paths=True)")
        paths = [str(p) for p in batch["path"]]
        images = batch.get("image")
        outputs, statuses = [], []
        for i, src in enumerate(paths):
            dst = output_path(src, self.out_dir, self.suffix, self.ext)
            try:
                status = upscale_file(self.upscaler, src, dst, overwrite=self.overwrite,
                                      image=None if images is None else np.asarray(images[i]), **self.options)
            except FILE_ERRORS as e:
                status = f"failed: {failure_line(src, e)}"
            outputs.append(str(dst))
            statuses.append(status)
        return {"path": np.array(paths, dtype=object), "output": np.array(outputs, dtype=object),
                "status": np.array(statuses, dtype=object)}


def list_inputs(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    """Image files from a folder, one file, a glob pattern ('**' recursive) or a list of files; sorted."""
    from .io import IMAGE_SUFFIXES, list_images

    if not isinstance(inputs, (str, Path)):
        return sorted(Path(p) for p in inputs)
    p = Path(inputs)
    if p.is_dir():
        return list_images(p)
    if p.is_file():
        return [p]
    found = sorted(Path(f) for f in glob.glob(str(inputs), recursive=True))
    found = [f for f in found if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    if not found:
        raise FileNotFoundError(f"{inputs}: no such image file or folder, and no image files match it")
    return found


def run(inputs: str | Path | Sequence[str | Path], out_dir: str | Path, model: str | Path | None = None, *,
        suffix: str = "", ext: str = "auto", overwrite: bool = False, device: str | None = None,
        dtype: str | None = None, num_gpus: float = 0, concurrency: int | tuple[int, int] = 1,
        rows_per_batch: int = 8, address: str | None = None, init_kwargs: dict | None = None, **options: Any):
    """Upscale `inputs` into out_dir with Ray Data: `concurrency` actors, each with `num_gpus` GPUs.

    inputs: a folder, a file, a glob pattern or a list of files. concurrency: a fixed number of actors, or
    (min, max) for an autoscaling pool. rows_per_batch: files per `UpscaleBatch` call. address: the cluster
    to join (default: the running one, or a local Ray started with init_kwargs, e.g. {"num_cpus": 2}).
    options: as `UpscaleBatch`. Returns UpscaleCounts over all inputs; failures are printed one per line,
    then the summary line of `instantsr upscale`.
    """
    import ray

    from .pipeline import UpscaleCounts, output_path

    paths = list_inputs(inputs)
    failed_lines, first_with, items = [], {}, []
    for src in paths:  # two inputs that would write the same output: the second fails, as in `instantsr upscale`
        dst = output_path(src, out_dir, suffix, ext)
        if dst in first_with:
            failed_lines.append(f"{src}: same output name as {first_with[dst]}")
        else:
            first_with[dst] = src
            items.append({"path": str(src)})
    if not ray.is_initialized():
        ray.init(address=address, **(init_kwargs or {}))
    if device is None:
        device = "cuda" if num_gpus else "cpu"
    model_arg = model if model in (None, "default") else str(Path(model).resolve())  # the same on every node
    upscaled = skipped = 0
    if items:
        pool = (ray.data.ActorPoolStrategy(size=concurrency) if isinstance(concurrency, int)
                else ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1]))
        ds = ray.data.from_items(items).map_batches(
            UpscaleBatch, batch_size=rows_per_batch, compute=pool, num_gpus=num_gpus,
            fn_constructor_kwargs=dict(model=model_arg,
                                       out_dir=str(Path(out_dir).resolve()), suffix=suffix, ext=ext,
                                       overwrite=overwrite, device=device, dtype=dtype, **options))
        for batch in ds.iter_batches(batch_size=1024, batch_format="numpy"):
            for status in batch["status"]:
                status = str(status)
                if status == "upscaled":
                    upscaled += 1
                elif status == "skipped":
                    skipped += 1
                else:
                    failed_lines.append(status.removeprefix("failed: "))
    for line in failed_lines:
        print(f"failed: {line}", file=sys.stderr)
    counts = UpscaleCounts(upscaled, skipped, len(failed_lines))
    print(f"{counts.upscaled} upscaled, {counts.skipped} skipped (exist), {counts.failed} failed", flush=True)
    return counts


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m instantsr.ray_recipe",
                                description="instantsr upscale on a Ray cluster (Ray Data, one model per actor).")
    p.add_argument("-i", "--input", required=True, help="folder, image file or glob pattern ('**' recursive)")
    p.add_argument("-o", "--output", required=True, help="output folder (on a file system every node sees)")
    p.add_argument("-m", "--model", help="model folder (default: the model shipped with instantsr)")
    p.add_argument("--num-gpus", type=float, default=0, help="GPUs per actor (1: one model per GPU)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1], metavar="N",
                   help="actors: N, or MIN MAX for an autoscaling pool")
    p.add_argument("--batch-rows", type=int, default=8, help="files per map_batches call")
    p.add_argument("--address", help="Ray cluster address (default: the running cluster or a local one)")
    p.add_argument("--steps", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tile", type=int)
    p.add_argument("--tile-overlap", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4, help="tiles per network pass when tiling")
    p.add_argument("--color-fix", default="none", choices=["none", "wavelet", "adain"])
    p.add_argument("--suffix", default="")
    p.add_argument("--ext", default="auto", choices=["auto", "png", "jpg", "webp"])
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--device", help="default: cuda with --num-gpus, else cpu")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="default: fp16 on cuda, fp32 on cpu")
    args = p.parse_args(list(argv) if argv is not None else None)
    if len(args.concurrency) > 2:
        p.error("--concurrency takes N or MIN MAX")
    concurrency = args.concurrency[0] if len(args.concurrency) == 1 else tuple(args.concurrency)
    counts = run(args.input, args.output, args.model, suffix=args.suffix, ext=args.ext, overwrite=args.overwrite,
                 device=args.device, dtype=args.dtype, num_gpus=args.num_gpus, concurrency=concurrency,
                 rows_per_batch=args.batch_rows, address=args.address, steps=args.steps, seed=args.seed,
                 tile=args.tile, tile_overlap=args.tile_overlap, batch_size=args.batch_size,
                 color_fix=args.color_fix)
    return 1 if counts.failed else 0


if __name__ == "__main__":
    sys.exit(main())
