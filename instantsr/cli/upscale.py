"""`instantsr upscale`: image files or folders through a model folder (or an exported ONNX graph); several
processes under torchrun / accelerate launch share the files."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

from .common import Spinner, add_device_options, check_device, check_writable


def add_parser(sub, name: str, help: str):
    u = sub.add_parser(name, help=help,
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
    u.add_argument("--tile", type=int, help="tile size in LR pixels for large images (default: no tiling; the "
                   "converted official models chop big images as their code does, 512 px every 448). Our UNets run "
                   "layer by layer in tiles, exactly as untiled (no seams); other networks run whole on overlapping "
                   "tiles, blended, and on out-of-memory again in tiles of half the size. 0: the whole image at "
                   "once. Not with --onnx")
    u.add_argument("--tile-overlap", type=int, default=32,
                   help="overlap in LR pixels of blended tiles (other networks, latent codecs; a tile no larger "
                        "than it grows to twice it)")
    u.add_argument("--batch-size", type=int, default=4, help="blended tiles per network pass")
    u.add_argument("--color-fix", default="none", choices=["none", "wavelet", "adain"],
                   help="match the colours of the bicubic-upscaled input")
    u.add_argument("--suffix", default="", help="appended to each output file name")
    u.add_argument("--ext", default="auto", choices=["auto", "png", "jpg", "webp"],
                   help="output format; auto keeps png/jpg/webp/bmp, png otherwise")
    u.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    add_device_options(u)
    return u


def output_file(args, src: Path) -> Path | None:
    """-o as the output FILE (its suffix an image one, and no such folder): allowed for one input file only."""
    from ..io import IMAGE_SUFFIXES, PIL_FORMATS

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


def check_counts(args) -> None:
    """--tile and --steps that no model takes: one line before anything loads (0 tiles: no tiling)."""
    if args.tile is not None and args.tile < 0:
        raise ValueError(f"--tile {args.tile}: give a tile size in LR pixels, or 0 for no tiling")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps {args.steps}: give 1 or more (default: the model's own)")


def check_model_options(upscaler, args) -> None:
    """--steps and --sampler against the loaded model: once, before the first image (not once per image)."""
    model = getattr(upscaler, "model", None)  # an ONNX graph has them fixed; check_onnx_options refused them
    if model is not None:
        model.check_steps(args.steps)
        model.check_sampler(args.sampler)


def run(args) -> None:
    src = Path(args.input)
    if not src.exists():  # before the heavy imports: a typo is told at once
        raise FileNotFoundError(f"{src}: no such file or folder")
    check_counts(args)
    if args.onnx:
        check_onnx_options(args)
    tile = args.tile  # None: the model's way (whole, or the official models' chops); 0: whole, no chops
    # On a terminal, one process: a spinner while the imports and the model load (seconds), and while a single
    # untiled image runs (the pipeline's bar counts images, or the tiles of one tiled image), and at the end
    # where each output went. In a log the pipeline writes one line per image itself.
    terminal = sys.stderr.isatty() and launched_world_size() == 1
    with Spinner("loading the model") if terminal else nullcontext():
        upscaler, inputs, targets, state = _prepare(args, src)
    from ..io import image_size
    from ..pipeline import upscale_paths

    pairs = list(zip(inputs, targets))
    before = {dst: _signature(dst) for _, dst in pairs} if terminal else {}
    single = terminal and len(inputs) == 1 and (args.overwrite or before[targets[0]] is None) and not (
        tile and max(image_size(inputs[0]) or (0, 0)) > tile)
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    if single:
        upscaler = _Spinning(upscaler, f"{inputs[0].name}: upscaling")
    counts = upscale_paths(upscaler, inputs, args.output, targets=targets, overwrite=args.overwrite, rank=rank,
                           world_size=world, progress=state is None or state.is_local_main_process,
                           steps=args.steps, seed=args.seed, tile=tile, tile_overlap=args.tile_overlap,
                           color_fix=args.color_fix, batch_size=args.batch_size, sampler=args.sampler)
    if terminal:
        for src_file, dst in pairs:
            if dst.exists() and _signature(dst) != before[dst]:
                print(f"{src_file} -> {dst}", file=sys.stderr)
    failed = counts.failed
    if state is not None:
        import torch
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


def _prepare(args, src: Path):
    """The inputs, their output paths and the loaded upscaler (and the process group when launched as several
    processes); everything that would stop the run is checked before the model loads, and what depends on
    the model right after it loads: before the first image."""
    import torch

    from ..io import IMAGE_SUFFIXES, list_images
    from ..pipeline import Upscaler, default_device, default_dtype, output_path

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
        device = default_device(args.device)
    elif args.device is None or (args.device == "cuda" and state.device.type == "cuda"):
        device = str(state.device)  # this process's own GPU (cuda:LOCAL_RANK), or cpu
    else:
        device = args.device
    if args.onnx:  # the graph's own precision; a device only when asked for (else CUDA where onnxruntime has it)
        from ..onnx_export import OnnxUpscaler

        upscaler = OnnxUpscaler(args.onnx, device=args.device if state is None else device)
    else:
        upscaler = Upscaler.from_pretrained(args.model, device=device, dtype=default_dtype(device, args.dtype))
    if args.scale is not None and args.scale != upscaler.scale:
        raise ValueError(f"model {upscaler.name} upscales x{upscaler.scale}; -s {args.scale} is not supported by it")
    check_model_options(upscaler, args)
    return upscaler, [Path(p) for p in inputs], [Path(t) for t in targets], state


class _Spinning:
    """An upscaler with a spinner on the terminal while it computes: one untiled image has no bar to show."""

    def __init__(self, upscaler, label: str):
        self._upscaler, self._label = upscaler, label

    def __getattr__(self, name: str):
        return getattr(self._upscaler, name)

    def upscale_loaded(self, images, **options):
        with Spinner(self._label):
            return self._upscaler.upscale_loaded(images, **options)


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What tells a file written anew (outputs are replaced atomically: a new inode) from the one before."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


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
