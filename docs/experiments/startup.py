"""Start-up time of `instantsr upscale` against `import torch`, measured back to back in one run:

    python docs/experiments/startup.py [--repeat 5] [-m MODEL]

Each round runs `python -c "import torch"`, then `instantsr upscale` of one 64x48 photo (a fresh output each
time), as separate processes; the medians and their ratio are printed as a Markdown table. The ratio is what to
compare between machines: both times scale with the CPU and the disk cache. (README: the target is 2.5x.)
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--repeat", type=int, default=5)
ap.add_argument("-m", "--model", default=None, help="model folder (default: the shipped default)")
args = ap.parse_args()


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


with tempfile.TemporaryDirectory() as tmp:
    photo = Path(tmp) / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(photo)
    upscale = [sys.executable, "-m", "instantsr.cli", "upscale", "-i", str(photo)]
    upscale += ["-m", args.model] if args.model else []
    torch_s, upscale_s = [], []
    wall([sys.executable, "-c", "import torch"])  # warm the disk cache for both
    for k in range(args.repeat):
        torch_s.append(wall([sys.executable, "-c", "import torch"]))
        upscale_s.append(wall(upscale + ["-o", str(Path(tmp) / f"out{k}.png")]))
t, u = statistics.median(torch_s), statistics.median(upscale_s)
print("| command | median s | runs |\n|---|---|---|")
print(f"| python -c \"import torch\" | {t:.2f} | {', '.join(f'{s:.2f}' for s in torch_s)} |")
print(f"| instantsr upscale 64x48 | {u:.2f} | {', '.join(f'{s:.2f}' for s in upscale_s)} |")
print(f"\nratio: {u / t:.2f}x")
