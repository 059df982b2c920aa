"""`instantsr bench`: speed, memory, size and quality of models side by side, with bicubic as the floor."""

from __future__ import annotations

from .common import add_device_options, int_list, name_list


def tile_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated tile sizes; 0 alone: never tile."""
    return () if text.strip() == "0" else int_list(text)


def add_parser(sub, name: str, help: str):
    b = sub.add_parser(name, help=help,
                       description="Time models (s/img, peak memory, passes/img, params) and score them on a "
                                   "paired folder; teachers run at every --steps. Writes report.md, bench.csv, "
                                   "conditions.json and plots into -o.")
    b.add_argument("-m", "--model", action="append", metavar="[NAME=]DIR",
                   help="model folder (or run folder), repeatable; NAME= sets its label")
    b.add_argument("--baseline", action="append", choices=["realesrgan"],
                   help="also bench Real-ESRGAN x4plus (after `instantsr weights fetch`); bicubic is always in")
    b.add_argument("--lr", help="paired LR folder for the quality columns; alone (no --hr) with no-reference "
                                "--metrics only (grid,grid_levels,color,niqe), e.g. RealSet65")
    b.add_argument("--hr", help="paired HR folder (matched by file name stem)")
    b.add_argument("-o", "--output", required=True, help="output folder")
    b.add_argument("--steps", type=int_list, default=(1, 4, 15), help="teacher step counts (default 1,4,15)")
    b.add_argument("--samplers", type=name_list, metavar="LIST",
                   help="samplers above one step, comma-separated, e.g. deterministic,stochastic; each model "
                        "runs those its family has (default: each model's own)")
    b.add_argument("--sizes", type=int_list, default=(64, 128, 256), help="LR sides timed (default 64,128,256)")
    b.add_argument("--batch", type=int_list, help="batch sizes at untiled sizes (default 1,64 on cuda, 1,8 on cpu)")
    b.add_argument("--tile", type=tile_list, default=(64,), metavar="N[,N...]",
                   help="sizes above a tile run tiled, at each tile given (LR px; 0: never; default 64)")
    b.add_argument("--untiled", action="store_true",
                   help="also time the sizes above a tile whole (one image; an out-of-memory is recorded, not "
                        "fatal), and report time and memory against size and tile (scaling.png)")
    b.add_argument("--tile-overlap", type=int, default=16, help="tile overlap in LR pixels")
    b.add_argument("--tile-batch", type=int, default=4, help="tiles per network pass")
    b.add_argument("--repeats", type=int, default=3, help="timed runs per setting (median, min, max)")
    b.add_argument("--warmup", type=int, default=1, help="untimed runs before them")
    b.add_argument("--budget", type=float, default=10.0, metavar="S",
                   help="fewer repeats where the timed runs of a setting would pass S seconds (0: no limit)")
    b.add_argument("--max-images", type=int, default=8, help="quality on the first N pairs (0: all; default 8)")
    b.add_argument("--quality-tile", type=int, help="tile the quality runs (default: whole images)")
    b.add_argument("--metrics", default="psnr,ssim,lpips,dists",
                   help="comma-separated, as instantsr eval: psnr,ssim,lpips,dists (need --hr), niqe, grid, "
                        "grid_levels, color")
    b.add_argument("--grid-period", type=int, default=4, metavar="N",
                   help="period of the grid metrics in SR pixels (default 4: the latent stride of the shipped "
                        "x4 model)")
    b.add_argument("--strip-images", type=int, default=3, help="images in the comparison strip (0: none)")
    b.add_argument("--crop", type=int, default=48, help="side of the strip crops in LR pixels")
    b.add_argument("--no-speed", action="store_true", help="skip the timing")
    b.add_argument("--no-quality", action="store_true", help="skip the quality columns")
    b.add_argument("--save-sr", action="store_true", help="keep the SR images in OUT/sr/NAME-sSTEPS[-SAMPLER]")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--onnx", action="store_true",
                   help="add a row per model run by onnxruntime: exported to a temporary ONNX file (its own step "
                        'count, one pass), timed on whole images with torch\'s threads (pip install "instantsr[onnx]")')
    add_device_options(b)
    return b


def run(args) -> None:
    from ..bench import BenchConfig, run_bench

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    run_bench(BenchConfig(
        models=args.model or [], baselines=args.baseline or [], lr=args.lr, hr=args.hr, output=args.output,
        steps=args.steps, samplers=args.samplers or (), sizes=args.sizes, batches=args.batch,
        tiles=args.tile, untiled=args.untiled, tile_overlap=args.tile_overlap, tile_batch=args.tile_batch,
        repeats=args.repeats, warmup=args.warmup, budget_s=args.budget or None, max_images=args.max_images,
        quality_tile=args.quality_tile, metrics=metrics, grid_period=args.grid_period,
        strip_images=args.strip_images, crop=args.crop, device=args.device, dtype=args.dtype,
        speed=not args.no_speed, quality=not args.no_quality, save_sr=args.save_sr, seed=args.seed, onnx=args.onnx))
    print(f"wrote {args.output}/report.md, bench.csv, conditions.json and plots")
