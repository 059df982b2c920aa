"""The README's picture: crops of LR-only photos at 100 %, bicubic | models... | Real-ESRGAN, a detailed and a
flat window of each (`instantsr.viz.pick_crops`, chosen on the LR alone).

    python configs/decoder/strip.py OUT.png LR_DIR NAME=SR_DIR ... [--images a.png,b.png] [--crop 40]

SR_DIRs hold the upscaled images under the LR's file stems (`instantsr upscale -o`, `bench --save-sr`).
"""

import argparse
from pathlib import Path

from instantsr.evaluate import bicubic_baseline
from instantsr.io import read_image
from instantsr.viz import comparison_strip, pick_crops

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("out")
ap.add_argument("lr_dir")
ap.add_argument("sr", nargs="+", metavar="NAME=SR_DIR")
ap.add_argument("--images", help="comma-separated file names (default: all)")
ap.add_argument("--crop", type=int, default=40, help="window side in LR pixels (default 40: 160 px shown)")
ap.add_argument("--scale", type=int, default=4)
args = ap.parse_args()
lr_dir = Path(args.lr_dir)
names = args.images.split(",") if args.images else sorted(p.name for p in lr_dir.iterdir())
srs = dict(spec.split("=", 1) for spec in args.sr)
rows, s = [], args.scale
for name in names:
    lr = read_image(lr_dir / name).rgb
    outs = {"bicubic": bicubic_baseline(lr, (lr.shape[-2] * s, lr.shape[-1] * s))}
    outs.update({k: read_image(next(Path(d).glob(Path(name).stem + ".*"))).rgb for k, d in srs.items()})
    c = min(args.crop, *lr.shape[-2:])
    for y, x in pick_crops(lr, c).values():
        rows.append(tuple(o[:, y * s:(y + c) * s, x * s:(x + c) * s] for o in outs.values()))
comparison_strip(rows, list(outs), args.out, height=args.crop * s)  # 100 %: one output pixel, one strip pixel
print(f"{args.out}: {len(rows)} rows of {len(outs)} panels")
