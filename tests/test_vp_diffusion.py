"""VP (DDPM/DDIM, Stable Diffusion) schedule, parameterisations, DDIM sampler and loss, checked against diffusers."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from instantsr.diffusion.vp import (
    VPDenoiser,
    VPLoss,
    VPSchedule,
    ddim_step,
    eps_from_x0,
    prior_sample,
    q_sample,
    sample_ddim,
    snr_plus_one_weight,
    to_x0,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
)

SD = VPSchedule()
DIFFUSERS_BETAS = {"scaled_linear": "scaled_linear", "linear": "linear", "cosine": "squaredcos_cap_v2"}
PREDICTION = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}  # diffusers name -> ours


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _randn(shape=(2, 4, 8, 8), seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=_gen(seed), dtype=dtype)


def _toy_net(x_t, t_index, cond=None):
    """A fixed function of x_t and t (linear in x_t): what a 'network' predicts (eps, v or x0)."""
    t = torch.as_tensor(t_index, dtype=x_t.dtype).reshape(-1, *[1] * (x_t.ndim - 1)) / 1000
    return 0.7 * x_t + 0.3 * torch.sin(3 * t) * x_t.flip(-1) + 0.1 * t


def _ddim(prediction_type, beta_schedule="scaled_linear"):
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule=DIFFUSERS_BETAS[beta_schedule],
                         beta_start=0.00085, beta_end=0.012, timestep_spacing="trailing", set_alpha_to_one=True,
                         prediction_type=prediction_type, clip_sample=False)


def _run(scheduler, x):
    for t in scheduler.timesteps:
        x = scheduler.step(_toy_net(x, t), t, x).prev_sample
    return x


# ---------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("beta_schedule", ["scaled_linear", "linear", "cosine"])
def test_alphas_cumprod_match_diffusers(beta_schedule):
    ours = VPSchedule(beta_schedule=beta_schedule)
    ref = _ddim("epsilon", beta_schedule).alphas_cumprod.double()  # diffusers' tables are float32
    assert ours.alphas_cumprod.dtype == torch.float64 and ours.alphas_cumprod.shape == (1000,)
    assert torch.allclose(ours.alphas_cumprod, ref, rtol=0, atol=1e-6)
    assert torch.allclose(ours.alpha**2 + ours.sigma**2, torch.ones(1000, dtype=torch.float64), atol=1e-15)
    assert torch.equal(ours.alpha, ours.alphas_cumprod.sqrt())


def test_known_value():
    assert SD.alphas_cumprod[999].item() == pytest.approx(0.0046601, abs=1e-5)  # diffusers: 0.00466009...
    assert SD.betas[0].item() == pytest.approx(0.00085, rel=1e-12)
    assert SD.betas[-1].item() == pytest.approx(0.012, rel=1e-12)


@pytest.mark.parametrize("steps", [1, 2, 4, 10, 50, 1000])
def test_respaced_matches_diffusers_trailing(steps):
    ref = _ddim("epsilon")
    ref.set_timesteps(steps)
    kept = SD.respaced(steps)
    assert kept.timesteps == tuple(sorted(ref.timesteps.tolist()))
    assert torch.equal(kept.indices, torch.tensor(kept.timesteps))
    assert SD.respaced(1).timesteps == (999,) and SD.respaced(4).timesteps == (249, 499, 749, 999)


def test_respaced_never_yields_an_extra_index():
    # np.arange with a float step can give steps+1 values (diffusers' trailing set_timesteps(61) yields 62,
    # the last one -1); we keep exactly `steps` distinct indices ending at the top.
    for steps in (61, 103, 7, 333):
        kept = SD.respaced(steps).timesteps
        assert len(kept) == steps and kept[0] >= 0 and kept[-1] == 999
    kept = VPSchedule(start=16).respaced(7).timesteps
    assert len(kept) == 7 and kept[0] >= 0 and kept[-1] == 16


def test_alphas_cumprod_prev():
    full = SD.alphas_cumprod_prev
    assert full[0] == 1.0 and torch.equal(full[1:], SD.alphas_cumprod[:-1])
    sched = SD.respaced(4)  # kept 249, 499, 749, 999
    prev = sched.alphas_cumprod_prev
    assert prev[249] == 1.0 and prev[0] == 1.0
    assert prev[499] == SD.alphas_cumprod[249] and prev[999] == SD.alphas_cumprod[749]


def test_start_and_errors():
    s = VPSchedule(start=500)
    assert s.respaced(1).timesteps == (500,) and s.max_steps == 501 and s.timesteps[-1] == 500
    assert s.respaced(2).start == 500 and s.respaced(2).timesteps == (249, 500)
    assert SD.max_steps == 1000 and SD.respaced(1000) == SD
    with pytest.raises(ValueError, match=r"steps must be in \[1, 501\], got 0"):
        s.respaced(0)
    with pytest.raises(ValueError, match=r"steps must be in \[1, 501\], got 502"):
        s.respaced(502)
    with pytest.raises(ValueError, match="beta_schedule must be one of .*'scaled_linear'.*got 'sqrt'"):
        VPSchedule(beta_schedule="sqrt")
    with pytest.raises(ValueError, match="timesteps must be ascending"):
        VPSchedule(timesteps=(5, 3))
    with pytest.raises(ValueError, match="timesteps must be ascending"):
        VPSchedule(start=10, timesteps=(5, 11))
    with pytest.raises(ValueError, match="start in"):
        VPSchedule(start=1000)
    with pytest.raises(ValueError, match="parameterization must be one of .*got 'score'"):
        to_x0(_randn(), _randn(), torch.tensor([0, 1]), SD, "score")
    with pytest.raises(ValueError, match="parameterization must be one of"):
        VPDenoiser(_toy_net, SD, "epsilon")


# ---------------------------------------------------------------------------- parameterisations


def test_conversions_round_trip():
    x0, noise = _randn(seed=0), _randn(seed=1)
    t = torch.tensor([0, 999])
    x_t = q_sample(x0, t, noise, SD)
    assert torch.allclose(eps_from_x0(x_t, x0, t, SD), noise, atol=1e-6)
    assert torch.allclose(x0_from_eps(x_t, noise, t, SD), x0, atol=1e-6)
    v = v_from_x0_eps(x0, noise, t, SD)
    assert torch.allclose(x0_from_v(x_t, v, t, SD), x0, atol=1e-6)  # v consistent with q_sample
    a, s = SD.alpha[t].view(-1, 1, 1, 1), SD.sigma[t].view(-1, 1, 1, 1)
    assert torch.allclose(x0_from_v(x_t, noise, t, SD), a * x_t - s * noise, atol=1e-12)
    for name, pred in (("x0", x0), ("eps", noise), ("v", v)):
        assert torch.allclose(to_x0(pred, x_t, t, SD, name), x0, atol=1e-6)
    assert torch.equal(prior_sample(noise, SD), noise)


def test_known_values_at_t():
    t = torch.tensor([499])
    a, s = SD.alpha[499].item(), SD.sigma[499].item()
    assert a**2 == pytest.approx(SD.alphas_cumprod[499].item(), rel=1e-12)
    one = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    assert torch.allclose(q_sample(one, t, 2 * one, SD), (a + 2 * s) * one, atol=1e-12)
    assert torch.allclose(v_from_x0_eps(one, 2 * one, t, SD), (2 * a - s) * one, atol=1e-12)
    x = q_sample(one, torch.tensor([0]), 0 * one, SD)
    assert torch.allclose(x, (1 - 0.00085) ** 0.5 * one, atol=1e-12)


# ---------------------------------------------------------------------------- weight and loss


def test_snr_plus_one_weight():
    like = _randn((3, 1, 2, 2))
    t = torch.tensor([0, 999, 500])
    w = snr_plus_one_weight(t, SD, like)
    assert w.shape == (3, 1, 1, 1) and w.dtype == like.dtype
    for k, i in enumerate(t.tolist()):
        abar = SD.alphas_cumprod[i].item()
        assert w[k].item() == pytest.approx(1 + abar / (1 - abar), rel=1e-10)
        assert w[k].item() == pytest.approx(1 / (1 - abar), rel=1e-10)
    assert w[0].item() == pytest.approx(1 / 0.00085, rel=1e-9)


def test_vp_loss_snr_plus_one_is_v_mse():
    backbone = lambda x_t, t_index, cond: 0.5 * x_t.flip(-1) - 0.2  # a "v" prediction
    denoiser = VPDenoiser(backbone, SD, "v")
    x0, noise = _randn((4, 3, 8, 8), 0, torch.float32), _randn((4, 3, 8, 8), 1, torch.float32)
    t = torch.tensor([0, 10, 500, 999])
    loss = VPLoss(SD)(denoiser, x0, t_index=t, noise=noise)
    x_t = q_sample(x0, t, noise, SD)
    v_mse = (backbone(x_t, t, None) - v_from_x0_eps(x0, noise, t, SD)).pow(2).flatten(1).mean(1)
    assert loss.shape == (4,)
    assert torch.allclose(loss, v_mse, rtol=1e-5, atol=1e-5)
    plain = VPLoss(SD, weighting="none")(denoiser, x0, t_index=t, noise=noise)
    assert torch.allclose(plain, (denoiser(x_t, t) - x0).pow(2).flatten(1).mean(1))
    drawn = VPLoss(SD)(denoiser, x0, generator=_gen(3))  # t and noise from the generator: reproducible
    assert torch.equal(drawn, VPLoss(SD)(denoiser, x0, generator=_gen(3)))
    with pytest.raises(ValueError, match="weighting must be one of"):
        VPLoss(SD, weighting="snr")


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_vp_loss_one_step_fraction_puts_that_share_at_t_max(fraction):
    seen = []

    def denoiser(x_t, t_index, cond):
        seen.append(t_index)
        return torch.zeros_like(x_t)

    VPLoss(SD, one_step_fraction=fraction)(denoiser, torch.zeros(4000, 1, 1, 1), generator=_gen(0))
    t = seen[0]
    at_top = (t == SD.T - 1).float().mean().item()
    assert at_top == pytest.approx(fraction + (1 - fraction) / SD.T, abs=0.025)
    rest = t[t != SD.T - 1]
    if fraction < 1:  # the others stay uniform over 0..T-2
        assert rest.min() < 50 and rest.max() > SD.T - 50 and rest.float().mean() == pytest.approx(500, abs=25)
    # DFOSD-style schedules that start lower put the share at their start
    VPLoss(VPSchedule(start=249), one_step_fraction=1.0)(denoiser, torch.zeros(8, 1, 1, 1), generator=_gen(0))
    assert seen[-1].tolist() == [249] * 8
    with pytest.raises(ValueError, match="one_step_fraction must be in"):
        VPLoss(SD, one_step_fraction=1.5)


# ---------------------------------------------------------------------------- denoiser


def test_denoiser_passes_cond_untouched():
    seen = []

    def backbone(x_t, t_index, cond):
        seen.append(cond)
        return torch.zeros_like(x_t)

    cond = (torch.ones(1), object())  # anything, e.g. Condition(lq, y)
    x = _randn((1, 4, 8, 8))
    out = VPDenoiser(backbone, SD, "x0")(x, torch.tensor([3]), cond)
    assert seen[0] is cond and torch.equal(out, torch.zeros_like(x))
    VPDenoiser(backbone, SD, "x0")(x, torch.tensor([3]))
    assert seen[1] is None


# ---------------------------------------------------------------------------- DDIM, against diffusers


@pytest.mark.parametrize("prediction_type", list(PREDICTION))
def test_ddim_step_matches_diffusers(prediction_type):
    # float64 states; diffusers' float32 alphas_cumprod replaced by ours so that only the step logic is compared.
    ref = _ddim(prediction_type)
    ref.alphas_cumprod = SD.alphas_cumprod
    ref.set_timesteps(4)
    sched = SD.respaced(4)
    for k, t in enumerate(ref.timesteps.tolist()):
        x_t, out = _randn(seed=k), _randn(seed=10 + k)
        t_index = torch.full((2,), t)
        ours = ddim_step(x_t, to_x0(out, x_t, t_index, sched, PREDICTION[prediction_type]), t_index, sched)
        assert torch.allclose(ours, ref.step(out, t, x_t).prev_sample, rtol=0, atol=1e-10)
    x0_hat = _randn(seed=5)
    assert torch.equal(ddim_step(_randn(seed=6), x0_hat, torch.full((2,), 249), sched), x0_hat)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # diffusers + numpy 2
@pytest.mark.parametrize("beta_schedule", ["scaled_linear", "cosine"])
@pytest.mark.parametrize("prediction_type", list(PREDICTION))
@pytest.mark.parametrize("steps", [1, 4, 16])
def test_sample_ddim_matches_diffusers(steps, prediction_type, beta_schedule):
    sched = VPSchedule(beta_schedule=beta_schedule)
    x_T = _randn(seed=steps)
    ours, traj = sample_ddim(VPDenoiser(_toy_net, sched, PREDICTION[prediction_type]), x_T, sched, steps=steps,
                             return_trajectory=True)
    assert len(traj) == steps + 1 and traj[0] is x_T and traj[-1] is ours
    if 1000 % steps == 0:
        # DDIMScheduler steps to t - T // steps, the previous kept index only when steps divides T (for 16 it
        # is not: 999 -> 937 -> 875 while the kept indices are 999, 937, 874). float64 states with our float64
        # tables injected into diffusers: the step logic agrees to 1e-9.
        ref = _ddim(prediction_type, beta_schedule)
        ref.alphas_cumprod = sched.alphas_cumprod
        ref.set_timesteps(steps)
        assert torch.allclose(ours, _run(ref, x_T.clone()), rtol=0, atol=1e-9)
    if beta_schedule == "scaled_linear":
        # First-order DPM-Solver++ is DDIM (Lu et al. 2022) and steps between the kept indices for any `steps`.
        # Its step computes in float32 whatever the input dtype, hence 1e-5 (and SD's schedule only: the cosine
        # schedule's alpha at 999 is ~5e-5, which amplifies float32 rounding of eps -> x0 beyond that).
        ref = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                                          beta_start=0.00085, beta_end=0.012, prediction_type=prediction_type,
                                          timestep_spacing="trailing", solver_order=1,
                                          algorithm_type="dpmsolver++", final_sigmas_type="zero")
        ref.set_timesteps(steps)
        assert ref.timesteps.tolist() == list(reversed(sched.respaced(steps).timesteps))
        assert torch.allclose(ours, _run(ref, x_T.clone()), rtol=0, atol=1e-5)


@pytest.mark.parametrize("prediction_type", list(PREDICTION))
@pytest.mark.parametrize("steps", [1, 4])
def test_sample_ddim_matches_diffusers_out_of_the_box(steps, prediction_type):
    # Stock diffusers (float32 tables) on float32 states, SD defaults: the table rounding stays below 1e-5.
    x_T = _randn(seed=steps, dtype=torch.float32)
    ours = sample_ddim(VPDenoiser(_toy_net, SD, PREDICTION[prediction_type]), x_T, SD, steps=steps)
    ref = _ddim(prediction_type)
    ref.set_timesteps(steps)
    assert torch.allclose(ours, _run(ref, x_T.clone()), rtol=1e-5, atol=1e-5)


def test_sample_ddim_from_start_is_one_step():
    # DFOSD-style: start at T_L = 500 from the caller's x; one step returns the denoiser's x0_hat exactly.
    sched = VPSchedule(start=500)
    seen = []

    def denoiser(x_t, t_index, cond):
        seen.append((t_index.tolist(), cond))
        return 0.5 * x_t

    y = _randn(seed=4)
    out = sample_ddim(denoiser, y, sched, cond="c", steps=1)
    assert torch.equal(out, 0.5 * y) and seen == [([500, 500], "c")]
    np.testing.assert_array_equal(sched.respaced(1).indices.numpy(), [500])
