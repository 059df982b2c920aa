"""ncnn models (``.param`` graph text + ``.bin`` weight blob), read without ncnn: the layer list, the
Convolution weights (fp16 or fp32) in graph order, and the conversion of Real-ESRGAN x4plus to the
BasicSR RRDBNet keys (:mod:`instantsr.nets.rrdbnet`), as :mod:`instantsr.weights` caches it.

Malformed or unsupported files raise :class:`instantsr.weights.WeightsError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from instantsr.weights_errors import WeightsError

__all__ = ["NcnnLayer", "parse_ncnn_param", "read_ncnn_convolutions", "rrdbnet_convs", "rrdbnet_from_ncnn"]

_NCNN_MAGIC = 7767517
_NCNN_FP16_TAG = 0x01306B47
# Layer types that hold no weights in the .bin (the ones a PyTorch -> ONNX -> ncnn CNN export uses).
_NCNN_WEIGHTLESS = frozenset({
    "Input", "Split", "Concat", "Eltwise", "Interp", "BinaryOp", "ReLU", "Sigmoid", "TanH", "Clip",
    "PixelShuffle", "Reshape", "Permute", "Crop", "Flatten", "Dropout", "Noop", "UnaryOp",
})


@dataclass(frozen=True)
class NcnnLayer:
    """One layer line of an ncnn .param file. Array params (keys <= -23300) are stored as a tuple
    under their positive id (``-23310=1,0.2`` -> ``params[10] == (0.2,)``)."""

    type: str
    name: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    params: dict


def _ncnn_value(token: str) -> int | float:
    return float(token) if any(c in token for c in ".eE") else int(token)


def parse_ncnn_param(text: str) -> list[NcnnLayer]:
    """The layers of an ncnn .param text (format 7767517), in file order."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != [str(_NCNN_MAGIC)]:
        raise WeightsError(f"not an ncnn .param file (first line is not {_NCNN_MAGIC})")
    layer_count = int(lines[1][0])
    if len(lines) - 2 != layer_count:
        raise WeightsError(f"ncnn .param declares {layer_count} layers and lists {len(lines) - 2}")
    layers = []
    for tokens in lines[2:]:
        kind, name, n_in, n_out = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
        bottoms = tuple(tokens[4:4 + n_in])
        tops = tuple(tokens[4 + n_in:4 + n_in + n_out])
        params: dict = {}
        for item in tokens[4 + n_in + n_out:]:
            key, value = item.split("=", 1)
            k = int(key)
            if k <= -23300:
                count, *values = value.split(",")
                if len(values) != int(count):
                    raise WeightsError(f"ncnn layer {name}: array param {key} should hold {count} values")
                params[-k - 23300] = tuple(_ncnn_value(v) for v in values)
            else:
                params[k] = _ncnn_value(value)
        layers.append(NcnnLayer(kind, name, bottoms, tops, params))
    return layers


