"""Choose among candidates by issue 31's rule, on two `instantsr bench` runs of the validation split (never on a
test set): one on val/ (Real-ESRGAN LR), one on val_bicubic/ (the same crops, bicubic LR).

    python configs/validation/choose.py VAL_BENCH/bench.csv VAL_BICUBIC_BENCH/bench.csv [--reference teacher]

Several bench runs of one set are given comma-separated (their rows are merged by name).

Eligible: on both sets LPIPS and DISTS below the reference's (the model to beat) and PSNR-Y at most 0.3 dB below
it; on val_bicubic (where the HR crops themselves read grid 1.03 and colour 0.23) `grid` no higher than Real-ESRGAN
x4plus's and a mean colour shift of at most 1 level. Among the eligible, the lowest LPIPS + DISTS summed over both
sets wins. Prints every candidate with what it fails, and the choice.
"""

import argparse
import csv

METRICS = ("psnr", "ssim", "lpips", "dists", "grid", "grid_levels", "color")

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("val", help="bench.csv on val/ (Real-ESRGAN LR)")
ap.add_argument("val_bicubic", help="bench.csv on val_bicubic/")
ap.add_argument("--reference", default="teacher", help="name of the row to beat (default teacher)")
ap.add_argument("--peer", default="realesrgan", help="name of the row whose grid is the ceiling")
ap.add_argument("--psnr-margin", type=float, default=0.3)
ap.add_argument("--max-color", type=float, default=1.0)
args = ap.parse_args()


def read(paths):
    rows = {}
    for path in paths.split(","):
        with open(path) as f:
            rows.update({r["name"]: {k: float(r[k]) for k in METRICS if r.get(k)} for r in csv.DictReader(f)})
    return rows


sets = {"val": read(args.val), "val_bicubic": read(args.val_bicubic)}
bic = sets["val_bicubic"]
eligible, score = [], {}
print("| candidate | set | PSNR-Y | SSIM-Y | LPIPS | DISTS | grid | grid levels | colour |\n|---|---|---|---|---|---|---|---|---|")
for name in sets["val"]:
    fails = []
    for label, rows in sets.items():
        r, ref = rows[name], rows[args.reference]
        fails += [f"{m} ({label})" for m in ("lpips", "dists") if r[m] >= ref[m] and name != args.reference]
        if r["psnr"] < ref["psnr"] - args.psnr_margin:
            fails.append(f"PSNR ({label})")
        print(f"| {name} | {label} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['lpips']:.4f} | {r['dists']:.4f} | "
              f"{r['grid']:.3f} | {r['grid_levels']:.2f} | {r['color']:.2f} |")
    if bic[name]["grid"] > bic[args.peer]["grid"]:
        fails.append("grid")
    if bic[name]["color"] > args.max_color:
        fails.append("colour")
    score[name] = sum(rows[name]["lpips"] + rows[name]["dists"] for rows in sets.values())
    print(f"|  | fails: {', '.join(fails) or 'nothing'} |  |  |  |  |  |  |  |")
    if not fails and name not in (args.reference, args.peer, "bicubic"):
        eligible.append(name)
if eligible:
    best = min(eligible, key=score.get)
    print(f"\nchosen: {best} (lowest LPIPS + DISTS over both sets of {len(eligible)} eligible: {score[best]:.4f})")
else:
    print(f"\nno candidate is eligible: {args.reference} stays")
