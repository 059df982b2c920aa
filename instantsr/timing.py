"""Speed and memory of an SR callable, as `instantsr bench` measures them: the settings (LR size x batch, or LR
size tiled), seconds per image over timed runs with the device synchronised around each, the peak memory of a
setting (CUDA: `max_memory_allocated`; CPU: the rise of the peak RSS over the RSS before, the kernel's high-water
mark reset through /proc/self/clear_refs) and network passes per image, counted by a forward hook; and the
conditions of a run (device, dtype, threads, versions, CPU and GPU names)."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Protocol, Sequence

import torch
from torch import nn

from .pipeline import is_out_of_memory

__all__ = ["PeakMemory", "Setting", "Timed", "available_mib", "conditions", "count_passes", "out_of_memory",
           "speed_settings", "time_setting"]


class Timed(Protocol):
    """What is measured (a bench `Candidate`): `run(lq, tile, overlap, batch)` maps an LR batch on the device to SR;
    `network` is the module whose forward calls are network passes (None: no network)."""

    run: Callable[[torch.Tensor, int | None, int, int], torch.Tensor]
    network: nn.Module | None


@dataclass(frozen=True)
class Setting:
    size: int  # LR side
    batch: int  # images per call (1 when tiled)
    tile: int | None = None  # LR pixels

    @property
    def key(self) -> str:
        return f"{self.size}_tile{self.tile}" if self.tile else f"{self.size}_b{self.batch}"

    def label(self, scale: int = 4) -> str:
        tail = f"tile {self.tile}" if self.tile else f"b{self.batch}"
        return f"{self.size}→{self.size * scale} {tail}"


def speed_settings(sizes: Sequence[int], batches: Sequence[int], tiles: int | Sequence[int] | None,
                   untiled: bool = False) -> list[Setting]:
    """Sizes above a tile run tiled at each such tile (one image, tiles batched), and with `untiled` also whole
    (one image); sizes above no tile at every batch size."""
    tiles = sorted(t for t in ((tiles,) if isinstance(tiles, int) else tiles or ()) if t)
    out = []
    for size in sizes:
        smaller = [t for t in tiles if size > t]
        out.extend(Setting(size, 1, t) for t in smaller)
        if not smaller:
            out.extend(Setting(size, b) for b in batches)
        elif untiled:
            out.append(Setting(size, 1))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_kib() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return None


def _max_rss_kib() -> int:
    """Peak RSS of this process, KiB: VmHWM, this address space's own high-water mark (reset by
    /proc/self/clear_refs); else ru_maxrss, which on Linux starts at the RSS of the process that exec'd this one
    (a child of a big test run reads no rise at all)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r  # bytes on macOS, KiB on Linux


class PeakMemory:
    """Peak memory of a block, MiB: CUDA peak allocated; CPU rise of the peak RSS over the RSS at entry."""

    def __init__(self, device: torch.device):
        self.device, self.mib = device, float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:  # "5" resets the kernel's peak RSS (VmHWM) of this process (Linux >= 4.0)
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
            self.base = _rss_kib()
            if self.base is None:
                self.base = _max_rss_kib()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.mib = max(0, _max_rss_kib() - self.base) / 1024
        return False


def time_setting(cand: Timed, setting: Setting, device: torch.device, repeats: int, warmup: int,
                 overlap: int, tile_batch: int, seed: int = 0, budget_s: float | None = None) -> dict:
    """Seconds per image (median, min, max, quartiles) and peak memory; halves the batch until it fits.

    After the warm-up, `repeats` timed runs, fewer when the next one would take the timed runs past
    `budget_s` seconds (at least one)."""
    batch = setting.batch
    while True:
        lq = torch.rand(batch, 3, setting.size, setting.size, generator=torch.Generator().manual_seed(seed))
        lq = lq.to(device)
        per_call = tile_batch if setting.tile else batch
        try:
            times, spent = [], 0.0
            with PeakMemory(device) as mem:
                for i in range(warmup + repeats):
                    if times and budget_s is not None and spent + spent / len(times) > budget_s:
                        break
                    _sync(device)
                    t0 = time.perf_counter()
                    cand.run(lq, setting.tile, overlap, per_call)
                    _sync(device)
                    if i >= warmup:
                        dt = time.perf_counter() - t0
                        spent += dt
                        times.append(dt / batch)
            break
        except (RuntimeError, MemoryError) as e:
            if not is_out_of_memory(e):
                raise
            if batch == 1:  # recorded, not fatal: the other settings and models still get measured
                return out_of_memory(str(e).strip().splitlines()[0] if str(e).strip() else "out of memory")
            del lq
            if device.type == "cuda":
                torch.cuda.empty_cache()
            batch //= 2
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "q1": q[0], "q3": q[2],
            "runs": len(times), "mem_mib": mem.mib, "batch": batch}


def out_of_memory(reason: str) -> dict:
    """The result of a setting that did not fit in memory (even one image)."""
    return {"median": None, "min": None, "max": None, "q1": None, "q3": None, "runs": 0, "mem_mib": None,
            "batch": 1, "oom": reason}


def available_mib() -> float | None:
    """Memory the kernel says can be had without swapping (MemAvailable), MiB; None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def count_passes(cand: Timed, device: torch.device, size: int) -> int:
    """Network forward calls for one untiled image (0 when there is no network)."""
    if cand.network is None:
        return 0
    calls = [0]
    handle = cand.network.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        cand.run(torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device), None, 0, 1)
    finally:
        handle.remove()
    return calls[0]


# ---- conditions -------------------------------------------------------------------------------------------
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def conditions(device: torch.device, dtype: torch.dtype) -> dict:
    from . import __version__

    cuda = device.type == "cuda"
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda if cuda else None,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "instantsr_version": __version__,
        "memory": ("peak torch.cuda.max_memory_allocated, weights included" if cuda else
                   "rise of the peak RSS (ru_maxrss, reset per setting) over the RSS before the setting"),
    }
