"""The one training loop of instantsr, for every method.

A method ("recipe", see `instantsr/methods/`) owns its networks and losses; this loop owns everything else:
accelerate (CPU, one GPU, many GPUs via `accelerate launch`/`torchrun`; bf16/fp16), data, EMA, gradient
accumulation, checkpoints (safetensors + JSON, no pickles), resume, progress bar, validation with a
comparison strip.

A recipe provides:
    networks() -> dict[str, nn.Module]     the trainable networks; each gets an AdamW optimizer
    ema_network: str                       the network whose EMA is exported and validated
    training_step(hr, lr, ctx) -> dict     losses of one step; calls ctx.update(name, loss) for each update
    sr_model() -> SRModel                  the inference model built on the current (EMA) weights
    method_config                          a dataclass, saved with the run

and, for a recipe that is not an SR model (the autoencoder), optionally:
    inference_model(net) -> ModelMixin     replaces sr_model: exported to RUN/model by save_pretrained
    validate(model, config, lpips, device) -> (rows, strips, labels)
                                           replaces the LR -> SR validation; runs when config.val_hr is set
    uses_lr = False                        the LR half of each batch is unused: made by the cheapest preset
    lr_scales = (2, 4)                     hand training_step {scale: LR} of each HR crop instead of one LR

Reproducible: data order, crops, degradations and every training draw come from TrainConfig.seed; build the recipe
with `methods.build_recipe(method, config, seed=train.seed)` (as `instantsr train` does; or inside
`seeded_init(seed)`) for initial weights from it too. Two such runs agree bitwise on the CPU; on a GPU some
backward kernels are not deterministic.

Run folder:
    RUN/config.toml            [train] and [method]: everything needed to reproduce the run
    RUN/checkpoints/step_N/    <net>.safetensors, ema.safetensors, optim_<net>.safetensors, state.json
    RUN/model/                 the exported inference model (EMA weights), loadable by SRModel/Upscaler
    RUN/log.csv, RUN/val.csv, RUN/val/step_N.png
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import read_config, write_config


@dataclass
class TrainConfig:
    data: str = ""  # HR image folder (searched recursively)
    steps: int = 10000  # optimizer steps (each of grad_accum micro-batches)
    batch_size: int = 16  # per process, per micro-batch
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_accum: int = 1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    mixed_precision: str = "no"  # no | fp16 | bf16
    seed: int = 0
    crop: int = 256  # HR crop size
    scale: int = 4
    degradation: str = "realesrgan"  # realesrgan | bicubic | avgpool
    clean_fraction: float = 0.0  # share of each batch degraded by plain bicubic instead: real cameras (RealSR)
    #                              are milder than Real-ESRGAN's pipeline, and a model that never saw mild LR
    #                              over-restores it at many steps (our deviation; 0 = ResShift)
    hr_scales: tuple[float, ...] = (1.0,)  # multi-scale HR as Real-ESRGAN's (1, 0.75, 0.5, 1/3): each crop from
    #                                       the image downscaled by one of them (data.HRCropDataset)
    num_workers: int = 2
    cache_images: bool = False  # keep decoded training images in memory
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    validate_every: int = 1000
    val_lr: str = ""  # paired validation folders (LR, HR); empty = no validation
    val_hr: str = ""
    val_images: int = 8
    val_steps: int = 0  # sampling steps for validation; 0 = the model's default
    cpu: bool = False  # train on the CPU even when a GPU is present
    time_limit_min: float = 0.0  # stop (checkpoint + export) after this many minutes of training; 0 = no limit


class StepContext:
    """Handed to a recipe's training_step: `update(name, loss)` backpropagates and steps one network."""

    def __init__(self, accelerator, optimizers: dict, schedulers: dict, grad_clip: float, step: int,
                 generator: torch.Generator):
        self.accelerator, self.optimizers, self.schedulers = accelerator, optimizers, schedulers
        self.grad_clip, self.step, self.generator = grad_clip, step, generator

    def update(self, name: str, loss: torch.Tensor) -> None:
        opt = self.optimizers[name]
        self.accelerator.backward(loss)
        if self.accelerator.sync_gradients and self.grad_clip > 0:
            params = [p for g in opt.param_groups for p in g["params"]]
            self.accelerator.clip_grad_norm_(params, self.grad_clip)
        opt.step()
        self.schedulers[name].step()
        opt.zero_grad(set_to_none=True)


