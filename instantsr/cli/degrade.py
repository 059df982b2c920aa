"""`instantsr degrade`: LR/HR training or test pairs from a folder of HR images."""

from __future__ import annotations


def add_parser(sub, name: str, help: str):
    d = sub.add_parser(name, help=help, description="Write OUT/lr and OUT/hr pairs from a folder of HR images.")
    d.add_argument("-i", "--input", required=True, help="folder of HR images")
    d.add_argument("-o", "--output", required=True, help="output folder")
    d.add_argument("-s", "--scale", type=int, default=4, choices=[2, 4, 8])
    d.add_argument("--preset", default="realesrgan", choices=["realesrgan", "bicubic", "avgpool"])
    d.add_argument("--seed", type=int, default=0)
    return d


def run(args) -> None:
    from ..degrade import degrade_folder

    n = degrade_folder(args.input, args.output, scale=args.scale, preset=args.preset, seed=args.seed)
    print(f"wrote {n} LR/HR pairs to {args.output}/lr and {args.output}/hr")
