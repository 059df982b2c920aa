"""What several commands share: the checks made before any work (one line each, before a model or a metric
network loads), the device options, the list arguments, and how a command's errors become one line."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import threading
from pathlib import Path


# ---- checks before any work -------------------------------------------------------------------------------
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
    first image is computed, not after it.

    The permission bits answer first; then a file is written into the folder (or into the nearest one that
    exists, where the missing ones would be made) and removed again, since some folders refuse what their bits
    allow: /proc and /sys, read-only mounts."""
    folder = Path(os.path.abspath(folder))
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file, not a folder" if existing == folder else f"cannot be created: {existing} is a file"
        raise ValueError(f"{folder}: {where}; give {what} a folder you can write to")
    if not os.access(existing, os.W_OK | os.X_OK) or not _can_write_into(existing):
        where = "is not writable" if existing == folder else f"cannot be created: {existing} is not writable"
        raise ValueError(f"{folder}: {where}; give {what} a folder you can write to")


def _can_write_into(folder: Path) -> bool:
    """Whether a file can be made in `folder` (a hidden one, removed at once; several processes may ask)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".instantsr-write-test-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass
    return True


# ---- options and their types ------------------------------------------------------------------------------
def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--device and the precision flags (--dtype, or --fp32/--fp16/--bf16), as upscaler CLIs spell them."""
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when present)")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="default: fp16 on cuda, fp32 on cpu")
    for name in ("fp32", "fp16", "bf16"):
        precision.add_argument(f"--{name}", dest="dtype", action="store_const", const=name, help=f"--dtype {name}")


def int_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated positive whole numbers."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers, got {text!r}")
    return values


def name_list(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated sampler names, each once."""
    names = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    if not names or not all(n.isidentifier() for n in names):
        raise argparse.ArgumentTypeError(f"expected sampler names such as deterministic,stochastic, got {text!r}")
    return names


def metric_list(text: str) -> list[str]:
    """--metrics as a list of names."""
    return [m.strip() for m in text.split(",") if m.strip()]


# ---- feedback on a terminal ------------------------------------------------------------------------------
class Spinner:
    """One line on a terminal that says what runs and for how long (`/ a.png: upscaling 00:07`), redrawn five
    times a second by a thread of its own while the work holds the worker thread. It is a tqdm bar, so that
    lines written meanwhile with tqdm.write go above it; it clears its line when done.

        with Spinner("loading the model") as spinner:
            ...
            spinner.label = "a.png: upscaling"
    """

    FRAMES = "|/-\\"

    def __init__(self, label: str):
        self.label = label
        self._stop = threading.Event()

    def __enter__(self) -> "Spinner":
        from tqdm.auto import tqdm

        self._bar = tqdm(total=None, desc=f"{self.FRAMES[0]} {self.label}", bar_format="{desc} {elapsed}",
                         file=sys.stderr, leave=False)
        self._thread = threading.Thread(target=self._spin, name="instantsr-spinner", daemon=True)
        self._thread.start()
        return self

    def _spin(self) -> None:
        for i in itertools.count(1):
            if self._stop.wait(0.2):
                return
            self._bar.set_description_str(f"{self.FRAMES[i % len(self.FRAMES)]} {self.label}", refresh=True)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._bar.close()


# ---- running a command ------------------------------------------------------------------------------------
def run_command(args) -> int:
    """Run the parsed command; our errors become one line on stderr and exit code 2."""
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("instantsr: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError, MemoryError) as e:
        # Our errors carry one line that says what went wrong and what to do; no traceback for them.
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, MemoryError) or "memory" in msg.lower():
            from ..pipeline import is_out_of_memory, oom_hint  # torch is loaded by then

            if is_out_of_memory(e):
                msg = f"out of memory ({msg}); {oom_hint(e)}"
        print(f"instantsr: error: {msg}", file=sys.stderr)
        return 2
    return 0