# ---- checkpoints: safetensors for tensors, JSON for the rest -------------------------------------------
def _save_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    state = opt.state_dict()
    tensors, scalars = {}, {"param_groups": state["param_groups"], "state": {}}
    for idx, s in state["state"].items():
        for k, v in s.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.contiguous()
            else:
                scalars["state"].setdefault(str(idx), {})[k] = v
    save_file(tensors, str(path.with_suffix(".safetensors")))
    path.with_suffix(".json").write_text(json.dumps(scalars))


def _load_optimizer(opt: torch.optim.Optimizer, path: Path, device) -> None:
    tensors = load_file(str(path.with_suffix(".safetensors")), device=str(device))
    scalars = json.loads(path.with_suffix(".json").read_text())
    state: dict = {}
    for key, v in tensors.items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    for idx, s in scalars["state"].items():
        state.setdefault(int(idx), {}).update(s)
    opt.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})


def trainable_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint holds of a network: its trainable parameters and its buffers. Frozen weights (a LoRA
    run's base UNet, a fixed codec) are rebuilt by the recipe on resume, not written at every checkpoint."""
    trainable = {k for k, p in net.named_parameters() if p.requires_grad}
    buffers = {k for k, _ in net.named_buffers()}
    return {k: v.detach().contiguous() for k, v in net.state_dict().items() if k in trainable | buffers}


def load_trainable_state(net: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load a `trainable_state` back; the checkpoint must hold every trainable parameter and nothing unknown."""
    trainable = {k for k, p in net.named_parameters() if p.requires_grad}
    own = set(net.state_dict())
    missing, unknown = sorted(trainable - set(state)), sorted(set(state) - own)
    if missing or unknown:
        raise ValueError(f"{source}: does not fit this run's {type(net).__name__} (missing {missing[:3]}, unknown "
                         f"{unknown[:3]}); start afresh with --no-resume or another --out")
    net.load_state_dict(state, strict=False)


def merge_lora(net: nn.Module) -> nn.Module:
    """Fold peft LoRA adapters into their base layers and drop the adapters (export: a plain network, no peft)."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # no peft installed: no network can hold adapters
        return net
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BaseTunerLayer):
                child.merge()
                setattr(parent, name, child.get_base_layer())
    return net


def last_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    ckpts = [c for c in ckpts if (c / "state.json").is_file()]  # a checkpoint is complete once state.json is
    return ckpts[-1] if ckpts else None


class EMA:
    """Exponential moving average of a network's parameters (kept in float32)."""

    def __init__(self, net: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: p.detach().float().clone() for k, p in net.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        # Warm-up as in diffusers' EMAModel: short runs are not dominated by the initial weights.
        decay = min(self.decay, (1 + step) / (10 + step))
        for k, p in net.named_parameters():
            if k in self.shadow:
                self.shadow[k].lerp_(p.detach().float(), 1 - decay)

    def copy_to(self, net: nn.Module) -> None:
        with torch.no_grad():
            for k, p in net.named_parameters():
                if k in self.shadow:
                    p.copy_(self.shadow[k].to(p.dtype))


# ---- the loop ----------------------------------------------------------------------------------------------
class Trainer:
    def __init__(self, recipe, config: TrainConfig, run_dir: str | Path, method: str):
        self.recipe, self.config, self.run_dir, self.method = recipe, config, Path(run_dir), method

    def run(self, resume: bool = True, max_steps: int | None = None) -> dict:
        """Train until config.steps (or `max_steps` more steps, for tests); returns the last logs."""
        from accelerate import Accelerator
        from accelerate.utils import set_seed
        from tqdm.auto import tqdm

        from .data import HRCropDataset, StepSampler, degrade_collate, degrade_pairs

        cfg = self.config
        # cpu=True where there is no GPU: accelerate only sets up multi-process (gloo) CPU training when asked to.
        acc = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.mixed_precision,
                          cpu=cfg.cpu or not torch.cuda.is_available())
        device, main = acc.device, acc.is_main_process
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if main:
            write_config(self.run_dir / "config.toml", {"method": self.method, "train": asdict(cfg),
                                                        self.method: asdict(self.recipe.method_config)})

        nets = self.recipe.networks()
        for net in nets.values():
            net.to(device).train()
        lr_scales = getattr(self.recipe, "learning_rate_scales", dict)()  # e.g. RSD's fake model
        optimizers = {n: torch.optim.AdamW([p for p in net.parameters() if p.requires_grad],
                                           lr=cfg.lr * lr_scales.get(n, 1.0), weight_decay=cfg.weight_decay)
                      for n, net in nets.items()}
        warm = max(1, cfg.warmup_steps)
        schedulers = {n: torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / warm))
                      for n, o in optimizers.items()}
        ema_name = self.recipe.ema_network
        ema = EMA(nets[ema_name], cfg.ema_decay)

        step = 0
        ckpt = last_checkpoint(self.run_dir) if resume else None
        if ckpt is not None:
            step = self._load_checkpoint(ckpt, nets, optimizers, schedulers, ema, device)
            acc.print(f"resuming from {ckpt} (step {step})")

        names = list(nets)
        prepared = acc.prepare(*[nets[n] for n in names], *[optimizers[n] for n in names])
        wrapped = dict(zip(names, prepared[: len(names)]))
        optimizers = dict(zip(names, prepared[len(names):]))
        self.recipe.bind(wrapped)  # the recipe uses the (possibly DDP-wrapped) networks for training

        dataset = HRCropDataset(cfg.data, crop=cfg.crop, cache=cfg.cache_images, scales=cfg.hr_scales)
        micro = cfg.batch_size
        sampler = StepSampler(len(dataset), micro, seed=cfg.seed, start_step=step * cfg.grad_accum,
                              rank=acc.process_index)
        preset = cfg.degradation if getattr(self.recipe, "uses_lr", True) else "avgpool"
        # a recipe may ask for LR at several scales of each HR crop (YONOS: s/2 and s); lr is then {scale: LR}
        lr_scales = tuple(getattr(self.recipe, "lr_scales", ()) or ()) or cfg.scale
        crop_multiple = math.lcm(*lr_scales) if isinstance(lr_scales, tuple) else cfg.scale
        collate = partial(degrade_collate, scale=crop_multiple, preset=preset)
        loader = torch.utils.data.DataLoader(dataset, batch_size=micro, sampler=sampler, collate_fn=collate,
                                             num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                                             persistent_workers=cfg.num_workers > 0)
        batches = iter(loader)

        end = cfg.steps if max_steps is None else min(cfg.steps, step + max_steps)
        validates = bool(cfg.val_hr if hasattr(self.recipe, "validate") else cfg.val_lr and cfg.val_hr)
        bar = tqdm(total=end, initial=step, disable=not main, desc=f"train {self.method}", dynamic_ncols=True)
        logs: dict = {}
        log_file = self.run_dir / "log.csv"
        t0, done_since, started = time.time(), 0, time.time()
        try:
            while step < end:
                if cfg.time_limit_min and time.time() - started > cfg.time_limit_min * 60:
                    acc.print(f"time limit of {cfg.time_limit_min} min reached at step {step}")
                    end = step
                    self._save_checkpoint(acc, step, nets, optimizers, schedulers, ema)
                    break
                for micro_step in range(cfg.grad_accum):
                    hr, lr = degrade_pairs(next(batches), device, lr_scales, preset, cfg.clean_fraction)
                    gen = torch.Generator(device).manual_seed(seed_of(cfg.seed, step, acc.process_index, micro_step))
                    # Draws that take no generator (dropout of an official net) follow the seed as well, per step:
                    # a resumed run repeats them. A stream apart from `gen`'s, so the two are not correlated.
                    set_seed(seed_of(cfg.seed, step, acc.process_index, micro_step, GLOBAL_STREAM) % 2**32)
                    ctx = StepContext(acc, optimizers, schedulers, cfg.grad_clip, step, gen)
                    with acc.accumulate(*wrapped.values()), acc.autocast():
                        logs = self.recipe.training_step(hr, lr, ctx)
                step += 1
                done_since += 1
                ema.update(acc.unwrap_model(wrapped[ema_name]), step)
                if main and (step % cfg.log_every == 0 or step == end):
                    rate = done_since / max(1e-9, time.time() - t0)
                    t0, done_since = time.time(), 0
                    logs = {k: float(v) for k, v in logs.items()}
                    bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()} | {"it/s": f"{rate:.2f}"})
                    _append_csv(log_file, {"step": step, **logs, "lr": schedulers[names[0]].get_last_lr()[0]})
                bar.update(1)
                if step % cfg.checkpoint_every == 0 or step == end:
                    self._save_checkpoint(acc, step, nets, optimizers, schedulers, ema)
                if validates and main and (step % cfg.validate_every == 0 or step == end):
                    self._validate(acc, nets, ema, step)
        except KeyboardInterrupt:
            acc.print(f"\ninterrupted at step {step}: saving a checkpoint; run the same command to resume")
            self._save_checkpoint(acc, step, nets, optimizers, schedulers, ema)
            raise
        finally:
            bar.close()
        acc.wait_for_everyone()
        if main:
            self.export(nets, ema)
        acc.end_training()
        return {"step": step, **{k: float(v) for k, v in logs.items()}}

    # ---- checkpoints ---------------------------------------------------------------------------------
    def _save_checkpoint(self, acc, step, nets, optimizers, schedulers, ema) -> None:
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return
        root = self.run_dir / "checkpoints"
        final, tmp = root / f"step_{step:07d}", root / f".tmp_step_{step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, net in nets.items():
            save_file(trainable_state(acc.unwrap_model(net)), str(tmp / f"{name}.safetensors"))
            _save_optimizer(optimizers[name], tmp / f"optim_{name}")
        save_file(ema.shadow, str(tmp / "ema.safetensors"))
        state = {"step": step, "schedulers": {n: s.state_dict() for n, s in schedulers.items()}}
        (tmp / "state.json").write_text(json.dumps(state))  # written last: marks the checkpoint complete
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        old = sorted(root.glob("step_*"))[: -self.config.keep_checkpoints]
        for o in old:
            shutil.rmtree(o, ignore_errors=True)

    def _load_checkpoint(self, ckpt, nets, optimizers, schedulers, ema, device) -> int:
        for name, net in nets.items():
            load_trainable_state(net, load_file(str(ckpt / f"{name}.safetensors"), device=str(device)),
                                 ckpt / f"{name}.safetensors")
            _load_optimizer(optimizers[name], ckpt / f"optim_{name}", device)
        ema.shadow = load_file(str(ckpt / "ema.safetensors"), device=str(device))
        state = json.loads((ckpt / "state.json").read_text())
        for n, s in schedulers.items():
            s.load_state_dict(state["schedulers"][n])
        return int(state["step"])

    # ---- validation and export --------------------------------------------------------------------------
    def _with_ema(self, nets, ema):
        """The recipe's SR (or inference) model with EMA weights, on a copy (training weights untouched)."""
        import copy

        net = nets[self.recipe.ema_network]
        backup = copy.deepcopy(net.state_dict())
        ema.copy_to(net)
        build = getattr(self.recipe, "inference_model", None) or self.recipe.sr_model
        model = merge_lora(copy.deepcopy(build(net)))  # the copy: training keeps its adapters
        net.load_state_dict(backup)
        return model

    @torch.no_grad()
    def _validate(self, acc, nets, ema, step) -> None:
        from .viz import comparison_strip

        model = self._with_ema(nets, ema).eval()
        validate = getattr(self.recipe, "validate", None) or self._validate_sr
        rows, strips, labels = validate(model, self.config, _maybe_lpips(acc.device), acc.device)
        summary = {"step": step, **{k: float(np.mean([r[k] for r in rows])) for k in rows[0]}}
        _append_csv(self.run_dir / "val.csv", summary)
        comparison_strip(strips, labels, self.run_dir / "val" / f"step_{step:07d}.png")
        acc.print("validation " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if k != "step"))

    @staticmethod
    def _validate_sr(model, cfg, lpips, device):
        """PSNR-Y (and LPIPS) of SR against HR on the paired validation folders; LR | SR | HR strips. SR comes
        from the Upscaler, the path of `instantsr upscale` (padding, seeded noise): the strip is what it writes."""
        from .data import PairedFolder
        from .metrics import psnr
        from .pipeline import Upscaler

        pairs, upscaler = PairedFolder(cfg.val_lr, cfg.val_hr), Upscaler(model)
        rows, strips = [], []
        for i in range(min(cfg.val_images, len(pairs))):
            name, lr, hr = pairs[i]
            lr, hr = lr[None].to(device), hr[None].to(device)
            hr = hr[..., : lr.shape[-2] * model.scale, : lr.shape[-1] * model.scale]
            sr = upscaler.upscale_tensor(lr, steps=cfg.val_steps or None, seed=cfg.seed)
            row = {"psnr_y": float(psnr(sr, hr).mean())}
            if lpips is not None:
                row["lpips"] = float(lpips(sr, hr).mean())
            rows.append(row)
            if i < 4:
                strips.append((lr[0].cpu(), sr[0].cpu(), hr[0].cpu()))
        return rows, strips, ["LR", "SR", "HR"]

    def export(self, nets, ema) -> Path:
        out = self.run_dir / "model"
        model = self._with_ema(nets, ema)
        tmp = self.run_dir / ".tmp_model"
        shutil.rmtree(tmp, ignore_errors=True)
        model.float().save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        return out


