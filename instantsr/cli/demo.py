"""`instantsr demo`: a local web page to upscale images (Gradio; `pip install "instantsr[demo]"`)."""

from __future__ import annotations

import sys

from .common import check_device


def add_parser(sub, name: str, help: str):
    d = sub.add_parser(name, help=help, description="Serve a local web page: drop images, pick a model, compare "
                       "with bicubic on a slider, download the results. Offline (no hub, no analytics, no share "
                       "link); Ctrl-C stops it.")
    d.add_argument("-m", "--model", default="default",
                   help="the model it starts with: default, a model folder or an .onnx file (changeable in the page)")
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    d.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    d.add_argument("--device", help="cpu, cuda, ... (default: cuda when present)")
    return d


def run(args) -> None:
    check_device(args.device)
    try:
        from ..demo import build_demo, launch
    except ImportError as e:
        raise RuntimeError(f"the demo needs Gradio ({e.name or e}): pip install \"instantsr[demo]\"") from None
    demo = build_demo(args.model, args.device)
    print(f"instantsr demo: http://{args.host}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    launch(demo, args.host, args.port)
