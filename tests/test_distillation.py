"""SinSR and RSD recipes on tiny nets: each loss term, where gradients go, the multistep input, a short run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from instantsr.codecs import PixelUnshuffleCodec
from instantsr.diffusion.resshift import ResShiftDenoiser, ResShiftSchedule, sample_deterministic, scale_input
from instantsr.methods import sinsr
from instantsr.methods.rsd import RSDConfig, RSDRecipe
from instantsr.methods.sinsr import SinSRConfig, SinSRRecipe
from instantsr.model import SRModel, encode_condition
from instantsr.nets.unet import ConditionalUNet
from instantsr.pipeline import Upscaler
from instantsr.train import Trainer

from .test_train import tiny_train_config


def tiny_teacher(seed: int = 0, sigma_data: float | None = None) -> SRModel:
    torch.manual_seed(seed)
    return SRModel(ConditionalUNet.from_preset("tiny", latent_channels=48), PixelUnshuffleCodec(4),
                   ResShiftSchedule(), scale=4, steps=15, sigma_data=sigma_data).eval()


class MeanAbsLPIPS(nn.Module):
    """A stand-in perceptual loss (the real LPIPS needs fetched weights; it is tested in test_metrics)."""

    def forward(self, a, b):
        return (a - b).abs().flatten(1).mean(1)


class RecordingContext:
    """A StepContext stand-in that records which networks got gradients on each update."""

    def __init__(self, recipe, seed=0):
        self.generator = torch.Generator().manual_seed(seed)
        self.recipe, self.step, self.updates = recipe, 0, []

    def update(self, name, loss):
        loss.backward()
        got = {n: any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
               for n, net in self.recipe.networks().items()}
        self.updates.append((name, got))
        for net in self.recipe.networks().values():
            net.zero_grad(set_to_none=True)


def restore(model: SRModel, lq, noise, generator=None, steps=None):
    """One batch through the model's pieces with a given x_T noise (the Upscaler draws it from a seed)."""
    cond = model.condition(lq, generator)
    return model.decode(model.sample(model.prior(cond, noise), cond, steps, generator=generator))