def seed_of(*numbers: int) -> int:
    """A 63-bit seed mixed from integers, the same in every process and every run (unlike hash())."""
    return int(np.random.SeedSequence([int(n) for n in numbers]).generate_state(2, np.uint64)[0] >> np.uint64(1))


# Tags of seed streams apart from the per-step seed_of(seed, step, rank, micro_step): no step number reaches them
# (SeedSequence pads short entropy with zeros, so seed_of(seed) alone would equal step 0's seed).
INIT_STREAM, GLOBAL_STREAM = 0x696E6974, 0x676C6F62  # "init", "glob"


@contextmanager
def seeded_init(seed: int):
    """Build networks inside this block for weights that depend only on `seed` (the run's TrainConfig.seed):
    torch's CPU generator, which nn.init draws from, is seeded for the block and the caller's state restored."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed_of(seed, INIT_STREAM))
        yield


def _maybe_lpips(device):
    from .metrics import LPIPS
    from .weights import WeightsNotFoundError

    try:
        return LPIPS("alex").to(device)
    except WeightsNotFoundError:
        warnings.warn("LPIPS weights not fetched: validation reports PSNR only (run `instantsr weights fetch`)",
                      stacklevel=2)
        return None


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def load_run_config(path: str | Path, method: str, method_config_cls) -> tuple[TrainConfig, object]:
    """Read [train] and [<method>] of a TOML/JSON config file into the dataclasses."""
    raw = read_config(path)
    train = dataclass_from_dict(TrainConfig, raw.get("train", {}))
    return train, dataclass_from_dict(method_config_cls, raw.get(method, {}))


def dataclass_from_dict(cls, data: dict):
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})
