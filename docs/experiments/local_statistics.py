"""Would local statistics (TLC) make the shipped UNet local, and so tileable without a whole-image pass?

TLC (Chu et al., "Improving Image Restoration by Revisiting Global Information Aggregation", ECCV 2022)
replaces a network's global operations at test time by the same operations over a sliding window of the
training crop's size. Here: GroupNorm statistics over a window of the training crop (32 latent px at full
resolution, halving with each level; windows kept inside the image as TLC does), and the mid-block
self-attention either global, over the same windows (neighbourhood attention), or skipped. On a 32x32 latent
(the training crop) every variant is the plain network.

Prints PSNR-Y / LPIPS / DISTS on the first 30 RealSR x4 pairs (128x128 LR) for each variant, seed 0.
Measured (2 CPU cores, 4.6 minutes), against bicubic 27.25 / 0.4387 / 0.2495:
  GroupNorm global, attention global (the model)   26.87 / 0.3708 / 0.2352
  GroupNorm global, attention skipped              26.84 / 0.3688 / 0.2345
  GroupNorm local,  attention local                26.54 / 0.3850 / 0.2357
(An earlier run with local statistics and global or skipped attention gave 26.50-26.54 / 0.385 / 0.236.)
So whole-image statistics are worth 0.3 dB and 0.014 LPIPS to this model, and local statistics are no way to
tiles (`--tile` runs the UNet layer by layer with the whole image's statistics instead: nets/tiled_unet.py);
the mid-block attention is worth nothing measurable, a candidate to drop in the next backbone.

Since issue 19 the shipped default has no mid-block attention (this finding; linear cost in pixels), so the
attention variants now run the same network; the figures above are those of the default as it was at commit
248f042 (`git checkout 248f042 -- instantsr/default_model` to re-measure them).

Run from the repository root: python docs/experiments/local_statistics.py
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0

from instantsr.evaluate import bicubic_baseline
from instantsr.io import read_image
from instantsr.metrics import MetricSuite
from instantsr.pipeline import Upscaler

TRAIN_CROP = 32  # latent px of the training crops (128 HR px at x4, pixel-unshuffle)
MODE = {"norm": "global", "attention": "global", "latent": 1}


def window(h: int) -> int:
    return max(1, round(TRAIN_CROP * h / MODE["latent"]))  # the training crop at this feature map's level


def box_mean(m: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Mean over windows of k along `dim`, each kept inside the map (TLC): from a cumulative sum."""
    n = m.shape[dim]
    c = torch.cat([torch.zeros_like(m.narrow(dim, 0, 1)), m.cumsum(dim)], dim)
    means = (c.narrow(dim, k, n - k + 1) - c.narrow(dim, 0, n - k + 1)) / k
    start = (torch.arange(n) - (k - 1) // 2).clamp(0, n - k)
    return means.index_select(dim, start)


def local_group_norm(gn: torch.nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    kh, kw = min(window(h), h), min(window(h), w)
    xs = x.float().reshape(n, gn.num_groups, -1, h, w)
    mean = box_mean(box_mean(xs.mean(2), kh, -2), kw, -1)
    var = (box_mean(box_mean(xs.square().mean(2), kh, -2), kw, -1) - mean.square()).clamp_min(0)
    out = ((xs - mean[:, :, None]) * torch.rsqrt(var + gn.eps)[:, :, None]).reshape(n, c, h, w)
    return (out * gn.weight[:, None, None] + gn.bias[:, None, None]).to(x.dtype)


class LocalAttention:
    """diffusers attention processor: global, skipped, or each query over its window (clamped inside)."""

    def __call__(self, attn, x, *args, temb=None, **kwargs):
        b, c, h, w = x.shape
        k = window(h)
        if MODE["attention"] == "skip":
            return x
        if MODE["attention"] == "global" or (k >= h and k >= w):
            return AttnProcessor2_0()(attn, x, temb=temb)
        t = attn.group_norm(x).flatten(2).transpose(1, 2)
        heads, d = attn.heads, c // attn.heads
        q, key, v = (f(t).reshape(b, h, w, heads, d).permute(0, 3, 1, 2, 4) for f in (attn.to_q, attn.to_k, attn.to_v))
        kh, kw = min(k, h), min(k, w)
        rows = (torch.arange(h) - (kh - 1) // 2).clamp(0, h - kh)
        cols = (torch.arange(w) - (kw - 1) // 2).clamp(0, w - kw)
        key_win = key.unfold(2, kh, 1).unfold(3, kw, 1)[:, :, rows][:, :, :, cols].flatten(-2)  # b n h w d kk
        val_win = v.unfold(2, kh, 1).unfold(3, kw, 1)[:, :, rows][:, :, :, cols].flatten(-2)
        p = (torch.einsum("bnhwd,bnhwdk->bnhwk", q, key_win) * attn.scale).softmax(-1)
        o = torch.einsum("bnhwk,bnhwdk->bnhwd", p, val_win).permute(0, 2, 3, 1, 4).reshape(b, h * w, c)
        o = attn.to_out[0](o).transpose(1, 2).reshape(b, c, h, w)
        return (o + x if attn.residual_connection else o) / attn.rescale_output_factor


up = Upscaler.from_pretrained()
backbone = up.model.backbone


def make_local(gn: torch.nn.GroupNorm) -> None:
    plain = gn.forward
    gn.forward = lambda x: local_group_norm(gn, x) if MODE["norm"] == "local" and x.ndim == 4 else plain(x)


def remember_latent_size(forward):
    def wrapped(x, t, lq):
        MODE["latent"] = x.shape[-2]  # windows scale with each feature map's resolution relative to this
        return forward(x, t, lq)
    return wrapped


for gn in backbone.modules():
    if isinstance(gn, torch.nn.GroupNorm):
        make_local(gn)
for attn in backbone.unet.mid_block.attentions:
    if attn is not None:  # None: a model without the mid-block attention (the default since issue 19)
        attn.set_processor(LocalAttention())
backbone.forward = remember_latent_size(backbone.forward)

root = Path(__file__).resolve().parents[3] / "shared/data/test/realsr"
variants = [("global", "global"), ("global", "skip"), ("local", "local")]
suite = MetricSuite(["psnr", "lpips", "dists"])
scores = {v: [] for v in variants + ["bicubic"]}
for name in sorted(p.name for p in (root / "lr").iterdir())[:30]:
    lr, hr = (read_image(root / d / name).rgb[None] for d in ("lr", "hr"))
    scores["bicubic"].append(suite(bicubic_baseline(lr, hr.shape[-2:]), hr))
    for v in variants:
        MODE.update(norm=v[0], attention=v[1])
        scores[v].append(suite(up.upscale_tensor(lr, seed=0), hr))
for v, rows in scores.items():
    means = {k: float(torch.cat([r[k] for r in rows]).mean()) for k in rows[0]}
    label = v if v == "bicubic" else f"GroupNorm {v[0]}, attention {v[1]}"
    print(f"{label:40s} " + " / ".join(f"{means[k]:.4f}" for k in ("psnr", "lpips", "dists")))
