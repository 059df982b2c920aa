"""`instantsr compare`: crops of your own photos (no HR needed) through bicubic, models and Real-ESRGAN, side by
side at 100 %: one labelled PNG strip per photo and an index.html."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import add_device_options, check_device, check_writable


def add_parser(sub, name: str, help: str):
    c = sub.add_parser(name, help=help, description="Upscale windows of each photo with every upscaler and show "
                       "them side by side at 100 %%: OUT/<photo>.png per photo and OUT/index.html. Windows are "
                       "picked on the photo alone (a detailed one and a flat one), or given with --crop.")
    c.add_argument("-i", "--input", required=True, help="a photo or a folder of photos (LR: what you would upscale)")
    c.add_argument("-o", "--output", required=True, help="output folder (strips and index.html)")
    c.add_argument("-m", "--model", action="append", metavar="[NAME=]DIR",
                   help="a model folder, repeatable (default: the model shipped with instantsr, named instantsr)")
    c.add_argument("--baseline", default="bicubic,realesrgan",
                   help="comma-separated: bicubic, realesrgan (Real-ESRGAN x4plus, after `instantsr weights fetch`); "
                        "'none' for none (default: bicubic,realesrgan)")
    c.add_argument("--crop", action="append", metavar="X,Y,SIZE",
                   help="a window in the photo's pixels (top-left x, y and side), repeatable; the same for every "
                        "photo (default: a detailed and a flat window picked per photo)")
    c.add_argument("--size", type=int, default=48, help="side of the picked windows in LR pixels (default 48: "
                   "192 px at x4)")
    c.add_argument("--context", type=int, default=32,
                   help="LR pixels around each window that the upscalers see (default 32); -1: the whole photo, as "
                        "`instantsr upscale` runs it (slow for Real-ESRGAN on a CPU)")
    c.add_argument("--tile", type=int, help="tile size in LR pixels for the models (with --context -1 on big photos)")
    c.add_argument("--seed", type=int, default=0, help="noise seed of the models that draw noise")
    add_device_options(c)
    return c


def run(args) -> None:
    src = Path(args.input)
    if not src.exists():  # before the heavy imports
        raise FileNotFoundError(f"{src}: no such file or folder")
    baselines = [b.strip() for b in args.baseline.split(",") if b.strip() and b.strip() != "none"]
    unknown = [b for b in baselines if b not in ("bicubic", "realesrgan")]
    if unknown:
        raise ValueError(f"--baseline {unknown[0]}: choose from bicubic, realesrgan (or none)")
    if args.size < 8:
        raise ValueError(f"--size {args.size}: give at least 8 LR pixels")
    if args.tile is not None and args.tile < 0:
        raise ValueError(f"--tile {args.tile}: give a tile size in LR pixels, or 0 for no tiling")
    check_writable(args.output)
    check_device(args.device)

    import torch

    from ..bench import bicubic_candidate, parse_model_spec, realesrgan_candidate
    from ..compare import compare_photos, parse_window
    from ..io import list_images
    from ..pipeline import Upscaler, default_device, default_dtype, parse_dtype

    windows = [parse_window(text) for text in args.crop or ()]
    photos = list_images(src) if src.is_dir() else [src]
    if not photos:
        raise ValueError(f"{src}: no image files in this folder")
    device = default_device(args.device)
    dtype = default_dtype(device, args.dtype)
    models = {}
    for spec in args.model or ["instantsr=default"]:
        name, path = ("instantsr", None) if spec == "instantsr=default" else parse_model_spec(spec)
        if name in models or name in baselines:
            raise ValueError(f"-m {spec}: the name {name} is taken; name it NAME=DIR")
        models[name] = Upscaler.from_pretrained(path, device=device, dtype=dtype)
    scales = {up.scale for up in models.values()}
    if len(scales) > 1:
        raise ValueError(f"the models upscale by different factors ({sorted(scales)}); compare models of one scale")
    scale = scales.pop()
    if "realesrgan" in baselines and scale != 4:
        raise ValueError(f"--baseline realesrgan is x4 and the models are x{scale}; leave it out")
    tile = args.tile

    def model_run(up):
        return lambda lq: up.upscale_tensor(lq.to(up.device), seed=args.seed, tile=tile)

    upscalers = {}
    if "bicubic" in baselines:  # bench's bicubic: MATLAB imresize, as `instantsr eval --baseline bicubic`
        bicubic = bicubic_candidate(scale)
        upscalers["bicubic"] = lambda lq: bicubic.run(lq, None, 0, 1)
    upscalers.update({name: model_run(up) for name, up in models.items()})
    if "realesrgan" in baselines:  # WeightsNotFoundError says to run `instantsr weights fetch`
        real = realesrgan_candidate(torch.device(device), parse_dtype(dtype))
        upscalers["realesrgan"] = lambda lq: real.run(lq.to(device), None, 0, 1)
    written, failed = compare_photos(photos, Path(args.output), upscalers, scale, windows, args.size,
                                     None if args.context < 0 else args.context,
                                     progress=sys.stderr.isatty())
    print(f"{written} strips in {args.output} (open {Path(args.output) / 'index.html'})"
          + (f"; {failed} photos failed" if failed else ""), file=sys.stderr)
    if failed:
        raise SystemExit(1)
