"""DFOSD: Eq. 1 on known tensors, the noise-aware discriminator's forward-diffused inputs (Eq. 4), which networks
the gradients of L_G and L_D reach, LoRA-only checkpoints, and a run that trains, resumes, exports and upscales."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from instantsr.cli import main
from instantsr.data import degrade_collate, degrade_pairs
from instantsr.codecs import PixelUnshuffleCodec
from instantsr.diffusion.family import Condition
from instantsr.diffusion.resshift import ResShiftSchedule, skip_scalings
from instantsr.diffusion.vp import VPSchedule
from instantsr.methods.dfosd import DFOSDConfig, DFOSDRecipe, load_prior
from instantsr.methods.yonos import YonosConfig, YonosRecipe
from instantsr.model import SRModel, encode_condition
from instantsr.nets.unet import ConditionalUNet

from .conftest import smooth_image
from .test_train import losses, tiny_train_config


class MeanAbs(torch.nn.Module):
    """A perceptual-loss stand-in (no weights needed): mean absolute difference per image."""

    def forward(self, a, b):
        return (a - b).abs().flatten(1).mean(1)


class GradientContext:
    """A StepContext stand-in: `update` backpropagates and records which parameters got a gradient, then clears
    them (no optimizer step: the test reads where each loss reaches)."""

    def __init__(self, nets: dict, seed=0):
        self.generator, self.nets, self.reached, self.step = torch.Generator().manual_seed(seed), nets, {}, 0

    def update(self, name, loss):
        loss.backward()
        self.reached[name] = {(n, k) for n, net in self.nets.items() for k, p in net.named_parameters()
                              if p.grad is not None and p.grad.abs().sum() > 0}
        for net in self.nets.values():
            net.zero_grad(set_to_none=True)


@pytest.fixture
def prior(tmp_path):
    """A tiny YONOS-layout VP prior (eps-prediction, pixel-unshuffle latent at x4)."""
    torch.manual_seed(0)
    folder = tmp_path / "prior"
    YonosRecipe(YonosConfig(unet="tiny", scale=4, parameterization="eps")).sr_model().save_pretrained(folder)
    return folder


@pytest.fixture
def resshift_prior(tmp_path):
    """A tiny ResShift teacher (residual preconditioning, sigma_data 0.04), laid out as the shipped default."""
    torch.manual_seed(0)
    folder = tmp_path / "resshift_prior"
    SRModel(ConditionalUNet.from_preset("tiny", latent_channels=48), PixelUnshuffleCodec(4), ResShiftSchedule(),
            scale=4, method="resshift", steps=15, sigma_data=0.04).save_pretrained(folder)
    return folder


@pytest.fixture(params=["vp", "resshift"])
def any_prior(request):
    return request.getfixturevalue("prior" if request.param == "vp" else "resshift_prior")


def batch(n=2, size=32, seed=0):
    items = [(smooth_image(size, size, seed + i), 100 + seed + i) for i in range(n)]
    hr, lr = degrade_pairs(degrade_collate(items, scale=4), scale=(4,))
    return hr, lr


def recipe_of(prior, **kw) -> DFOSDRecipe:
    return DFOSDRecipe(DFOSDConfig(prior=str(prior), t_l=kw.pop("t_l", 250), **kw), perceptual=MeanAbs())


def test_the_generator_is_eq1_from_the_lr_latent_at_t_l(prior):
    recipe = recipe_of(prior, t_l=250)
    eps = torch.randn(2, 48, 8, 8)
    recipe.bind({"generator": lambda x, t, cond: eps})  # a backbone that predicts known noise
    y = torch.randn(2, 48, 8, 8)
    abar = float(VPSchedule().alphas_cumprod[250])
    expected = (y - (1 - abar) ** 0.5 * eps) / abar**0.5  # Eq. 1
    torch.testing.assert_close(recipe.generate(Condition(torch.zeros(2, 3, 8, 8), y)), expected)

    # the exported model runs the same: x_T = z_L, one DDIM step from T_L
    recipe = recipe_of(prior, t_l=250)
    model = recipe.sr_model()
    assert (model.family, model.schedule.start, model.num_passes(), model.max_steps) == ("vp_lr", 250, 1, 1)
    cond = Condition(torch.zeros(2, 3, 8, 8), y)
    with torch.no_grad():
        torch.testing.assert_close(model.sample(model.prior(cond, torch.randn_like(y)), cond),
                                   recipe.generate(cond))


def test_the_generator_starts_as_the_prior_with_lora_only_trainable(prior):
    recipe = recipe_of(prior)
    trainable = [k for k, p in recipe.generator.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in k for k in trainable)
    x, t = torch.randn(2, 48, 8, 8), torch.tensor([250, 250])
    cond = Condition(torch.zeros(2, 3, 8, 8), torch.randn(2, 48, 8, 8))
    prior_net = load_prior(recipe.method_config).backbone
    with torch.no_grad():  # LoRA's B starts at zero
        torch.testing.assert_close(recipe.generator(x, t, cond), prior_net(x, t, cond))
    head = [k for k, p in recipe.discriminator.named_parameters() if p.requires_grad and "lora_" not in k]
    assert head and all(k.startswith("head.") for k in head)
    assert not recipe.discriminator.encoder.unet.up_blocks  # down blocks + middle block only


def test_the_discriminator_sees_forward_diffused_latents_at_the_drawn_t(prior):
    recipe = recipe_of(prior, t_l=250)
    seen, drawn = [], []
    recipe.discriminator.register_forward_pre_hook(lambda m, args: seen.append(args))
    judge = recipe.judge_input

    def recording(z, y, g, t_index=None, noise=None):
        out = judge(z, y, g, t_index, noise)
        drawn.append((z, noise, out))
        return out

    recipe.judge_input = recording
    hr, lr = batch()
    recipe.training_step(hr, lr, GradientContext(recipe.networks()))
    (z_gen, _, (gen_in, gen_t)), (z_real, noise, (real_in, t)), (z_fake, _, (fake_in, _)) = drawn
    abar = VPSchedule().alphas_cumprod.float()[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(z_real, torch.nn.functional.pixel_unshuffle(hr * 2 - 1, 4))  # z_H
    torch.testing.assert_close(real_in, abar.sqrt() * z_real + (1 - abar).sqrt() * noise)  # Eq. 4
    torch.testing.assert_close(fake_in, abar.sqrt() * z_fake + (1 - abar).sqrt() * noise)
    torch.testing.assert_close(z_fake, z_gen)  # fake = the generator's latent
    assert t.min() >= 0 and t.max() < 1000 and len(set(t.tolist())) == 2  # random t per sample
    # L_G's call, then L_D's on real and fake together, each with its own t
    assert torch.equal(seen[0][0], gen_in) and torch.equal(seen[0][1], gen_t)
    assert torch.equal(seen[1][0], torch.cat([real_in, fake_in])) and torch.equal(seen[1][1], torch.cat([t, t]))

    vanilla = recipe_of(prior, discriminator="vanilla")
    z = torch.randn(2, 48, 8, 8)
    z_in, t0 = vanilla.judge_input(z, torch.randn_like(z), torch.Generator().manual_seed(0))
    assert torch.equal(z_in, z) and not t0.any()  # clean latents at t = 0


def test_a_resshift_prior_denoises_z_l_at_t_l_without_noise_and_its_nad_uses_its_forward_process(resshift_prior):
    recipe = recipe_of(resshift_prior, t_l=10)
    schedule = ResShiftSchedule()
    out = torch.randn(2, 48, 8, 8)
    calls = []
    recipe.bind({"generator": lambda x, t, lq: calls.append((x, t, lq)) or out})  # a backbone with known output
    y, lq = torch.randn(2, 48, 8, 8), torch.randn(2, 3, 8, 8)
    _, c_out = skip_scalings(torch.tensor([10, 10]), schedule, 0.04, y)
    # x_{T_L} := z_L: the skip term (x_t - y) vanishes and x0 = y + c_out f(z_L / sqrt(kappa^2 eta + 1); T_L, lq)
    torch.testing.assert_close(recipe.generate(Condition(lq, y)), y + c_out * out)
    x_in, t_in, lq_in = calls[0]
    torch.testing.assert_close(x_in, y / (schedule.kappa**2 * float(schedule.etas[10]) + 1) ** 0.5)
    assert t_in.tolist() == [10, 10] and lq_in is lq

    recipe = recipe_of(resshift_prior, t_l=10)  # the export: x_T = z_L, one deterministic step from T_L
    model = recipe.sr_model()
    assert (model.family, model.schedule.start, model.num_passes(), model.sigma_data) == ("resshift_lr", 10, 1, 0.04)
    cond = Condition(lq, y)
    with torch.no_grad():
        torch.testing.assert_close(model.sample(model.prior(cond, torch.randn_like(y)), cond), recipe.generate(cond))

    # NAD: F(z, t) = z + eta_t (y - z) + kappa sqrt(eta_t) eps, fed to the prior's encoder scaled as the prior's
    z, noise, t = torch.randn(2, 48, 8, 8), torch.randn(2, 48, 8, 8), torch.tensor([0, 14])
    z_t, t_out = recipe.judge_input(z, y, None, t, noise)
    eta = schedule.etas.float()[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(z_t, z + eta * (y - z) + 2.0 * eta.sqrt() * noise)
    seen = []
    recipe.discriminator.encoder.encoder_features = lambda x, t, c: seen.append((x, c)) or torch.zeros(2, 32, 1, 1)
    recipe.discriminator(z_t, t_out, cond)
    torch.testing.assert_close(seen[0][0], z_t / (4 * eta + 1).sqrt())
    assert seen[0][1] is lq


def test_gradients_of_l_g_reach_only_the_generators_lora_and_of_l_d_only_the_discriminator(any_prior):
    recipe = recipe_of(any_prior, t_l=250 if any_prior.name == "prior" else 10)
    with torch.no_grad():  # non-zero LoRA B everywhere, so that every adapter has a gradient path
        for net in recipe.networks().values():
            for k, p in net.named_parameters():
                if "lora_B" in k:
                    p.normal_(0, 0.01)
    nets = recipe.networks()
    ctx = GradientContext(nets)
    hr, lr = batch()
    logs = recipe.training_step(hr, lr, ctx)
    assert set(logs) >= {"mse", "ea-dists", "gan", "disc"}
    gen_lora = {("generator", k) for k, p in nets["generator"].named_parameters() if "lora_" in k}
    disc_trainable = {("discriminator", k) for k, p in nets["discriminator"].named_parameters() if p.requires_grad}
    assert ctx.reached["generator"] and ctx.reached["generator"] <= gen_lora
    assert len(ctx.reached["generator"]) > 0.9 * len(gen_lora)
    assert ctx.reached["discriminator"] and ctx.reached["discriminator"] <= disc_trainable
    assert all(p.requires_grad for n, p in nets["discriminator"].named_parameters() if ("discriminator", n)
               in disc_trainable)  # L_G froze the discriminator for its call only
    frozen_prior = [p for k, p in nets["generator"].named_parameters() if "lora_" not in k]
    assert frozen_prior and not any(p.requires_grad for p in [*frozen_prior, *recipe.codec.parameters()])


def test_colour_and_grid_terms_are_logged_weighted_and_reach_the_lora(resshift_prior):
    hr, lr = batch(size=64)
    plain = recipe_of(resshift_prior, t_l=10, discriminator="none", perceptual="mse")
    logs = plain.training_step(hr, lr, GradientContext(plain.networks()))
    assert not {"color", "grid", "grid_ratio"} & set(logs)  # off by default: the paper's loss
    terms = ("color", "grid", "grid_ratio")
    for weights in ((1.0, 10.0, 0.5), (3.0, 30.0, 1.5)):
        torch.manual_seed(0)
        recipe = recipe_of(resshift_prior, t_l=10, discriminator="none", perceptual="mse",
                           color_weight=weights[0], grid_weight=weights[1], grid_ratio_weight=weights[2])
        ctx = GradientContext(recipe.networks())
        logs = recipe.training_step(hr, lr, ctx)
        if weights[0] == 1.0:
            first = logs
        assert float(logs["loss"]) == pytest.approx(float(logs["mse"] + sum(logs[k] for k in terms)), rel=1e-6)
        assert ctx.reached["generator"]
    assert float(first["color"]) > 0 and float(first["grid"]) >= 0 and float(first["grid_ratio"]) > 0
    for k in terms:
        torch.testing.assert_close(logs[k], 3 * first[k], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("kind", ["none", "vanilla"])
def test_ablations_train_without_or_with_a_clean_discriminator(prior, kind):
    recipe = recipe_of(prior, discriminator=kind, perceptual="mse")
    assert recipe.perceptual is None
    ctx = GradientContext(recipe.networks())
    logs = recipe.training_step(*batch(), ctx)
    assert ("gan" in logs) == (kind != "none") and "ea-dists" not in logs
    assert set(recipe.networks()) == ({"generator"} if kind == "none" else {"generator", "discriminator"})


def test_bad_configs_are_one_line(prior, tmp_path):
    with pytest.raises(ValueError, match="choose from nad, vanilla, none"):
        DFOSDConfig(discriminator="patch")
    with pytest.raises(ValueError, match="ea-dists, dists, lpips, mse"):
        DFOSDConfig(perceptual="l1")
    with pytest.raises(ValueError, match="needs a prior"):
        DFOSDRecipe(DFOSDConfig(t_l=10), perceptual=MeanAbs())
    with pytest.raises(ValueError, match=r"give T_L in \[1, 999\]"):
        DFOSDRecipe(DFOSDConfig(prior=str(prior)), perceptual=MeanAbs())


def test_a_model_that_does_not_denoise_is_not_a_prior(resshift_prior, tmp_path):
    with pytest.raises(ValueError, match=r"give T_L in \[0, 14\]"):
        DFOSDRecipe(DFOSDConfig(prior=str(resshift_prior), t_l=15), perceptual=MeanAbs())
    rsd = SRModel.from_pretrained(resshift_prior)  # an RSD generator reads noise channels: a sampler, no denoiser
    from instantsr.nets.unet import adapt_extra_channels

    SRModel(adapt_extra_channels(rsd.backbone, 1), rsd.codec, rsd.schedule, method="rsd", steps=1, max_steps=1,
            sigma_data=0.04).save_pretrained(tmp_path / "rsd")
    with pytest.raises(ValueError, match="a rsd model; a DFOSD prior is a diffusion model that denoises"):
        DFOSDRecipe(DFOSDConfig(prior=str(tmp_path / "rsd"), t_l=10), perceptual=MeanAbs())


@pytest.mark.slow
def test_train_dfosd_resumes_holds_lora_only_and_exports_a_one_pass_model(prior, hr_folder, tmp_path):
    run = tmp_path / "run"
    config = tmp_path / "dfosd.toml"
    config.write_text('method = "dfosd"\n[train]\nbatch_size = 2\ncrop = 32\nnum_workers = 0\nlog_every = 1\n'
                      'checkpoint_every = 2\nkeep_checkpoints = 5\n[dfosd]\nt_l = 250\nperceptual = "mse"\n')
    args = ["train", "dfosd", "--config", str(config), "--prior", str(prior), "--data", str(hr_folder),
            "--out", str(run)]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "3"]) == 0  # resumes at step 2
    assert len(losses(run)) == 3  # one row per step: steps 1-2, then 3
    ckpt = run / "checkpoints" / "step_0000003"
    gen = load_file(str(ckpt / "generator.safetensors"))
    assert gen and all("lora_" in k for k in gen)  # the frozen prior is not written
    disc = load_file(str(ckpt / "discriminator.safetensors"))
    assert all("lora_" in k or k.startswith("head.") for k in disc)
    index = json.loads((run / "model" / "model_index.json").read_text())
    assert (index["method"], index["family"], index["schedule"]["start"], index["steps"]) == ("dfosd", "vp_lr", 250, 1)
    model = SRModel.from_pretrained(run)
    assert not any("lora_" in k for k in model.state_dict()) and model.num_passes() == 1
    from instantsr.io import read_image, save_image

    save_image(smooth_image(12, 16, 0), tmp_path / "lr" / "im0.png")
    assert main(["upscale", "-i", str(tmp_path / "lr"), "-o", str(tmp_path / "sr"), "-m", str(run)]) == 0
    assert read_image(tmp_path / "sr" / "im0.png").rgb.shape == (3, 48, 64)


@pytest.mark.slow
def test_a_stable_diffusion_prior_trains_its_lora_and_learnable_context(sd_folder, hr_folder, tmp_path):
    from instantsr.train import Trainer

    recipe = DFOSDRecipe(DFOSDConfig(prior=str(sd_folder), t_l=500, scale=4), perceptual=MeanAbs())
    assert recipe.parameterization == "eps" and recipe.codec.scale_factor == 2
    trainable = {k for k, p in recipe.generator.named_parameters() if p.requires_grad}
    assert "context" in trainable and all("lora_" in k for k in trainable - {"context"})
    run = tmp_path / "run"
    Trainer(recipe, tiny_train_config(hr_folder, steps=2, checkpoint_every=2), run, "dfosd").run()
    gen = load_file(str(run / "checkpoints" / "step_0000002" / "generator.safetensors"))
    assert set(gen) == trainable
    model = SRModel.from_pretrained(run)
    assert (model.family, type(model.backbone).__name__) == ("vp_lr", "SDConditionalUNet")


def test_ablations_are_flags_of_instantsr_train():
    from instantsr.cli import apply_overrides
    from instantsr.train import TrainConfig

    train, method = apply_overrides(["discriminator=vanilla", "perceptual=dists", "gan_weight=0.1",
                                     "train.hr_scales=[1.0, 0.5]"], TrainConfig(), DFOSDConfig(), "dfosd")
    assert (method.discriminator, method.perceptual, method.gan_weight) == ("vanilla", "dists", 0.1)
    assert train.hr_scales == (1.0, 0.5)
    with pytest.raises(ValueError, match="has no field 'discriminatr'"):
        apply_overrides(["discriminatr=none"], TrainConfig(), DFOSDConfig(), "dfosd")
    with pytest.raises(ValueError, match="choose from nad, vanilla, none"):
        apply_overrides(["discriminator=patch"], TrainConfig(), DFOSDConfig(), "dfosd")


@pytest.mark.slow
def test_the_exported_model_runs_the_lora_merged_generator_in_torch_and_onnx(any_prior, tmp_path):
    import copy

    from instantsr.onnx_export import OnnxUpscaler, export_onnx
    from instantsr.pipeline import Upscaler
    from instantsr.train import merge_lora

    recipe = recipe_of(any_prior, t_l=100 if any_prior.name == "prior" else 10)
    with torch.no_grad():  # a trained-looking adapter
        for k, p in recipe.generator.named_parameters():
            if "lora_B" in k:
                p.normal_(0, 0.02)
    merge_lora(copy.deepcopy(recipe.sr_model())).save_pretrained(tmp_path / "dfosd")
    lq = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    cond = encode_condition(recipe.codec, lq, recipe.scale)
    with torch.no_grad():
        expected = ((recipe.codec.decode(recipe.generate(cond)) + 1) / 2).clamp(0, 1)
    torch_up = Upscaler.from_pretrained(tmp_path / "dfosd")
    torch.testing.assert_close(torch_up.upscale_tensor(lq, seed=0), expected, atol=1e-5, rtol=0)
    onnx = OnnxUpscaler(export_onnx(tmp_path / "dfosd", tmp_path / "dfosd.onnx"))
    assert (onnx.upscale_tensor(lq, seed=0) - expected).abs().max() < 1e-4
