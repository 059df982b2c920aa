"""The model seam: diffusion families in one table, a VP model end to end, clear errors for bad folders, training
checkpoints of trainable parameters only, LoRA merged on export, LR at several scales."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from instantsr.cli import main
from instantsr.codecs import PixelUnshuffleCodec
from instantsr.data import degrade_pairs
from instantsr.degrade import make_lr
from instantsr.diffusion.family import FAMILIES, Condition
from instantsr.diffusion.resshift import ResShiftSchedule
from instantsr.diffusion.vp import VPSchedule
from instantsr.io import read_image, save_image
from instantsr.methods.yonos import YonosConfig, YonosRecipe
from instantsr.model import ModelFolderError, SRModel
from instantsr.nets.unet import ConditionalUNet
from instantsr.pipeline import Upscaler
from instantsr.train import Trainer, load_trainable_state, merge_lora, trainable_state

from .conftest import smooth_image
from .test_train import losses, tiny_train_config


# ---- the family table -------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_sampler_returns_x0_of_an_exact_denoiser(family):
    fam = FAMILIES[family]
    g = torch.Generator().manual_seed(0)
    x0, y, noise = (torch.randn(2, 4, 6, 6, generator=g, dtype=torch.float64) for _ in range(3))
    schedule = fam.schedule() if family != "vp_lr" else VPSchedule(start=499)
    cond = Condition(torch.zeros(2, 3, 6, 6), y)
    for name, sample in fam.samplers.items():
        for steps in (1, 3):
            x = fam.prior(cond, noise, schedule)
            out = sample(lambda x_t, t, c: x0, x, schedule, cond, steps=steps, generator=g)
            torch.testing.assert_close(out, x0, rtol=0, atol=1e-10, msg=f"{family} {name} {steps}")


def test_priors_of_the_families():
    y, noise = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    cond = Condition(torch.zeros(1, 3, 3, 3), y)
    torch.testing.assert_close(FAMILIES["resshift"].prior(cond, noise, ResShiftSchedule()), y + 2.0 * 0.99 * noise)
    assert torch.equal(FAMILIES["vp"].prior(cond, noise, VPSchedule()), noise)  # x_T ~ N(0, I)
    assert FAMILIES["vp_lr"].prior(cond, noise, VPSchedule(start=300)) is y  # DFOSD: the LR latent itself


def tiny_vp(parameterization="v", steps=1) -> SRModel:
    torch.manual_seed(0)
    return SRModel(ConditionalUNet.from_preset("tiny", latent_channels=48, cond_channels=48), PixelUnshuffleCodec(4),
                   VPSchedule(), family="vp", parameterization=parameterization, method="vp", steps=steps)


def test_the_model_answers_what_pipeline_bench_and_cli_ask():
    vp = tiny_vp()
    assert vp.samplers == ("ddim",) and vp.sampler == "ddim" and vp.max_steps == 1000
    assert vp.num_passes() == 1 and vp.num_passes(16) == 16
    student = SRModel(ConditionalUNet.from_preset("tiny", latent_channels=48), PixelUnshuffleCodec(4),
                      ResShiftSchedule(), method="sinsr", steps=1, max_steps=1)
    assert student.samplers == ("deterministic", "stochastic") and student.num_passes() == 1
    with pytest.raises(ValueError, match="distilled model runs at its own step count"):
        student.num_passes(4)
    with pytest.raises(ValueError, match="not possible"):
        vp.check_steps(1001)
    with pytest.raises(ValueError, match="family 'vp' predicts"):
        SRModel(vp.backbone, vp.codec, VPSchedule(), family="vp", parameterization="x_T")
    with pytest.raises(ValueError, match="takes a VPSchedule"):
        SRModel(vp.backbone, vp.codec, ResShiftSchedule(), family="vp")
    with pytest.raises(ValueError, match="a vp model samples with ddim, not 'stochastic'"):
        Upscaler(vp).upscale_tensor(torch.rand(1, 3, 8, 8), sampler="stochastic")


@pytest.mark.parametrize("parameterization", ["v", "eps", "x0"])
def test_vp_folder_round_trip(tmp_path, parameterization):
    model = tiny_vp(parameterization, steps=4)
    model.save_pretrained(tmp_path / "m")
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["family"] == "vp" and index["parameterization"] == parameterization and index["steps"] == 4
    again = SRModel.from_pretrained(tmp_path / "m")
    lq = torch.rand(1, 3, 12, 16)
    torch.testing.assert_close(Upscaler(again).upscale_tensor(lq, seed=1), Upscaler(model).upscale_tensor(lq, seed=1))
    assert again.schedule == model.schedule and again.num_passes() == 4


def test_a_folder_written_before_the_seam_is_a_resshift_model(tmp_path):
    model = SRModel(ConditionalUNet.from_preset("tiny", latent_channels=48), PixelUnshuffleCodec(4),
                    ResShiftSchedule(), method="rsd", steps=1)
    model.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    for key in ("family", "parameterization", "max_steps", "lr_multiple"):
        del index[key]
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    old = SRModel.from_pretrained(tmp_path)
    assert old.family == "resshift" and old.parameterization == "x0" and old.max_steps == 1  # a student


@pytest.mark.parametrize("change,message", [
    ({"family": "edm"}, "unknown diffusion family 'edm'"),
    ({"backbone": "DiT"}, "unknown backbone 'DiT'"),
    ({"codec": "VQGAN16"}, "unknown codec 'VQGAN16'"),
    ({"schedule": {"T": 15, "kappa": 2.0}}, "'schedule' has fields ['kappa'] that a VPSchedule does not"),
    ({"schedule": {"T": "many"}}, "cannot load the model"),
    ({"steps": None}, "cannot load the model"),
    ({"drop": "steps"}, "missing field 'steps'"),
])
def test_bad_model_folders_are_one_line_naming_the_file(tmp_path, capsys, change, message):
    tiny_vp().save_pretrained(tmp_path / "m")
    index_file = tmp_path / "m" / "model_index.json"
    index = json.loads(index_file.read_text())
    index.pop(change.pop("drop", None), None)
    index.update(change)
    index_file.write_text(json.dumps(index))
    with pytest.raises(ModelFolderError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        SRModel.from_pretrained(tmp_path / "m")
    save_image(torch.rand(3, 8, 8), tmp_path / "lr.png")
    assert main(["upscale", "-i", str(tmp_path / "lr.png"), "-o", str(tmp_path / "out"), "-m",
                 str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "m") in err[0] and "Traceback" not in err[0]


def test_broken_model_index_is_one_line(tmp_path):
    tiny_vp().save_pretrained(tmp_path)
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match=r"model_index.json: broken"):
        SRModel.from_pretrained(tmp_path)


# ---- a VP model end to end: the one loop, the CLI, the bench ----------------------------------------------
@pytest.mark.slow
def test_a_tiny_vp_model_trains_upscales_and_benches(hr_folder, tmp_path):
    run = tmp_path / "run"
    recipe = YonosRecipe(YonosConfig(unet="tiny"))
    Trainer(recipe, tiny_train_config(hr_folder, steps=30, checkpoint_every=30, lr=2e-3), run, "yonos").run()
    trace = losses(run)
    assert len(trace) == 30 and all(math.isfinite(v) for v in trace)
    assert sum(trace[-10:]) / 10 < sum(trace[:5]) / 5  # it learns
    index = json.loads((run / "model" / "model_index.json").read_text())
    assert (index["family"], index["parameterization"], index["sampler"], index["steps"]) == ("vp", "v", "ddim", 1)
    # the same CLI as every model, at its own one step and at 4 DDIM steps
    lr_dir = tmp_path / "lr"
    for i in range(2):
        save_image(smooth_image(12, 16, i), lr_dir / f"im{i}.png")
    for steps in ("1", "4"):
        assert main(["upscale", "-i", str(lr_dir), "-o", str(tmp_path / f"sr{steps}"), "-m", str(run / "model"),
                     "--steps", steps]) == 0
        assert read_image(tmp_path / f"sr{steps}" / "im0.png").rgb.shape == (3, 48, 64)
    # and in the bench, with its step counts and one network pass per step
    hr_dir = tmp_path / "hr"
    for i in range(2):
        save_image(smooth_image(48, 64, i), hr_dir / f"im{i}.png")
    out = tmp_path / "bench"
    assert main(["bench", "-m", f"vp={run}", "--steps", "1,4", "--lr", str(lr_dir), "--hr", str(hr_dir), "-o",
                 str(out), "--sizes", "16", "--batch", "1", "--repeats", "1", "--warmup", "0", "--metrics", "psnr",
                 "--strip-images", "0"]) == 0
    rows = {(r["name"], r["steps"]): r for r in csv.DictReader(open(out / "bench.csv"))}
    assert rows["vp", "1"]["sampler"] == "" and rows["vp", "4"]["sampler"] == "ddim"
    assert float(rows["vp", "1"]["passes_per_img"]) == 1 and float(rows["vp", "4"]["passes_per_img"]) == 4


def test_validation_is_what_upscale_writes(hr_folder, tmp_path):
    """Odd-sized validation images are padded as `upscale` pads them (no crop): the strip is the upscale output."""
    model = tiny_vp(steps=2)
    for i in range(2):
        hr = smooth_image(44, 52, i)
        save_image(hr, tmp_path / "val_hr" / f"v{i}.png")
        save_image(make_lr(hr[None], 4, "bicubic")[0], tmp_path / "val_lr" / f"v{i}.png")
    cfg = tiny_train_config(hr_folder, val_lr=str(tmp_path / "val_lr"), val_hr=str(tmp_path / "val_hr"), seed=3)
    rows, strips, labels = Trainer._validate_sr(model, cfg, None, torch.device("cpu"))
    lr = read_image(tmp_path / "val_lr" / "v1.png").rgb[None]
    assert lr.shape[-2:] == (11, 13) and strips[1][1].shape == (3, 44, 52)  # not a multiple of 4: padded
    torch.testing.assert_close(strips[1][1], Upscaler(model).upscale_tensor(lr, steps=2, seed=3)[0])


# ---- checkpoints, LoRA, several LR scales ------------------------------------------------------------------
def lora_unet():
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    net = ConditionalUNet.from_preset("tiny", latent_channels=48).requires_grad_(False)
    net = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=["conv1", "conv2"]), net)
    with torch.no_grad():  # a LoRA that has moved away from its zero init
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return net


def test_checkpoints_hold_trainable_parameters_only_and_lora_merges_on_export(tmp_path):
    net = lora_unet()
    state = trainable_state(net)
    assert state and all("lora_" in k for k in state)  # the frozen base is not written
    total = sum(v.numel() for v in net.state_dict().values())
    assert sum(v.numel() for v in state.values()) < total / 5
    other = lora_unet()
    with torch.no_grad():
        for name, p in other.named_parameters():
            if "lora_" in name:
                p.zero_()
    load_trainable_state(other, state, tmp_path / "ckpt")
    x, t, lq = torch.randn(1, 48, 8, 8), torch.tensor([3]), torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(other(x, t, lq), net(x, t, lq))
        with pytest.raises(ValueError, match="does not fit"):
            load_trainable_state(other, {"unet.conv_in.weight": torch.zeros(1)}, tmp_path / "ckpt")
        before = net(x, t, lq)
        merged = merge_lora(net)
        assert not any("lora_" in k for k in merged.state_dict())
        torch.testing.assert_close(merged(x, t, lq), before, atol=1e-5, rtol=1e-5)
    merged.save_pretrained(tmp_path / "plain")  # a plain diffusers folder again
    assert ConditionalUNet.from_pretrained(tmp_path / "plain").config.block_out_channels == [16, 32]


def test_the_loop_hands_lr_at_several_scales_of_the_same_hr(hr_folder, tmp_path):
    from instantsr.data import HRCropDataset, degrade_collate

    items = [HRCropDataset(hr_folder, crop=32)[i] for i in range(2)]
    items = [(c, 100 + i) for i, c in enumerate(items)]
    hr, lrs = degrade_pairs(degrade_collate(items, scale=4, preset="bicubic"), scale=(2, 4), preset="bicubic")
    assert set(lrs) == {2, 4} and lrs[2].shape[-1] == 16 and lrs[4].shape[-1] == 8
    torch.testing.assert_close(lrs[2], make_lr(hr, 2, "bicubic"))  # each from the same HR
    batch = degrade_collate(items, scale=4)
    hr, lrs = degrade_pairs(batch, scale=(2, 4))  # realesrgan: the same kernels and random stream for both
    _, alone = degrade_pairs(batch, scale=4)
    torch.testing.assert_close(lrs[4], alone)

    seen = {}

    class TwoScales(YonosRecipe):
        lr_scales = (2, 4)

        def training_step(self, hr, lr, ctx):
            seen.update({s: v.shape for s, v in lr.items()}, hr=hr.shape)
            return super().training_step(hr, lr[4], ctx)

    Trainer(TwoScales(YonosConfig(unet="tiny")), tiny_train_config(hr_folder, steps=1), tmp_path / "run",
            "yonos").run()
    assert seen[2][-1] == 16 and seen[4][-1] == 8 and seen["hr"][-1] == 32