def read_ncnn_convolutions(
    layers: list[NcnnLayer], blob: bytes
) -> list[tuple[NcnnLayer, torch.Tensor, torch.Tensor | None]]:
    """(layer, weight OIHW fp32, bias fp32 or None) for each Convolution layer, in graph order.

    The .bin holds, layer after layer, the weight blob (a 4-byte tag: 0x01306B47 = fp16 data padded to
    4 bytes, 0 = fp32 data) and then the bias as raw fp32 (ncnn ``ModelBin::load`` types 0 and 1).
    Layers that would hold other weights, other tags, or bytes left over at the end are errors.
    """
    out = []
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(blob):
            raise WeightsError(f"ncnn .bin ends at byte {len(blob)}, needs {pos + n}")
        pos += n
        return blob[pos - n:pos]

    for layer in layers:
        if layer.type in _NCNN_WEIGHTLESS:
            continue
        if layer.type != "Convolution":
            raise WeightsError(f"ncnn layer {layer.name}: type {layer.type} is not supported")
        p = layer.params
        if p.get(8, 0) or p.get(19, 0):
            raise WeightsError(f"ncnn layer {layer.name}: int8 or dynamic-weight convolutions are not supported")
        num_output, size = int(p.get(0, 0)), int(p.get(6, 0))
        kw = int(p.get(1, 0))
        kh = int(p.get(11, kw))
        if num_output <= 0 or kw <= 0 or size % (num_output * kh * kw):
            raise WeightsError(f"ncnn layer {layer.name}: weight_data_size {size} does not fit "
                               f"{num_output} outputs of {kh}x{kw}")
        tag = int.from_bytes(take(4), "little")
        if tag == _NCNN_FP16_TAG:
            data = np.frombuffer(take((2 * size + 3) // 4 * 4), dtype="<f2", count=size)
        elif tag == 0:
            data = np.frombuffer(take(4 * size), dtype="<f4")
        else:
            raise WeightsError(f"ncnn layer {layer.name}: weight storage tag {tag:#010x} is not supported "
                               f"(only fp16 {_NCNN_FP16_TAG:#010x} and fp32 0)")
        weight = torch.from_numpy(data.astype(np.float32).reshape(num_output, -1, kh, kw))
        bias = None
        if p.get(5, 0):
            bias = torch.from_numpy(np.frombuffer(take(4 * num_output), dtype="<f4").astype(np.float32))
        out.append((layer, weight, bias))
    if pos != len(blob):
        raise WeightsError(f"ncnn .bin has {len(blob) - pos} bytes left after the last weight")
    return out


# ---- Real-ESRGAN x4plus -> RRDBNet ----------------------------------------------------------------------- #


def rrdbnet_convs(num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 23,
                  num_grow_ch: int = 32) -> list[tuple[str, tuple[int, int, int, int], bool]]:
    """(name, weight shape OIHW, followed by LeakyReLU(0.2)) of each Conv2d of BasicSR's x4 RRDBNet
    (:class:`instantsr.nets.rrdbnet.RRDBNet`), in module order. Written out here, not read off the network,
    so that converting needs no import of the network (whose loader imports :mod:`instantsr.weights`)."""
    convs = [("conv_first", (num_feat, num_in_ch, 3, 3), False)]
    for n in range(num_block):
        for r in (1, 2, 3):
            for k in range(1, 6):
                out = num_feat if k == 5 else num_grow_ch
                convs.append((f"body.{n}.rdb{r}.conv{k}", (out, num_feat + (k - 1) * num_grow_ch, 3, 3), k != 5))
    convs.append(("conv_body", (num_feat, num_feat, 3, 3), False))
    convs += [(name, (num_feat, num_feat, 3, 3), True) for name in ("conv_up1", "conv_up2", "conv_hr")]
    convs.append(("conv_last", (num_out_ch, num_feat, 3, 3), False))
    return convs


def rrdbnet_from_ncnn(blob: bytes, param: bytes) -> dict[str, torch.Tensor]:
    """Real-ESRGAN x4plus ncnn model -> RRDBNet state dict (fp32).

    The PyTorch -> ONNX -> ncnn export keeps the convolutions in forward order, which is also the module
    order of RRDBNet (conv_first, body.N.rdbK.conv1..5, conv_body, conv_up1, conv_up2, conv_hr, conv_last),
    so the k-th Convolution is the k-th Conv2d. Count, shapes, biases and the place of the fused
    LeakyReLU(0.2) are all checked against the network (its layout, :func:`rrdbnet_convs`).
    """
    convs = rrdbnet_convs(3, 3, num_feat=64, num_block=23, num_grow_ch=32)
    found = read_ncnn_convolutions(parse_ncnn_param(param.decode("utf-8")), blob)
    if len(found) != len(convs):
        raise WeightsError(f"Real-ESRGAN ncnn model has {len(found)} convolutions, RRDBNet has {len(convs)}")
    out = {}
    for (name, shape, lrelu), (layer, weight, bias) in zip(convs, found):
        if tuple(weight.shape) != shape or bias is None or tuple(bias.shape) != shape[:1]:
            raise WeightsError(f"ncnn {layer.name} (weight {tuple(weight.shape)}) does not match {name} "
                               f"(weight {shape}, with bias)")
        act = (layer.params.get(9, 0), layer.params.get(10, ()))
        if act != ((2, (0.2,)) if lrelu else (0, ())):
            raise WeightsError(f"ncnn {layer.name} activation {act} does not match {name}")
        out[f"{name}.weight"] = weight.contiguous()
        out[f"{name}.bias"] = bias.contiguous()
    return out
