"""The official ResShift/SinSR networks: shapes, official key layout and sizes, strict loading."""

import pytest
import torch
import torch.nn.functional as F

from instantsr.nets import swin_unet, vqgan
from instantsr.nets.swin_unet import ResShiftSwinUNet
from instantsr.nets.vqgan import ResShiftVQGAN

# Reduced widths for fast CPU tests (structure as the realsr x4 config: every level has a Swin stage).
SMALL_UNET = dict(image_size=32, lq_size=32, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=(1, 1, 1),
                  attention_resolutions=(32, 16, 8), swin_embed_dim=32, num_head_channels=16, window_size=8)
SMALL_VQ = dict(ch=32, ch_mult=(1, 2, 4), num_res_blocks=1, n_embed=64)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def perturbed(m: torch.nn.Module) -> torch.nn.Module:
    """Move weights off their init (the official init zeroes every ResBlock's last conv)."""
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


# ------------------------------------------------------------------------------------------- Swin-UNet
def test_swin_unet_forward_shape_and_timesteps():
    torch.manual_seed(0)
    net = perturbed(ResShiftSwinUNet(**SMALL_UNET)).eval()
    x, lq = torch.randn(2, 3, 32, 32), torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        out = net(x, torch.tensor([14, 14]), lq)
        assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
        # scalar timestep broadcasts; a different step changes the output (timestep conditioning is live)
        assert torch.allclose(net(x, 14, lq), out, atol=1e-6)
        assert not torch.allclose(net(x, 0, lq), out)
        # non-training resolution (a mask for 64x64 is computed on the fly) and a wrong size
        assert net(torch.randn(1, 3, 64, 32), 3, torch.randn(1, 3, 64, 32)).shape == (1, 3, 64, 32)
    with pytest.raises(ValueError, match="multiple of"):
        net(torch.randn(1, 3, 24, 24), 3, torch.randn(1, 3, 24, 24))


def test_swin_unet_backward():
    net = ResShiftSwinUNet(**SMALL_UNET)
    net(torch.randn(1, 3, 32, 32), 5, torch.randn(1, 3, 32, 32)).square().mean().backward()
    assert net.input_blocks[0][0].weight.grad is not None


def test_swin_unet_full_size_official_layout():
    """Full realsr x4 config on the meta device: size and key layout of the official checkpoints."""
    with torch.device("meta"):
        net = ResShiftSwinUNet()
    # SinSR (CVPR 2024) Table 3: ResShift / SinSR have 118.59M parameters.
    assert abs(n_params(net) - 118.59e6) / 118.59e6 < 0.01
    assert n_params(net) == 118_593_583
    sd = net.state_dict()
    expected = {
        "time_embed.0.weight": (640, 160),
        "time_embed.2.weight": (640, 640),
        "input_blocks.0.0.weight": (160, 6, 3, 3),  # 3 latent + 3 LR-image channels
        "input_blocks.1.0.emb_layers.1.weight": (320, 640),  # scale-shift norm: 2 x 160
        "input_blocks.1.1.patch_embed.proj.weight": (192, 160, 1, 1),
        "input_blocks.1.1.blocks.0.attn.relative_position_bias_table": (225, 6),  # 192 / 32 heads
        "input_blocks.1.1.blocks.0.attn.relative_position_index": (64, 64),
        "input_blocks.1.1.blocks.0.attn.qkv.weight": (576, 192),
        "input_blocks.1.1.blocks.1.attn_mask": (64, 64, 64),  # 64x64 latent, 8x8 windows
        "input_blocks.1.1.blocks.1.mlp.fc1.weight": (768, 192, 1, 1),
        "input_blocks.1.1.patch_unembed.proj.weight": (160, 192, 1, 1),
        "input_blocks.3.0.op.weight": (160, 160, 3, 3),
        "input_blocks.4.0.skip_connection.weight": (320, 160, 1, 1),
        "input_blocks.7.1.blocks.1.attn_mask": (4, 64, 64),
        "middle_block.1.blocks.0.norm1.weight": (192,),
        "middle_block.2.out_layers.3.weight": (640, 640, 3, 3),
        "output_blocks.0.0.in_layers.2.weight": (640, 1280, 3, 3),
        "output_blocks.2.1.conv.weight": (640, 640, 3, 3),
        "output_blocks.9.1.blocks.1.attn_mask": (64, 64, 64),
        "output_blocks.11.0.skip_connection.weight": (160, 320, 1, 1),
        "out.0.weight": (160,),
        "out.2.weight": (3, 160, 3, 3),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    # the 8x8 middle stage is one window: no shift, so no mask buffer (as the official)
    assert "middle_block.1.blocks.1.attn_mask" not in sd
    assert len(net.input_blocks) == 12 and len(net.output_blocks) == 12
    assert not any(k.startswith("feature_extractor") for k in sd)


def test_swin_unet_official_mask_quirk():
    """The shifted-window mask is the official one (row labels, column-major windows), not textbook Swin."""
    m = swin_unet.official_shift_mask(16, 16, 8, 4)
    assert m.shape == (4, 64, 64) and set(m.unique().tolist()) == {-100.0, 0.0}
    assert (m[0] == 0).all()  # top-left window: one region
    # bottom windows: tokens k and k' differ iff their in-window columns (k % 8) fall in different halves
    k = torch.arange(64)
    expect = torch.where((k[:, None] % 8 < 4) == (k[None, :] % 8 < 4), 0.0, -100.0)
    assert torch.equal(m[2], expect) and torch.equal(m[3], expect)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "module", "compiled"])
