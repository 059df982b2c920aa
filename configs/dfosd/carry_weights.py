"""The weights a DFOSD device run needs (VGG-16 and DISTS for EA-DISTS; AlexNet and LPIPS for T_L and LPIPS), from
the local cache (`instantsr weights fetch`) into .carry/cache in float16: VGG-16 is 59 MB in float32, 29 MB here,
so that it fits the 64 MiB that travel. They load into the float32 networks as usual (EA-DISTS agrees to 1e-4).

    python configs/dfosd/carry_weights.py [.carry/cache]
"""

import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from instantsr.weights import cache_dir

dst = Path(sys.argv[1] if len(sys.argv) > 1 else ".carry/cache")
dst.mkdir(parents=True, exist_ok=True)
for name in ["vgg16", "dists", "alexnet", "lpips_alex", "lpips_vgg"]:
    tensors = load_file(str(cache_dir() / f"{name}.safetensors"))
    half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(half, str(dst / f"{name}.safetensors"))
print(f"wrote {dst}: {sum(f.stat().st_size for f in dst.glob('*.safetensors')) / 2**20:.1f} MiB")
