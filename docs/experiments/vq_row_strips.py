"""The full-width VQ-f4 decoder's full-resolution level (the last upsampling, three ResNet blocks, the output
layer) whole and in row strips: time, peak memory and their difference, each mode in a fresh process:

    python docs/experiments/vq_row_strips.py [--side 2048]

The input is a random 256-channel map of half the side, made before the measurement (random official-layout
weights; the numbers in docs/upscaling.md are from --side 2048 on 2 CPU cores). Whole needs about 11 GB there.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = r"""
import json, sys, time, torch
import torch.nn.functional as F
from instantsr.nets import row_strips as rs
from instantsr.nets.vqgan import ResShiftVQGAN
from instantsr.timing import PeakMemory
mode, side, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
dec = ResShiftVQGAN().eval().decoder
low = torch.randn(1, 256, side // 2, side // 2).contiguous(memory_format=torch.channels_last)
conv = dec.up[1].upsample.conv
with torch.no_grad(), PeakMemory(torch.device("cpu")) as peak:
    start = time.perf_counter()
    if mode == "strips":  # as Decoder.forward does when the full-resolution maps are over stream_above_mib
        rows = ResShiftVQGAN.strip_mib * 2**20 // (256 * side * 4)
        h = dec._upsampled_level_in_strips(conv, low, dec.up[0], rows)
        scale, shift = rs.group_norm_affine(dec.norm_out, rs.slice_reader(h), side, rows)
        act = lambda a, b: F.silu(torch.addcmul(shift, h[:, :, a:b], scale))
        out = torch.cat([rs.conv3x3_rows(dec.conv_out, act, side, a, b) for a, b in rs.row_spans(side, rows)], 2)
    else:  # the lean whole path
        h = rs.upsample_conv_rows(rs.upsample_phase_kernels(conv), conv.bias, low, 0, side)
        for block in dec.up[0].block:
            h = block(h)
        out = dec.conv_out(F.silu(dec.norm_out(h)))
    seconds = time.perf_counter() - start
    del h
torch.save(out, out_path)
json.dump({"seconds": seconds, "peak_mib": peak.mib}, sys.stdout)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2048, help="output side in px (default 2048)")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        results, outputs = {}, {}
        for mode in ("whole", "strips"):
            outputs[mode] = Path(tmp) / f"{mode}.pt"
            done = subprocess.run([sys.executable, "-c", RUN, mode, str(args.side), str(outputs[mode])],
                                  capture_output=True, text=True, check=True)
            results[mode] = json.loads(done.stdout)
        diff = (torch.load(outputs["whole"]) - torch.load(outputs["strips"])).abs().max().item() * 127.5
    print("| | s | peak MiB over the input |\n|---|---|---|")
    for mode, r in results.items():
        print(f"| {mode} | {r['seconds']:.1f} | {r['peak_mib']:.0f} |")
    print(f"\nlargest difference: {diff:.3f}/255")


if __name__ == "__main__":
    main()
