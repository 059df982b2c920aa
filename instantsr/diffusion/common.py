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
