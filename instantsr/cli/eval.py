"""`instantsr eval`: score SR images against HR images (or alone, with no-reference metrics)."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import check_device, check_writable, metric_list


def add_parser(sub, name: str, help: str):
    e = sub.add_parser(name, help=help,
                       description="Score SR images against HR images; --sr alone gives no-reference metrics.")
    e.add_argument("--sr", help="folder of SR images")
    e.add_argument("--hr", help="folder of HR images (matched by file name stem)")
    e.add_argument("--lr", help="folder of LR images: for --baseline, and the LR partners of the --sr images "
                                "(matched by file name stem) for the color metric")
    e.add_argument("--baseline", choices=["bicubic"], help="also score bicubic upscaling of --lr")
    e.add_argument("--metrics", default="psnr,ssim,lpips,dists",
                   help="comma-separated: psnr,ssim,lpips,dists (need --hr), niqe, grid (period-N grid ratio, "
                        "about 1 without a grid), grid_levels (its RMS amplitude in 8-bit levels), color (colour "
                        "shift against bicubic of the LR, 8-bit levels; needs --lr)")
    e.add_argument("--grid-period", type=int, default=4, metavar="N",
                   help="period of the grid metrics in SR pixels (default 4: the latent stride of the shipped "
                        "x4 model)")
    e.add_argument("--crop-border", type=int, default=0, help="pixels cropped at each border before PSNR/SSIM")
    e.add_argument("--csv", help="write per-image scores to this CSV file")
    e.add_argument("--json", help="write the summary to this JSON file")
    e.add_argument("--device", default="cpu")
    return e


def run(args) -> None:
    if args.sr is None and not args.baseline:
        raise SystemExit("instantsr eval: give --sr SR_DIR, or --baseline bicubic --lr LR_DIR")
    if args.baseline and not args.lr:
        raise SystemExit("instantsr eval: --baseline bicubic needs --lr LR_DIR (and --hr HR_DIR)")
    for flag, folder in (("--sr", args.sr), ("--hr", args.hr), ("--lr", args.lr)):
        if folder is not None and not Path(folder).is_dir():  # before the heavy imports: a typo is told at once
            raise FileNotFoundError(f"{folder}: no such folder ({flag})")
    for flag, file in (("--csv", args.csv), ("--json", args.json)):
        if file:
            check_writable(Path(file).parent, flag)

    from ..evaluate import evaluate_folder, format_table, write_json, write_rows_csv
    from ..metrics import FULL_REFERENCE, NEEDS_LR, MetricSuite

    check_device(args.device)
    metrics = metric_list(args.metrics)
    if args.hr is None:
        dropped = [m for m in metrics if m in FULL_REFERENCE]
        if dropped:
            print(f"no --hr: leaving out the full-reference metrics {', '.join(dropped)}", file=sys.stderr)
        metrics = [m for m in metrics if m not in FULL_REFERENCE]
        if not metrics:
            raise ValueError("nothing to compute without --hr: give --hr HR_DIR, or no-reference metrics "
                             "(--metrics grid,grid_levels,color,niqe)")
    needs_lr = [m for m in metrics if m in NEEDS_LR]
    if needs_lr and args.lr is None:
        raise ValueError(f"--metrics {','.join(needs_lr)} needs --lr LR_DIR (the LR images the SR images were "
                         "made from, matched by file name stem)")
    suite = MetricSuite(metrics, device=args.device, crop_border=args.crop_border, grid_period=args.grid_period)
    summaries, all_rows = {}, {}
    if args.sr is not None:
        rows, summaries["sr"] = evaluate_folder(args.sr, args.hr, metrics, lr_dir=args.lr, device=args.device,
                                                suite=suite, desc="SR", name_unpaired_hr=True)
        all_rows["sr"] = rows
    if args.baseline:
        # without --hr, bicubic upscales by the --sr/--lr size ratio (the first pair's), else by 4
        scale = _sr_lr_scale(args.sr, args.lr) if args.hr is None and args.sr is not None else None
        rows, summaries["bicubic"] = evaluate_folder(None, args.hr, metrics, lr_dir=args.lr, device=args.device,
                                                     suite=suite, desc="bicubic", name_unpaired_hr=True,
                                                     scale=scale)
        all_rows["bicubic"] = rows
    print(format_table(summaries, metrics))
    if args.csv:
        write_rows_csv([{"method": k, **r} for k, rows in all_rows.items() for r in rows], args.csv)
    if args.json:
        write_json({"metrics": metrics, "crop_border": args.crop_border, "grid_period": args.grid_period,
                    "summary": summaries}, args.json)


def _sr_lr_scale(sr_dir: str, lr_dir: str) -> int | None:
    """SR size / LR size of the first SR image with an LR partner (same stem), when it is a whole number."""
    from ..data import find_images
    from ..evaluate import whole_scale
    from ..io import ImageReadError, read_image

    lr_files = {p.stem: p for p in find_images(lr_dir, recursive=False)}
    for path in find_images(sr_dir, recursive=False):
        if path.stem in lr_files:
            try:
                return whole_scale(read_image(path).rgb, read_image(lr_files[path.stem]).rgb)
            except ImageReadError:
                continue
    return None
