"""`instantsr train METHOD`: the one training loop, for every recipe of `instantsr.methods`."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub, name: str, help: str):
    from ..methods import METHODS  # the table only: each recipe's module is imported when it is trained

    t = sub.add_parser(name, help=help,
                       description="Train with the one instantsr loop; re-running the same command resumes. "
                                   "Methods: " + "; ".join(f"{k}: {m.help}" for k, m in METHODS.items()))
    t.add_argument("method", choices=list(METHODS), help="what to train")
    t.add_argument("--teacher", help="teacher run folder (for " + ", ".join(k for k, m in METHODS.items()
                                                                             if m.teacher) + "; for yonos at "
                   "twice its scale: scale distillation)")
    t.add_argument("--model", help="the model to fine-tune (for yonos-decoder): a run or model folder")
    t.add_argument("--prior", help="the diffusion prior (for dfosd): a VP model or run folder of `train yonos`, or "
                                   "a local diffusers Stable Diffusion folder (unet/, vae/)")
    t.add_argument("--data", help="folder of HR training images (searched recursively)")
    t.add_argument("-s", "--scale", type=int, choices=[2, 4, 8], help="upscaling factor of the model to train")
    t.add_argument("--out", required=True, help="run folder (config, checkpoints, exported model)")
    t.add_argument("--config", help="TOML/JSON config with [train] and [<method>] sections")
    t.add_argument("--steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"])
    t.add_argument("--seed", type=int)
    t.add_argument("--num-workers", type=int)
    t.add_argument("--checkpoint-every", type=int)
    t.add_argument("--validate-every", type=int)
    t.add_argument("--time-limit", type=float, metavar="MIN",
                   help="stop after this many minutes of training (checkpoint + export); re-run to go on")
    t.add_argument("--val-lr", help="paired validation LR folder")
    t.add_argument("--val-hr", help="paired validation HR folder (alone for autoencoder: reconstructions)")
    t.add_argument("--no-resume", action="store_true", help="start afresh even if the run folder has checkpoints")
    t.add_argument("--set", action="append", default=[], metavar="[train.]KEY=VALUE",
                   help="override one field of the method's config (train.KEY: of [train]); VALUE in TOML syntax, "
                        "e.g. --set discriminator=none --set perceptual_weight=0.5; repeatable")
    return t


def apply_overrides(items: list[str], train_cfg, method_cfg, method: str):
    """`--set [train.]KEY=VALUE` applied to the [train] or the method's config dataclass; VALUE is read as a TOML
    value (numbers, booleans, quoted strings, arrays) and taken as a plain string when it is not one."""
    import tomllib
    from dataclasses import fields, replace

    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item}: give KEY=VALUE")
        target = "train" if key.startswith("train.") else method
        key = key.removeprefix("train.")
        cfg = train_cfg if target == "train" else method_cfg
        names = {f.name for f in fields(cfg)}
        if key not in names:
            raise ValueError(f"--set {item}: [{target}] has no field {key!r} (it has {', '.join(sorted(names))})")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        value = tuple(value) if isinstance(value, list) else value
        if target == "train":
            train_cfg = replace(train_cfg, **{key: value})
        else:
            method_cfg = replace(method_cfg, **{key: value})  # __post_init__ checks the value
    return train_cfg, method_cfg


def run(args) -> None:
    from dataclasses import replace

    from ..methods import METHODS, build_recipe
    from ..train import TrainConfig, Trainer, load_run_config

    cls = METHODS[args.method].load()[0]
    run_dir = Path(args.out)
    config_file = args.config or (run_dir / "config.toml" if (run_dir / "config.toml").is_file() else None)
    train_cfg, method_cfg = load_run_config(config_file, args.method, cls) if config_file else (TrainConfig(), cls())
    overrides = {k: v for k, v in {
        "data": args.data, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
        "mixed_precision": args.mixed_precision, "seed": args.seed, "val_lr": args.val_lr,
        "val_hr": args.val_hr, "num_workers": args.num_workers, "checkpoint_every": args.checkpoint_every,
        "validate_every": args.validate_every, "time_limit_min": args.time_limit}.items() if v is not None}
    train_cfg = replace(train_cfg, **overrides)
    for flag, field in (("teacher", "teacher"), ("model", "model"), ("prior", "prior")):
        if getattr(args, flag):
            if not hasattr(method_cfg, field):
                raise ValueError(f"--{flag}: {args.method} takes none")
            method_cfg = replace(method_cfg, **{field: getattr(args, flag)})  # a model or run folder
    if args.scale is not None:  # the model's factor (the method's scale) and the data's (the training LR)
        if not hasattr(method_cfg, "scale"):
            raise ValueError(f"--scale: {args.method} has no scale of its own")
        method_cfg, train_cfg = replace(method_cfg, scale=args.scale), replace(train_cfg, scale=args.scale)
    train_cfg, method_cfg = apply_overrides(args.set, train_cfg, method_cfg, args.method)
    if not train_cfg.data:
        raise SystemExit("instantsr train: give --data HR_DIR (or `data` in the config's [train] section)")
    recipe = build_recipe(args.method, method_cfg, seed=train_cfg.seed)  # initial weights from the seed too
    Trainer(recipe, train_cfg, run_dir, args.method).run(resume=not args.no_resume)
    print(f"model exported to {run_dir / 'model'}")
