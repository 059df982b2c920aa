"""The `instantsr` command: one module per command, listed in `COMMANDS`.

Each command module holds `add_parser(sub, name, help)` (its arguments) and `run(args)` (its work), and imports
nothing heavy at module level: torch and the models load inside `run`. Adding a command is one module and one row
of `COMMANDS`. `instantsr --help` reads the table alone; `instantsr COMMAND ...` imports that command's module
only. Shared checks and options live in `instantsr.cli.common`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Command:
    module: str  # instantsr.cli.<module>: add_parser(sub, name, help) and run(args)
    help: str  # its line in `instantsr --help`

    def load(self) -> ModuleType:
        return importlib.import_module(f"{__name__}.{self.module}")


COMMANDS: dict[str, Command] = {
    "eval": Command("eval", "score SR images against HR images (PSNR/SSIM-Y, LPIPS, DISTS, NIQE)"),
    "degrade": Command("degrade", "make LR/HR pairs from HR images"),
    "weights": Command("weights", "fetch or list the pretrained files the metrics need"),
    "train": Command("train", "train a model (resshift teacher, ...)"),
    "convert": Command("convert", "official ResShift / SinSR checkpoints -> an instantsr model folder"),
    "upscale": Command("upscale", "upscale image files with a trained model"),
    "export": Command("export", "write a one-step model as one ONNX graph (onnxruntime, chaiNNer)"),
    "compare": Command("compare", "crops of your photos through bicubic, models and Real-ESRGAN, side by side"),
    "demo": Command("demo", "a local web page to upscale images and compare them with bicubic (Gradio)"),
    "bench": Command("bench", "speed, memory, size and quality of models, with bicubic as the floor"),
}

# Names that lived in the one-module CLI, still importable from here (loaded on first use).
_MOVED = {"apply_overrides": "train", "launched_world_size": "upscale", "output_file": "upscale",
          "check_onnx_options": "upscale", "check_device": "common", "check_writable": "common",
          "add_device_options": "common", "run_command": "common"}


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(f"{__name__}.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with `only`, that command's arguments alone (the others get their help line,
    which is all `instantsr --help` shows, and their modules are not imported)."""
    p = argparse.ArgumentParser(prog="instantsr", description="One-step diffusion image super-resolution.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        if only is None or name == only:
            module = command.load()
            module.add_parser(sub, name, command.help).set_defaults(func=module.run)
        else:
            sub.add_parser(name, help=command.help)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(only=argv[0] if argv else "").parse_args(argv)
    if args.command == "train" or threading.current_thread() is not threading.main_thread():
        from .common import run_command

        return run_command(args)  # training saves a checkpoint on Ctrl-C itself, between steps
    # The work runs in a worker thread so that Ctrl-C is answered within a second at any stage: Python runs
    # signal handlers between bytecodes of the main thread only, and one big torch operation can hold it for
    # minutes. On Ctrl-C the half-written outputs are removed and the process exits at once.
    from .common import run_command

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
        io = sys.modules.get("instantsr.io")  # not imported here: the worker may hold the import lock
        if io is not None and hasattr(io, "remove_pending_writes"):
            io.remove_pending_writes()
        print("\ninstantsr: interrupted", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]
