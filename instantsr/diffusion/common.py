"""Helpers shared by the diffusion families: gathering a per-timestep table for a batch."""

from __future__ import annotations

import torch


def gather(table: torch.Tensor, t_index, like: torch.Tensor) -> torch.Tensor:
    """table[t_index], cast to like's dtype/device and shaped (N, 1, 1, ...) to broadcast."""
    # Tables are computed in float64 and cast before the gather: no host sync for CUDA indices,
    # and devices without float64 (MPS) work.
    t_index = torch.as_tensor(t_index, device=like.device, dtype=torch.long).reshape(-1)
    value = table.to(device=like.device, dtype=like.dtype)[t_index]
    return value.reshape(-1, *([1] * (like.ndim - 1)))


def full_index(i: int, like: torch.Tensor) -> torch.Tensor:
    """The index i for every sample of the batch `like`."""
    return torch.full((like.shape[0],), i, dtype=torch.long, device=like.device)


def check_start_and_timesteps(schedule, min_T: int) -> None:
    """Validate `start` and normalise `timesteps` of a frozen schedule dataclass with those fields and a
    `max_steps`: the kept indices, ascending and unique, within [0, start] (all of them when None)."""
    T, start = schedule.T, schedule.start
    if T < min_T or (start is not None and not 0 <= start <= T - 1):
        raise ValueError(f"need T >= {min_T} and start in [0, T-1], got T={T}, start={start}")
    top = schedule.max_steps - 1
    kept = tuple(range(top + 1)) if schedule.timesteps is None else tuple(int(i) for i in schedule.timesteps)
    if not kept or list(kept) != sorted(set(kept)) or kept[0] < 0 or kept[-1] > top:
        raise ValueError(f"timesteps must be ascending unique indices in [0, {top}], got {kept}")
    object.__setattr__(schedule, "timesteps", kept)  # normalised so that respaced(max_steps) == full
