"""`instantsr export`: a one-step model as one ONNX graph (onnxruntime, chaiNNer)."""

from __future__ import annotations

from pathlib import Path

from .common import check_writable


def add_parser(sub, name: str, help: str):
    x = sub.add_parser(name, help=help,
                       description="Write the whole one-step inference (pad, codec encode, the network pass, decode) "
                                   "as one ONNX graph with dynamic size: input image N x 3 x H x W in [0, 1], output "
                                   "the upscaled image. Models that need more than one network pass are refused. "
                                   'Needs pip install "instantsr[onnx]".')
    x.add_argument("-m", "--model", help="model folder, or the run folder holding it (default: the shipped model)")
    x.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    x.add_argument("--fp16", action="store_true",
                   help="half precision inside the graph (input and output stay float32); for GPUs")
    x.add_argument("--opset", type=int, help="ONNX opset version (default: torch's exporter's)")
    x.add_argument("--noise-input", action="store_true",
                   help="take the method's noise as inputs (noise, and lq_noise for RSD) instead of drawing it in "
                        "the graph: `instantsr upscale --onnx` then gives the torch output of the same --seed; "
                        "tools that feed one image (chaiNNer) need the default")
    return x


def run(args) -> None:
    out = Path(args.output)
    if out.suffix.lower() != ".onnx" or out.is_dir():
        raise ValueError(f"{out}: give -o the ONNX file to write, named .onnx")
    check_writable(out.parent)

    from ..onnx_export import export_onnx

    export_onnx(args.model, out, fp16=args.fp16, opset=args.opset, noise_input=args.noise_input)
    form = "the noise as inputs" if args.noise_input else "one input: image N x 3 x H x W in [0, 1]"
    print(f"wrote {out} ({'fp16' if args.fp16 else 'fp32'}, {form}); run `instantsr upscale --onnx {out} -i LR "
          f"-o OUT`{'' if args.noise_input else ', or load it in chaiNNer'}")