def test_swin_unet_load_official(tmp_path, wrap):
    torch.manual_seed(0)
    src = perturbed(ResShiftSwinUNet(**SMALL_UNET))
    sd = src.state_dict()
    if wrap == "state_dict":
        obj = {"state_dict": sd, "iters_start": 500000}
    elif wrap == "module":
        obj = {"module." + k: v for k, v in sd.items()}
    elif wrap == "compiled":
        obj = {"_orig_mod." + k: v for k, v in sd.items()}
    else:
        obj = sd
    path = tmp_path / "resshift_realsrx4_s15_v1.pth"
    torch.save(obj, path)
    net = swin_unet.load_official(path, **SMALL_UNET)
    assert not net.training
    x, lq = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x, 7, lq), src.eval()(x, 7, lq))


def test_swin_unet_load_official_wrong_checkpoint(tmp_path):
    sd = ResShiftSwinUNet(**SMALL_UNET).state_dict()
    sd["out.2.weight"] = torch.zeros(4, 32, 3, 3)  # wrong shape
    sd["extra.weight"] = torch.zeros(1)
    del sd["time_embed.0.bias"]
    path = tmp_path / "not_resshift.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError) as e:
        swin_unet.load_official(path, **SMALL_UNET)
    msg = str(e.value)
    assert "not_resshift.pth" in msg and "out.2.weight" in msg and "extra.weight" in msg and "time_embed.0.bias" in msg
    # a checkpoint of another width does not fit either: same single clear error
    torch.save(ResShiftSwinUNet(**SMALL_UNET).state_dict(), path)
    with pytest.raises(ValueError, match="shape mismatches"):
        swin_unet.load_official(path, **{**SMALL_UNET, "model_channels": 64})


# ------------------------------------------------------------------------------------------- VQ-f4
def test_vqgan_round_trip_shapes():
    torch.manual_seed(0)
    vq = ResShiftVQGAN(**SMALL_VQ).eval()
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        h = vq.encode(x)
        assert h.shape == (2, 3, 8, 12)  # x4 downsampling, 3 latent channels
        y = vq.decode(h)
        assert y.shape == x.shape and torch.isfinite(y).all()
        assert vq.decode(h, force_not_quantize=True).shape == x.shape
        # decode quantises: every latent vector snaps to a codebook entry
        q = vq.quantize(h).permute(0, 2, 3, 1).reshape(-1, 3)
        assert torch.cdist(q, vq.quantize.embedding.weight).min(1).values.max() < 1e-5


def test_vqgan_quantizer_chunking_matches_full():
    torch.manual_seed(0)
    qz = vqgan.VectorQuantizer(100, 3, chunk=7)
    z = torch.randn(2, 3, 5, 6)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    ref = torch.cdist(flat, qz.embedding.weight).argmin(1).view(2, 5, 6)
    assert torch.equal(qz.indices(z), ref)


def test_vqgan_full_size_official_layout():
    with torch.device("meta"):
        vq = ResShiftVQGAN()
    # ResShift total 173.8M (DFOSD Table 3) minus the 118.59M UNet: the VQ-f4 is ~55.3M
    assert abs(n_params(vq) - 55.3e6) / 55.3e6 < 0.01
    sd = vq.state_dict()
    expected = {
        "quantize.embedding.weight": (8192, 3),
        "quant_conv.weight": (3, 3, 1, 1),
        "post_quant_conv.weight": (3, 3, 1, 1),
        "encoder.conv_in.weight": (128, 3, 3, 3),
        "encoder.down.0.downsample.conv.weight": (128, 128, 3, 3),
        "encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "encoder.conv_out.weight": (3, 512, 3, 3),
        "decoder.conv_in.weight": (512, 3, 3, 3),
        "decoder.mid.block_2.conv2.weight": (512, 512, 3, 3),
        "decoder.up.2.block.2.conv1.weight": (512, 512, 3, 3),
        "decoder.up.2.upsample.conv.weight": (512, 512, 3, 3),
        "decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "decoder.conv_out.weight": (3, 128, 3, 3),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "encoder.down.2.downsample.conv.weight" not in sd and "decoder.up.0.upsample.conv.weight" not in sd
    assert not any(".attn.0." in k for k in sd)  # attn_resolutions: []


def test_vqgan_from_official_config():
    params = {"embed_dim": 3, "n_embed": 64, "ddconfig": dict(double_z=False, z_channels=3, resolution=256,
              in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2, 4], num_res_blocks=1, attn_resolutions=[],
              dropout=0.0, padding_mode="zeros")}
    vq = ResShiftVQGAN.from_official_config(params)
    assert vq.state_dict().keys() == ResShiftVQGAN(**SMALL_VQ).state_dict().keys()