def batch(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(n, 3, size, size, generator=g)
    return hr, torch.nn.functional.avg_pool2d(hr, 4)


# ---- SinSR ------------------------------------------------------------------------------------------------
def test_sinsr_student_starts_as_teacher_and_losses_are_switchable():
    teacher = tiny_teacher()
    recipe = SinSRRecipe(SinSRConfig(gt=False), teacher=teacher)
    for a, b in zip(recipe.student.parameters(), teacher.backbone.parameters()):
        assert torch.equal(a, b) and a is not b
    hr, lr = batch()
    ctx = RecordingContext(recipe)
    logs = recipe.training_step(hr, lr, ctx)
    assert set(logs) == {"loss", "distill", "inverse"}
    assert ctx.updates == [("student", {"student": True})]
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(ValueError, match="at least one"):
        SinSRRecipe(SinSRConfig(distill=False, inverse=False, gt=False), teacher=teacher)


def record_mse(monkeypatch) -> list:
    """The (input, target) pairs of SinSR's MSE terms, in the order the step computes them."""
    calls = []

    def mse(input, target):
        calls.append((input.detach().clone(), target.detach().clone()))
        return F.mse_loss(input, target)

    monkeypatch.setattr(sinsr, "F", SimpleNamespace(mse_loss=mse))
    return calls


def prior_of(teacher: SRModel, lr, seed: int):
    """(x_T, cond) of a SinSR step whose generator is seeded with `seed`: x_T = y + kappa sqrt(eta_T) eps."""
    cond = encode_condition(teacher.codec, lr, teacher.scale)
    eps = torch.randn(cond.y.shape, generator=torch.Generator().manual_seed(seed))
    s = teacher.schedule
    return cond.y + s.kappa * float(s.etas[-1].sqrt()) * eps, cond


def index(n: int, t: int) -> torch.Tensor:
    return torch.full((n,), t, dtype=torch.long)


def test_sinsr_distill_target_is_the_deterministic_teacher(monkeypatch):
    """L_distill = MSE(f(x_T, y, T-1), F(x_T, y)): the target is the teacher's deterministic sampler (with
    teacher_steps) from the very x_T the student restores; the student starts as the teacher."""
    teacher = tiny_teacher()
    recipe = SinSRRecipe(SinSRConfig(inverse=False, gt=False, teacher_steps=5), teacher=teacher)
    calls = record_mse(monkeypatch)
    hr, lr = batch()
    logs = recipe.training_step(hr, lr, RecordingContext(recipe, seed=3))
    [(one_step, target)] = calls
    x_T, cond = prior_of(teacher, lr, seed=3)
    T = teacher.schedule.T
    with torch.no_grad():
        ode = sample_deterministic(teacher.denoiser, x_T, teacher.schedule, cond, steps=5)
        torch.testing.assert_close(target, ode)
        torch.testing.assert_close(one_step, teacher.denoiser(x_T, index(2, T - 1), cond))
        # the check tells targets apart: not the 15-step ODE, not the teacher's own one step
        other = sample_deterministic(teacher.denoiser, x_T, teacher.schedule, cond, steps=15)
        assert (other - ode).abs().max() > 1e-3 and (one_step - ode).abs().max() > 1e-3
    assert float(logs["distill"]) == pytest.approx(float(F.mse_loss(one_step, ode)), rel=1e-5)


@pytest.mark.parametrize("sigma_data", [None, 0.25])
def test_sinsr_inverse_target_is_the_x_T_the_teacher_started_from(monkeypatch, sigma_data):
    """L_inverse = MSE(f(F(x_T, y), y, 0), x_T): the student at index 0, fed the teacher's output, is scored
    against the x_T that output came from (SinSR Eq. 7). With sigma_data the index-0 map is the raw net read as
    noise: x_T = y + kappa sqrt(eta_T) net (sinsr.SinSRRecipe.invert)."""
    teacher = tiny_teacher(sigma_data=sigma_data)
    recipe = SinSRRecipe(SinSRConfig(distill=False, gt=False, teacher_steps=5), teacher=teacher)
    calls = record_mse(monkeypatch)
    hr, lr = batch()
    recipe.training_step(hr, lr, RecordingContext(recipe, seed=3))
    [(inverted, target)] = calls
    x_T, cond = prior_of(teacher, lr, seed=3)
    s, zero = teacher.schedule, index(2, 0)
    with torch.no_grad():
        x0_teacher = sample_deterministic(teacher.denoiser, x_T, s, cond, steps=5)
        if sigma_data is None:
            expected = teacher.denoiser(x0_teacher, zero, cond)
        else:
            net = teacher.backbone(scale_input(x0_teacher, zero, s), zero, cond.lq)
            expected = cond.y + s.kappa * float(s.etas[-1].sqrt()) * net
    torch.testing.assert_close(target, x_T)
    torch.testing.assert_close(inverted, expected)
    assert (x0_teacher - x_T).abs().max() > 0.1  # x_T is not the teacher's output: the test tells them apart


@pytest.mark.parametrize("sigma_data", [None, 0.25])
def test_sinsr_gt_loss_stops_the_gradient_at_the_inversion(monkeypatch, sigma_data):
    """L_gt = MSE(f(sg(f(x0, y, 0)), y, T-1), x0) (SinSR Eq. 8, Algorithm 1 line 16): the target is the HR latent
    and the student's gradient comes through its restore pass only, not through the inversion that feeds it."""
    teacher = tiny_teacher(sigma_data=sigma_data)
    recipe = SinSRRecipe(SinSRConfig(distill=False, inverse=False), teacher=teacher)
    params = list(recipe.student.parameters())
    grads = {}

    def dense(gs):  # a parameter the loss does not reach has gradient 0
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]

    class KeepGrads(RecordingContext):
        def update(self, name, loss):
            grads["step"] = dense(torch.autograd.grad(loss, params, allow_unused=True))

    calls = record_mse(monkeypatch)
    hr, lr = batch()
    recipe.training_step(hr, lr, KeepGrads(recipe))
    [(_, target)] = calls
    x0 = teacher.codec.encode(hr * 2 - 1)
    torch.testing.assert_close(target, x0)

    cond, T = encode_condition(teacher.codec, lr, 4), teacher.schedule.T
    student = ResShiftDenoiser(recipe.student, teacher.schedule, sigma_data)

    def gradient(stop: bool):
        x_T = recipe.invert(x0, index(2, 0), cond)
        loss = F.mse_loss(student(x_T.detach() if stop else x_T, index(2, T - 1), cond), x0)
        return dense(torch.autograd.grad(loss, params, allow_unused=True))

    stopped, through = gradient(stop=True), gradient(stop=False)
    for g, s in zip(grads["step"], stopped):
        torch.testing.assert_close(g, s, rtol=1e-4, atol=1e-7)
    # ... and the stop matters: through the inversion the gradient is another one
    assert max(float((t - s).abs().max()) for s, t in zip(stopped, through)) > 1e-4


