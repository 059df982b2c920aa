"""SinSR (Wang et al., CVPR 2024): distil the deterministic ResShift sampler into one step.

The student f starts as a copy of the teacher. For x_T = y + kappa sqrt(eta_T) eps and the teacher's
deterministic 15-step output F(x_T, y) (no grad):
    L_distill  = MSE(f(x_T, y, T-1), F(x_T, y))                 restore in one step
    L_inverse  = MSE(f(F(x_T, y), y, 0), x_T)                   the student also learns the inverse map
    L_gt       = MSE(f(sg(f(x0, y, 0)), y, T-1), x0)            ... which lets ground truth supervise it
with equal weights. Index T-1 means "restore", index 0 means "invert" (SinSR §4.2-4.3).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..diffusion.resshift import ResShiftDenoiser, prior_sample, sample_deterministic, scale_input
from ..model import SRModel, encode_condition


@dataclass
class SinSRConfig:
    teacher: str = ""  # teacher model folder (RUN/model of `instantsr train resshift`)
    teacher_steps: int = 15  # deterministic teacher steps that the student learns to match
    distill: bool = True  # L_distill
    inverse: bool = True  # L_inverse
    gt: bool = True  # L_gt


class SinSRRecipe:
    """Trains a one-step student from a frozen ResShift teacher."""

    ema_network = "student"

    def __init__(self, config: SinSRConfig, teacher: SRModel | None = None):
        if not (config.distill or config.inverse or config.gt):
            raise ValueError("SinSR: enable at least one of distill, inverse, gt")
        self.method_config = config
        self.teacher = teacher or SRModel.from_pretrained(config.teacher)
        self.teacher.requires_grad_(False).eval()
        self.schedule, self.scale = self.teacher.schedule, self.teacher.scale
        self.student = copy.deepcopy(self.teacher.backbone).requires_grad_(True).train()
        self._train_student = self.student

    def networks(self) -> dict:
        return {"student": self.student}

    def bind(self, wrapped: dict) -> None:
        self._train_student = wrapped["student"]

    def training_step(self, hr: torch.Tensor, lr: torch.Tensor, ctx) -> dict:
        teacher, T = self.teacher.to(hr.device), self.schedule.T
        with torch.no_grad():
            x0 = teacher.codec.encode(hr * 2 - 1)
            cond = encode_condition(teacher.codec, lr, self.scale)
            y = cond.y
            eps = torch.randn(y.shape, generator=ctx.generator, device=y.device, dtype=y.dtype)
            x_T = prior_sample(y, eps, self.schedule)
            # The teacher's whole trajectory in one batched no-grad call; 15 passes, no student graph.
            x0_teacher = sample_deterministic(teacher.denoiser, x_T, self.schedule, cond,
                                              steps=self.method_config.teacher_steps)
        student = ResShiftDenoiser(self._train_student, self.schedule, self.teacher.sigma_data)
        restore = torch.full((y.shape[0],), T - 1, dtype=torch.long, device=y.device)
        invert = torch.zeros_like(restore)
        cfg, losses = self.method_config, {}
        if cfg.distill:
            losses["distill"] = F.mse_loss(student(x_T, restore, cond), x0_teacher)
        if cfg.inverse:
            losses["inverse"] = F.mse_loss(self.invert(x0_teacher, invert, cond), x_T)
        if cfg.gt:
            with torch.no_grad():
                x_T_gt = self.invert(x0, invert, cond)
            losses["gt"] = F.mse_loss(student(x_T_gt, restore, cond), x0)
        loss = sum(losses.values())
        ctx.update("student", loss)
        return {"loss": loss.detach(), **{k: v.detach() for k, v in losses.items()}}

    def invert(self, x0: torch.Tensor, index: torch.Tensor, cond) -> torch.Tensor:
        """The student at index 0: x0 -> x_T (SinSR's inverse map)."""
        if self.teacher.sigma_data is None:  # the paper: the same x0-predicting output, read as x_T
            return ResShiftDenoiser(self._train_student, self.schedule)(x0, index, cond)
        # With residual preconditioning the output at index 0 is pinned near x_t (c_skip ~ 1), so the inverse
        # map is read from the raw backbone instead, as x_T = y + kappa sqrt(eta_T) * net: the net predicts
        # the prior's noise. (Our deviation, needed by the preconditioning; see ResShiftDenoiser.)
        lq, y = cond
        raw = self._train_student(scale_input(x0, index, self.schedule), index, lq)
        return y + self.schedule.kappa * float(self.schedule.sqrt_etas[-1]) * raw

    def sr_model(self, backbone=None) -> SRModel:
        return SRModel(backbone or self.student, self.teacher.codec, self.schedule, scale=self.scale,
                       method="sinsr", steps=1, max_steps=1, sampler="deterministic",
                       sigma_data=self.teacher.sigma_data, lr_multiple=self.teacher.lr_multiple)