def test_vqgan_load_official(tmp_path):
    torch.manual_seed(0)
    src = perturbed(ResShiftVQGAN(**SMALL_VQ))
    path = tmp_path / "autoencoder_vq_f4.pth"
    obj = dict(src.state_dict())
    obj["loss.discriminator.main.0.weight"] = torch.zeros(1)  # LDM training checkpoints carry the loss
    torch.save({"state_dict": obj}, path)
    vq = vqgan.load_official(path, **SMALL_VQ)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(vq(x), src.eval()(x))
    bad = dict(src.state_dict())
    bad["quantize.embedding.weight"] = torch.zeros(10, 3)
    torch.save(bad, path)
    with pytest.raises(ValueError, match=r"autoencoder_vq_f4\.pth.*quantize\.embedding\.weight"):
        vqgan.load_official(path, **SMALL_VQ)


def test_vqgan_lean_inference_keeps_the_outputs_and_the_gradient():
    """`lean` (channels-last, in-place activations without a gradient): the encode and decode of the official layer
    order within float rounding (decode within 1/255), NCHW-contiguous outputs, and training still differentiates."""
    torch.manual_seed(0)
    lean = perturbed(ResShiftVQGAN(**SMALL_VQ)).eval()
    plain = ResShiftVQGAN(**SMALL_VQ, lean=False).eval()
    plain.load_state_dict(lean.state_dict())
    assert lean.lean and not plain.lean
    assert all(b.in_place for b in lean.modules() if isinstance(b, vqgan.ResnetBlock))
    x = torch.rand(1, 3, 64, 48) * 2 - 1
    with torch.no_grad():
        z, z_plain = lean.encode(x), plain.encode(x)
        torch.testing.assert_close(z, z_plain, atol=1e-4, rtol=1e-4)
        y, y_plain = lean.decode(z_plain, force_not_quantize=True), plain.decode(z_plain, force_not_quantize=True)
    assert z.is_contiguous() and y.is_contiguous() and y.shape == (1, 3, 64, 48)
    assert (y - y_plain).abs().max() * 127.5 < 1.0 and y_plain.abs().mean() > 0.05
    lean.train()
    x.requires_grad_(True)
    lean.decode(lean.encode(x), force_not_quantize=True).square().mean().backward()  # no in-place under autograd
    assert x.grad is not None and x.grad.abs().sum() > 0


# glibc raises its mmap threshold as big blocks are freed and then keeps blocks of this size in its heap, so a
# peak RSS would vary by tens of MiB from run to run (7.2-11.6 maps plain); a fixed threshold returns each freed
# map to the system, and the peak is the tensors' (within 0.5 MiB over four runs)
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072"}
LEAN_PEAK_SCRIPT = r"""
import json, sys, torch
torch.set_num_threads(1)
from instantsr.nets.vqgan import ResShiftVQGAN
from instantsr.timing import PeakMemory
vq = ResShiftVQGAN(ch=32, ch_mult=(1, 2, 4), num_res_blocks=1, n_embed=64, lean=sys.argv[1] != "plain").eval()
vq.stream_above_mib = 0 if sys.argv[1] == "strips" else float("inf")
vq.strip_mib = 1  # strips of 10 rows at the top level (64 channels x 384 wide)
z = torch.randn(1, 3, 96, 96)  # decodes to 384 x 384: one 32-channel map is 18 MiB
with torch.no_grad():
    vq.decode(torch.randn(1, 3, 8, 8))  # first-call allocations before the baseline
    with PeakMemory(torch.device("cpu")) as peak:  # the rise of VmHWM over the RSS at entry
        vq.decode(z)
json.dump({"growth_mib": peak.mib}, sys.stdout)
"""