# ---- RSD --------------------------------------------------------------------------------------------------
def rsd(**kw) -> RSDRecipe:
    return RSDRecipe(RSDConfig(**{"fake_updates": 2, **kw}), teacher=tiny_teacher(), lpips=MeanAbsLPIPS())


def test_rsd_lpips_backbone_follows_the_config():
    # VGG by default (AlexNet as a loss drew a mesh that DISTS punishes); AlexNet on request; others refused.
    teacher = tiny_teacher()
    assert RSDRecipe(RSDConfig(), teacher=teacher).lpips.net_name == "vgg"
    assert RSDRecipe(RSDConfig(lpips_net="alex"), teacher=teacher).lpips.net_name == "alex"
    assert RSDRecipe(RSDConfig(lpips_weight=0.0), teacher=teacher).lpips is None
    with pytest.raises(ValueError, match="alex"):
        RSDRecipe(RSDConfig(lpips_net="squeeze"), teacher=teacher)


def test_rsd_generator_starts_as_teacher_with_a_noise_input():
    recipe = rsd()
    model = recipe.sr_model()
    assert model.noise_channels == 1 and model.method == "rsd" and model.steps == 1
    lq = torch.rand(1, 3, 8, 8)
    # The noise channel starts at zero weight: same output as the teacher's one step, whatever eps is.
    a = restore(model, lq, torch.zeros(1, 48, 8, 8), generator=torch.Generator().manual_seed(1))
    b = restore(model, lq, torch.zeros(1, 48, 8, 8), generator=torch.Generator().manual_seed(2))
    t = restore(recipe.teacher, lq, torch.zeros(1, 48, 8, 8), steps=1)
    torch.testing.assert_close(a, t)
    torch.testing.assert_close(a, b)


def test_rsd_multistep_inputs_use_the_fixed_timesteps_and_the_forward_process():
    recipe = rsd(multistep=4)
    assert recipe.gen_steps == (0, 5, 9, 14)
    x0, y = torch.zeros(256, 48, 2, 2), torch.ones(256, 48, 2, 2)
    x_t, t = recipe.generator_input(x0, y, torch.Generator().manual_seed(0))
    assert set(t.tolist()) == {0, 5, 9, 14}
    etas = recipe.schedule.etas.float()
    for i in (0, 14):
        sel = x_t[t == i]
        # q(x_t | x0, y): mean x0 + eta_t (y - x0) = eta_t, std kappa sqrt(eta_t)
        assert sel.mean().item() == pytest.approx(float(etas[i]), abs=0.05 + 0.1 * float(etas[i]))
        assert sel.std().item() == pytest.approx(2 * float(etas[i].sqrt()), rel=0.1)


