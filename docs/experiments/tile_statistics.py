"""Why blended whole-network tiles show seams with a GroupNorm UNet, and so why `--tile` runs our UNets
layer by layer instead (`instantsr/nets/tiled_unet.py`, exact: docs/upscaling.md, "Tiling").

Upscales a 256x256 smooth gradient and a 128x128 RealSR photo whole and in blended tiles of 64 LR px
(`pipeline.TiledDenoiser`, still the path for other backbones), and prints the largest and mean difference (in
1/255, 4 px LR border excluded) for the GroupNorm statistics a tile uses:
  per-tile     the network as it is
  stride/area  statistics of the whole input subsampled / area-downscaled to one tile (Tiled VAE's fast mode)
  exact        the whole image's own statistics (recorded in an untiled pass), overlap 16 and 32
  exact, no mid-block attention   the same with the attention skipped in both runs

Run from the repository root: python docs/experiments/tile_statistics.py (about a minute on 2 CPU cores).
Since issue 19 the shipped default has no mid-block attention, so the last rows repeat the exact ones; the model
with it is at commit 248f042 (`git checkout 248f042 -- instantsr/default_model`).
"""

import math
from pathlib import Path

import torch
import torch.nn.functional as F

import instantsr.pipeline as P
from instantsr.io import read_image
from instantsr.model import SRModel
from instantsr.pipeline import Upscaler
from instantsr.tiling import TiledDenoiser


class BlendedTiles(torch.nn.Module):
    """The shipped UNet without its exact tiling, so that `tile=` blends whole-network tiles."""

    def __init__(self, net):
        super().__init__()
        self.net, self.multiple = net, net.multiple

    def forward(self, *args):
        return self.net(*args)


shipped = Upscaler.from_pretrained().model
up = Upscaler(SRModel(BlendedTiles(shipped.backbone), shipped.codec, shipped.schedule, scale=shipped.scale,
                      steps=shipped.steps, sampler=shipped.sampler, sigma_data=shipped.sigma_data))
STATS: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
MODE = {"now": None}  # None: ordinary GroupNorm; "record": also store the statistics; "apply": use stored ones


def patch(gn: torch.nn.GroupNorm) -> None:
    ordinary = gn.forward

    def forward(x):
        if MODE["now"] is None:
            return ordinary(x)
        n, c = x.shape[:2]
        xs = x.float().reshape(n, gn.num_groups, -1)
        if MODE["now"] == "record":
            STATS[id(gn)] = (xs.mean(-1), xs.var(-1, unbiased=False))
            return ordinary(x)
        mean, var = (s.repeat(n // s.shape[0], 1)[..., None] for s in STATS[id(gn)])  # tiles are batched
        shape = (1, c) + (1,) * (x.dim() - 2)
        out = ((xs - mean) / torch.sqrt(var + gn.eps)).reshape_as(x)
        return (out * gn.weight.view(shape) + gn.bias.view(shape)).to(x.dtype)

    gn.forward = forward


for module in up.model.backbone.modules():
    if isinstance(module, torch.nn.GroupNorm):
        patch(module)


class SharedStatistics(TiledDenoiser):
    """Records GroupNorm statistics on a whole-image input (`how`), then runs the tiles with them."""

    how = "exact"

    def __call__(self, x_t, t_index, cond=None):
        h, w = x_t.shape[-2:]
        k = math.ceil(max(h, w) / self.tile)

        def reduce(t):
            if self.how == "exact":
                return t
            r = t.shape[-1] // w  # the LR image is at r x the latent's resolution
            h2, w2 = (h // k) // self.align * self.align, (w // k) // self.align * self.align
            if self.how == "area":
                return F.interpolate(t.float(), size=(h2 * r, w2 * r), mode="area").to(t.dtype)
            rows = ((torch.arange(h2) * k)[:, None] * r + torch.arange(r)).flatten()
            cols = ((torch.arange(w2) * k)[:, None] * r + torch.arange(r)).flatten()
            return t[..., rows[:, None], cols[None, :]]

        MODE["now"] = "record"
        t = torch.as_tensor(t_index).reshape(-1).expand(x_t.shape[0])
        self.denoiser(reduce(x_t), t, tuple(reduce(c) for c in cond) if isinstance(cond, tuple) else cond)
        MODE["now"] = "apply"
        try:
            return super().__call__(x_t, t_index, cond)
        finally:
            MODE["now"] = None


def gradient(h, w):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([0.1 + 0.8 * xx, 0.2 + 0.6 * yy, 0.5 + 0.3 * (xx - yy)])


def report(label, lr, how, overlap):
    whole = up.upscale_tensor(lr[None], seed=0)[0]
    if how:
        SharedStatistics.how = how
        P.TiledDenoiser = SharedStatistics
    try:
        tiled = up.upscale_tensor(lr[None], seed=0, tile=64, tile_overlap=overlap)[0]
    finally:
        P.TiledDenoiser = TiledDenoiser
    d = (tiled - whole).abs()[:, 16:-16, 16:-16] * 255
    print(f"{label:9s} {how or 'per-tile':8s} overlap {overlap}: max {d.max():6.2f}  mean {d.mean():.3f} /255")


realsr = Path(__file__).resolve().parents[3] / "shared/data/test/realsr/lr"
photo = read_image(sorted(realsr.iterdir())[3]).rgb[:, :256, :256]
for label, lr in (("gradient", gradient(256, 256)), ("photo", photo)):
    for how, overlap in ((None, 16), ("stride", 16), ("area", 16), ("exact", 16), ("exact", 32)):
        report(label, lr, how, overlap)
attention = up.model.backbone.net.unet.mid_block.attentions
if attention[0] is not None:  # None: no mid-block attention (the default since issue 19)
    attention[0] = type("Skip", (torch.nn.Module,), {"forward": lambda self, h, *a, **k: h})()
for label, lr in (("gradient", gradient(256, 256)), ("photo", photo)):
    for overlap in (16, 32):
        report(label + "*", lr, "exact", overlap)
print("* mid-block attention skipped in both runs")