def test_vqgan_lean_decode_peaks_lower_and_row_strips_lower_still():
    """Peak RSS growth of a decode to 384 x 384 (fresh processes, `timing.PeakMemory`): at least one
    full-resolution map (18 MiB) lower when lean, one and a half more lower in row strips, and under 3.5 maps
    there (measured: 7.2 maps plain, 5.2 lean, 2.9 in strips)."""
    import json
    import subprocess
    import sys

    growth = {}
    for mode in ("plain", "lean", "strips"):
        out = subprocess.run([sys.executable, "-c", LEAN_PEAK_SCRIPT, mode], capture_output=True, text=True,
                             check=True, env={**__import__("os").environ, **FIXED_MALLOC, "OMP_NUM_THREADS": "1"})
        growth[mode] = json.loads(out.stdout)["growth_mib"]
    assert growth["lean"] < growth["plain"] - 18, growth
    assert growth["strips"] < growth["lean"] - 1.5 * 18 and growth["strips"] < 3.5 * 18, growth


@pytest.mark.parametrize("ch_mult", [(1, 2, 4), (2, 2, 4)])  # (2, 2, 4): the encoder's top block has a shortcut
def test_vqgan_row_strips_equal_the_whole_computation(ch_mult, monkeypatch):
    """Encode and decode with every level in row strips (strips of 2 to 9 rows; a batch of two; heights the
    strips do not divide) equal the whole computation within float rounding."""
    from instantsr.nets import row_strips

    calls = []
    monkeypatch.setattr(vqgan, "resnet_block_in_strips",
                        lambda *a: calls.append(a[2]) or row_strips.resnet_block_in_strips(*a))
    torch.manual_seed(0)
    vq = perturbed(ResShiftVQGAN(ch=32, ch_mult=ch_mult, num_res_blocks=2, n_embed=64)).eval()
    for shape in ((1, 3, 52, 44), (2, 3, 36, 28)):
        x = torch.rand(*shape) * 2 - 1
        with torch.no_grad():
            vq.stream_above_mib = float("inf")
            assert vq._strip_mib_for(x, *shape[2:]) is None
            z, y = vq.encode(x), vq.decode(vq.encode(x), force_not_quantize=True)
            assert not calls
            vq.stream_above_mib = 0
            for strip_mib in (1e-9, 0.02, 0.1):
                vq.strip_mib = strip_mib
                torch.testing.assert_close(vq.encode(x), z, atol=2e-5, rtol=0)
                torch.testing.assert_close(vq.decode(z, force_not_quantize=True), y, atol=2e-5, rtol=0)
                n_blocks = sorted(calls)
                assert n_blocks.count(shape[2]) == 2 + 3  # the full-resolution level: encoder, decoder
                calls.clear()
        assert y.abs().mean() > 0.1
    assert vq._strip_mib_for(x, 52, 44) is None  # autograd on: the official graph
    with torch.no_grad():
        vq.lean = False
        assert vq._strip_mib_for(x, 52, 44) is None


def test_row_strip_layers_match_torch():
    """The strip functions against torch's layers: GroupNorm statistics (also off-centre data, where they are
    more accurate than channels-last GroupNorm in float32), the 3x3 convolution, the stride-2 downsampling on
    an odd height, the nearest 2x upsampling and 3x3 convolution as four 2x2 phase kernels (any row range)."""
    from instantsr.nets import row_strips

    torch.manual_seed(0)
    x = (torch.randn(2, 64, 37, 20) * 3 + 50).contiguous(memory_format=torch.channels_last)
    norm = torch.nn.GroupNorm(32, 64, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    scale, shift = row_strips.group_norm_affine(norm, row_strips.slice_reader(x), 37, 5)
    exact = F.group_norm(x.double(), 32, norm.weight.double(), norm.bias.double(), 1e-6)
    assert (x * scale + shift - exact).abs().max() < 1e-4
    conv = torch.nn.Conv2d(64, 16, 3, padding=1)
    down = torch.nn.Conv2d(64, 64, 3, stride=2)
    with torch.no_grad():
        strips = torch.cat([row_strips.conv3x3_rows(conv, row_strips.slice_reader(x), 37, a, b)
                            for a, b in row_strips.row_spans(37, 4)], 2)
        torch.testing.assert_close(strips, conv(x), atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(row_strips.downsample_in_strips(down, x, 5), down(F.pad(x, (0, 1, 0, 1))),
                                   atol=1e-4, rtol=1e-5)
        up = torch.nn.Conv2d(64, 16, 3, padding=1)
        kernels = row_strips.upsample_phase_kernels(up)
        upsampled = up(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        for a, b in [(0, 74), (0, 1), (5, 6), (7, 20), (33, 74), (73, 74)]:  # every parity at both ends, the edges
            torch.testing.assert_close(row_strips.upsample_conv_rows(kernels, up.bias, x, a, b), upsampled[:, :, a:b],
                                       atol=1e-4, rtol=1e-5)