def test_rsd_distillation_gradient_reaches_the_generator_through_x0_hat_only():
    recipe = rsd()
    hr, lr = batch()
    x0 = recipe.teacher.codec.encode(hr * 2 - 1)
    cond, y = encode_condition(recipe.teacher.codec, lr, 4, 1, torch.Generator().manual_seed(0))
    x_t, t = recipe.generator_input(x0, y, torch.Generator().manual_seed(0))
    with torch.no_grad():  # a fake model that has moved away from the teacher (else the gradient is exactly 0)
        for p in recipe.fake.parameters():
            p.add_(0.05 * torch.randn_like(p))
    recipe.fake.requires_grad_(False)
    x0_hat = recipe.generate(x_t, t, (cond, y))
    x0_hat.retain_grad()
    loss = recipe.distillation_loss(x0_hat, y, (cond[:, :3], y), torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.shape == () and x0_hat.grad is not None and x0_hat.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in recipe.generator.parameters())
    assert all(p.grad is None for p in recipe.fake.parameters())
    assert all(p.grad is None for p in recipe.teacher.parameters())


def test_rsd_loss_is_zero_when_the_fake_model_equals_the_teacher():
    recipe = rsd()  # fake starts as a copy of the teacher: ||f* - x0_hat||^2 - ||f_phi - x0_hat||^2 = 0
    hr, lr = batch()
    x0 = recipe.teacher.codec.encode(hr * 2 - 1)
    cond, y = encode_condition(recipe.teacher.codec, lr, 4)
    loss = recipe.distillation_loss(x0 + 0.1, y, (cond, y), torch.Generator().manual_seed(0))
    assert abs(float(loss.detach())) < 1e-5


def test_rsd_step_updates_fake_without_generator_gradients_and_vice_versa():
    recipe = rsd(fake_updates=3)
    hr, lr = batch()
    ctx = RecordingContext(recipe)
    logs = recipe.training_step(hr, lr, ctx)
    names = [n for n, _ in ctx.updates]
    assert names == ["fake", "fake", "fake", "generator"]
    for name, got in ctx.updates:
        if name == "fake":
            assert got == {"fake": True, "generator": False}  # generator outputs are detached for f_phi
        else:
            assert got == {"generator": True, "fake": False}  # the generator step never trains f_phi
    assert {"distill", "lpips", "gan", "fake_fit", "disc"} <= set(logs)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in logs.values())


def test_rsd_gan_head_reads_encoder_features():
    recipe = rsd()
    x0 = torch.randn(2, 48, 8, 8)
    y, cond = torch.randn(2, 48, 8, 8), torch.randn(2, 3, 8, 8)
    logits = recipe._disc_logits(recipe.fake, x0, y, (cond, y), torch.Generator().manual_seed(0))
    assert logits.shape == (2,)
    recipe.gan_loss(x0.requires_grad_(), y, (cond, y), torch.Generator().manual_seed(0)).backward()
    assert x0.grad is not None and recipe.fake.head.net[0].weight.grad is not None


@pytest.mark.parametrize("method", ["sinsr", "rsd"])
def test_students_train_through_the_one_loop_and_export(method, hr_folder, tmp_path):
    teacher = tiny_teacher()
    if method == "sinsr":
        recipe = SinSRRecipe(SinSRConfig(teacher_steps=4), teacher=teacher)
    else:
        recipe = RSDRecipe(RSDConfig(fake_updates=1), teacher=teacher, lpips=MeanAbsLPIPS())
    run = tmp_path / method
    Trainer(recipe, tiny_train_config(hr_folder, steps=3, checkpoint_every=3), run, method).run()
    model = SRModel.from_pretrained(run / "model")
    assert model.method == method and model.steps == 1
    out = Upscaler(model).upscale_tensor(torch.rand(1, 3, 8, 8), seed=0)
    assert out.shape == (1, 3, 32, 32)
    assert (run / "checkpoints" / "step_0000003" / f"optim_{recipe.ema_network}.safetensors").is_file()
