"""Attention on the CPU runs SDPA's fused kernel: no L x L matrix (issue 32, part 1).

`F.scaled_dot_product_attention` falls back to its math kernel, which materialises the full L x L attention
matrix, when q/k/v are not 4-D with the last dim's stride 1 (or the mask is not 2-D/4-D). The VQ-GAN's global
attention at a 128 x 128 latent has L = 16384 tokens: 1 GiB of float32 for that matrix alone (2.3 GB peak measured
with the old transposed q/k/v), about 7 MB through the fused kernel."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from instantsr.nets.swin_unet import SwinTransformerBlock, WindowAttention
from instantsr.nets.vqgan import AttnBlock


def old_vq_attention(block: AttnBlock, x: torch.Tensor) -> torch.Tensor:
    """AttnBlock.forward before the fix: transposed, non-contiguous q/k/v (the math kernel on CPU)."""
    b, c, h, w = x.shape
    hn = block.norm(x)
    q, k, v = (m(hn).reshape(b, 1, c, h * w).transpose(-1, -2) for m in (block.q, block.k, block.v))
    out = F.scaled_dot_product_attention(q, k, v)
    return x + block.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


def old_window_attention(attn: WindowAttention, x: torch.Tensor, mask, batch: int) -> torch.Tensor:
    """WindowAttention.forward before the fix: 5-D B x nW x nH x N x hd q/k/v (the math kernel on CPU)."""
    bn, n, c = x.shape
    nh = attn.num_heads
    q, k, v = attn.qkv(x).reshape(batch, bn // batch, n, 3, nh, c // nh).permute(3, 0, 1, 4, 2, 5).unbind(0)
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)]
    bias = bias.view(n, n, nh).permute(2, 0, 1)
    if mask is not None:
        bias = bias.unsqueeze(0) + mask.unsqueeze(1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return attn.proj(out.permute(0, 1, 3, 2, 4).reshape(bn, n, c))


def sdpa_kernels(fn) -> set[str]:
    """The aten SDPA kernels `fn()` runs."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages() if "scaled_dot_product" in e.key}


def perturb(m: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m.eval()


def test_vq_attention_matches_the_old_formulation_on_the_fused_kernel():
    torch.manual_seed(0)
    block = perturb(AttnBlock(32))
    x = torch.randn(2, 32, 24, 20)
    with torch.no_grad():
        torch.testing.assert_close(block(x), old_vq_attention(block, x), atol=1e-5, rtol=0)
    kernels = sdpa_kernels(lambda: block(x))
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in kernels, kernels
    assert "aten::_scaled_dot_product_attention_math" not in kernels, kernels


@pytest.mark.parametrize("shift", [0, 4])
def test_swin_window_attention_matches_the_old_formulation_on_the_fused_kernel(shift):
    """4-D q/k/v (windows folded into the batch) and a 4-D mask: the fused kernel, the same numbers, batch of 2."""
    torch.manual_seed(1)
    blk = perturb(SwinTransformerBlock(32, 32, num_heads=2, window_size=8, shift_size=shift, mlp_ratio=2.0))
    x = torch.randn(2, 32, 16, 24)
    windows = torch.randn(2 * 6, 64, 32)  # 2 images x 2 x 3 windows of 8 x 8
    mask = torch.zeros(6, 64, 64).masked_fill(torch.rand(6, 64, 64) < 0.3, -100.0) if shift else None
    with torch.no_grad():
        torch.testing.assert_close(blk.attn(windows, mask, 2), old_window_attention(blk.attn, windows, mask, 2),
                                   atol=1e-5, rtol=0)
    kernels = sdpa_kernels(lambda: blk(x))
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in kernels, kernels
    assert "aten::_scaled_dot_product_attention_math" not in kernels, kernels


def test_unet_and_kl_codec_attention_run_the_fused_kernel():
    """The `base`/`large` UNet presets' attention (nets/unet2d.py: contiguous q/k/v) and the KL codec's mid-block
    attention (diffusers': q/k/v made by a view + transpose whose last dim has stride 1): the fused kernel."""
    from instantsr.codecs import KLCodec
    from instantsr.nets.unet import ConditionalUNet

    torch.manual_seed(0)
    unet = ConditionalUNet(latent_channels=4, block_out_channels=(32, 32), attention_levels=(False, True),
                           norm_num_groups=8).eval()
    codec = KLCodec(block_out_channels=(8, 16), latent_channels=4, layers_per_block=1, norm_num_groups=4).eval()
    for name, run in [("unet", lambda: unet(torch.randn(1, 4, 16, 16), torch.tensor([3]), torch.randn(1, 3, 16, 16))),
                      ("kl", lambda: codec.decode(codec.encode(torch.randn(1, 3, 16, 16))))]:
        kernels = sdpa_kernels(run)
        assert "aten::_scaled_dot_product_flash_attention_for_cpu" in kernels, (name, kernels)
        assert "aten::_scaled_dot_product_attention_math" not in kernels, (name, kernels)


PEAK_SCRIPT = r"""
import json, sys, torch
torch.set_num_threads(1)
from instantsr.nets.vqgan import AttnBlock
from instantsr.timing import PeakMemory
block = AttnBlock(32).eval()
x = torch.randn(1, 32, 128, 128)  # a 128 x 128 latent: L = 16384 tokens
with torch.no_grad():
    block(torch.randn(1, 32, 8, 8))  # warm up (first-call allocations) before the baseline
    with PeakMemory(torch.device("cpu")) as peak:  # the rise of VmHWM over the RSS at entry
        out = block(x)
json.dump({"growth_mib": peak.mib, "finite": bool(torch.isfinite(out).all())}, sys.stdout)
"""


def test_vq_attention_peak_memory_at_a_128x128_latent():
    """Peak RSS growth of one VQ attention block at L = 16384 stays far below the 1 GiB that the math kernel's
    L x L float32 matrix alone would take (measured in a fresh process by `timing.PeakMemory`: VmHWM reset at
    entry; ru_maxrss would start at the RSS of the test run that started it and read no rise)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="131072")  # see
    # tests/test_official_nets.py FIXED_MALLOC: the peak of the tensors, not of glibc's heap
    run = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["finite"]
    assert 8 < result["growth_mib"] < 256, result  # the 8 MiB output at least; the math kernel >= 1024
