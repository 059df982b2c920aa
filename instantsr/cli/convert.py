"""`instantsr convert`: the official ResShift / SinSR checkpoints as an instantsr model folder."""

from __future__ import annotations


def add_parser(sub, name: str, help: str):
    c = sub.add_parser(name, help=help,
                       description="Read the official .pth files (weights only, no code runs) and write a model "
                                   "folder (safetensors) that `instantsr upscale -m` runs as the official code does.")
    c.add_argument("--unet", required=True, help="SinSR_v1.pth or resshift_realsrx4_s15_v1.pth")
    c.add_argument("--autoencoder", required=True, help="autoencoder_vq_f4.pth")
    c.add_argument("--method", required=True, choices=["sinsr", "resshift"],
                   help="sinsr: one step; resshift: 15 stochastic steps (the official samplers)")
    c.add_argument("-o", "--output", required=True, help="model folder to write")
    c.add_argument("--config", help="TOML/JSON overrides of the released x4 settings: [unet] (the official YAML's "
                   "model.params), [autoencoder] (autoencoder.params, ddconfig flattened), [schedule], scale")
    return c


def run(args) -> None:
    from ..config import read_config
    from ..convert import convert_official

    overrides = read_config(args.config) if args.config else {}
    unknown = set(overrides) - {"unet", "autoencoder", "schedule", "scale"}
    if unknown:
        raise ValueError(f"{args.config}: unknown section(s) {', '.join(sorted(unknown))}; "
                         "use [unet], [autoencoder], [schedule] and scale")
    model = convert_official(args.unet, args.autoencoder, args.method, args.output, overrides.get("unet"),
                             overrides.get("autoencoder"), overrides.get("schedule"), overrides.get("scale", 4))
    print(f"wrote {args.output}: {args.method}, x{model.scale}, {model.steps} step(s) by default "
          f"({model.sampler}); run `instantsr upscale -m {args.output} -i LR -o OUT`")
