"""Exact tiled execution of the conditional UNet: tiles give the whole-image result (no seams, by construction)."""

from __future__ import annotations

import pytest
import torch

from instantsr.nets.tiled_unet import TiledUNetRunner
from instantsr.nets.unet import ConditionalUNet


def _model(preset: str, **kwargs) -> ConditionalUNet:
    torch.manual_seed(0)
    model = ConditionalUNet.from_preset(preset, **kwargs).eval()
    for m in model.modules():  # GroupNorm affines away from (1, 0), so a wrong statistic cannot hide
        if isinstance(m, torch.nn.GroupNorm):
            torch.nn.init.normal_(m.weight, 1.0, 0.3)
            torch.nn.init.normal_(m.bias, 0.0, 0.3)
    return model


@pytest.mark.parametrize("preset,kwargs,size,tile", [
    ("tiny", {}, (40, 56), 16),  # tiles that do not divide the map
    ("small", {}, (48, 40), 24),  # three levels, mid-block attention
    ("tiny", dict(attention_levels=(False, True), extra_channels=2, latent_channels=4), (32, 24), 8),
])
def test_tiled_forward_equals_whole_forward(preset, kwargs, size, tile):
    model = _model(preset, **kwargs)
    c = model.config
    x = torch.randn(2, c.latent_channels, *size)
    lq = torch.rand(2, c.cond_channels + c.extra_channels, *size)
    t = torch.tensor([3, 11])
    with torch.no_grad():
        whole = model(x, t, lq)
        model.enable_tiling(tile)
        tiled = model(x, t, lq)
        model.enable_tiling(tile, store="cpu")
        stored = model(x, t, lq)
    model.disable_tiling()
    torch.testing.assert_close(tiled, whole, rtol=0, atol=2e-5)
    torch.testing.assert_close(stored, tiled, rtol=0, atol=0)
    # The runner really tiles, and its progress count is exact: one call per convolution tile.
    calls = []
    TiledUNetRunner(model.unet, tile, on_tile=calls.append)(model._input(x, lq), t)
    assert len(calls) == model.num_tiles(size, tile) > 2 * len(model.unet.down_blocks) + 2


def test_tiling_stays_off_for_training_and_small_inputs():
    model = _model("tiny")
    x, lq, t = torch.randn(1, 48, 32, 32), torch.rand(1, 3, 32, 32), torch.tensor([5])
    model.enable_tiling(8)
    out = model(x, t, lq)  # grad enabled: the ordinary forward, so training backpropagates as usual
    out.mean().backward()
    assert model.unet.conv_in.weight.grad is not None
    with torch.no_grad():
        model.enable_tiling(32)  # no larger than the tile: the ordinary forward, bit for bit
        assert torch.equal(model(x, t, lq), out.detach())
