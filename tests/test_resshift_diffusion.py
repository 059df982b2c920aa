"""ResShift schedule, forward/posterior math, deterministic sampler and inversion (SinSR §4.1)."""

import math

import pytest
import torch

from instantsr.diffusion.resshift import (
    ResShiftDenoiser,
    ResShiftLoss,
    ResShiftSchedule,
    deterministic_coefficients,
    deterministic_step,
    invert_deterministic,
    posterior_mean_variance,
    prior_sample,
    q_sample,
    sample_deterministic,
    sample_resshift,
    scale_input,
)

DESIGN_SQRT_ETAS = [0.02, 0.117, 0.176, 0.234, 0.292, 0.351, 0.412, 0.476, 0.542, 0.610, 0.681,
                    0.754, 0.830, 0.909, 0.99]
SCHEDULE = ResShiftSchedule()


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _pair(shape=(2, 3, 8, 8), dtype=torch.float64, seed=0):
    g = _gen(seed)
    return torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)


def _exact(x0):
    """A model that ignores its input and returns the true x0."""
    return lambda x_t, t_index, cond: x0.to(x_t.dtype)


def _sample(sampler, denoiser, y, noise=None, generator=None, lq=None, **kwargs):
    """x_T = y + kappa sqrt(eta_T) noise (noise drawn first from `generator` when not given), then the sampler
    from x_T with cond = (lq, y): the callers' old one-call form."""
    if noise is None:
        noise = torch.randn(y.shape, generator=generator, dtype=y.dtype)
    return sampler(denoiser, prior_sample(y, noise, SCHEDULE), SCHEDULE, (lq, y), generator=generator, **kwargs)


# ---------------------------------------------------------------------------- schedule


def test_sqrt_etas_match_design():
    s = SCHEDULE.sqrt_etas
    assert s.dtype == torch.float64 and s.shape == (15,)
    assert torch.allclose(s, torch.tensor(DESIGN_SQRT_ETAS, dtype=torch.float64), atol=1e-3)
    assert SCHEDULE.etas[0].item() == pytest.approx(0.02**2, rel=1e-14)
    assert SCHEDULE.etas[-1].item() == pytest.approx(0.99**2, rel=1e-14)
    assert torch.all(s[1:] > s[:-1])


def test_alphas_and_etas_prev():
    etas, alphas = SCHEDULE.etas, SCHEDULE.alphas
    assert SCHEDULE.etas_prev[0] == 0 and torch.equal(SCHEDULE.etas_prev[1:], etas[:-1])
    assert alphas[0] == etas[0] and torch.allclose(alphas.cumsum(0), etas, atol=1e-15)


def test_respaced_indices():
    assert SCHEDULE.respaced(15) == SCHEDULE
    assert SCHEDULE.respaced(1).timesteps == (14,)
    assert SCHEDULE.respaced(4).timesteps == (0, 5, 9, 14)
    assert SCHEDULE.respaced(5).timesteps == (0, 4, 7, 11, 14)
    s4 = SCHEDULE.respaced(4)
    assert torch.equal(s4.indices, torch.tensor([0, 5, 9, 14]))
    etas = SCHEDULE.etas
    # the eta of the previous KEPT index stands in for eta_{t-1}
    assert s4.etas_prev[14] == etas[9] and s4.etas_prev[9] == etas[5] and s4.etas_prev[0] == 0
    assert torch.equal(s4.etas, etas)  # the table stays indexed by the original index
    with pytest.raises(ValueError):
        SCHEDULE.respaced(0)
    with pytest.raises(ValueError):
        ResShiftSchedule(timesteps=(3, 2))


def test_a_start_below_t_caps_the_indices():
    # DFOSD on a ResShift prior samples from T_L = start, not T-1; the eta table stays the whole schedule's
    s = ResShiftSchedule(start=11)
    assert s.max_steps == 12 and s.timesteps == tuple(range(12)) and torch.equal(s.etas, SCHEDULE.etas)
    assert s.respaced(1).timesteps == (11,) and s.respaced(3).timesteps == (0, 6, 11)
    assert s.respaced(1).etas_prev[11] == 0  # one step from start: x0_hat itself (k = 1, m = j = 0)
    with pytest.raises(ValueError, match="steps must be in \\[1, 12\\]"):
        s.respaced(13)
    with pytest.raises(ValueError, match="start in"):
        ResShiftSchedule(start=15)
    with pytest.raises(ValueError, match="indices in \\[0, 11\\]"):
        ResShiftSchedule(start=11, timesteps=(3, 12))


# ---------------------------------------------------------------------------- deterministic step


@pytest.mark.parametrize("steps", [15, 4])
def test_deterministic_coefficients(steps):
    schedule = SCHEDULE.respaced(steps)
    k, m, j = deterministic_coefficients(schedule)
    assert torch.allclose(k + m + j, torch.ones_like(k), atol=1e-15)
    # SinSR Eq. 4 written out: k = 1 - eta_{t-1} + sqrt(eta_{t-1} eta_t) - sqrt(eta_{t-1}/eta_t)
    eta, prev = schedule.etas, schedule.etas_prev
    assert torch.allclose(k, 1 - prev + (prev * eta).sqrt() - (prev / eta).sqrt(), atol=1e-15)
    assert (k[0], m[0], j[0]) == (1, 0, 0)


def test_first_index_step_returns_x0_hat():
    x_t, y = _pair()
    x0_hat = torch.randn(x_t.shape, generator=_gen(1), dtype=x_t.dtype)
    t = torch.zeros(2, dtype=torch.long)
    assert torch.equal(deterministic_step(x_t, x0_hat, y, t, SCHEDULE), x0_hat)
    mean, var = posterior_mean_variance(x_t, x0_hat, t, SCHEDULE)
    assert torch.equal(mean, x0_hat) and torch.all(var == 0)


@pytest.mark.parametrize("steps", [15, 4])
def test_deterministic_step_keeps_marginal(steps):
    """With the true x0, one step maps q(x_t|x0,y) with noise eps to q(x_{t-1}|x0,y) with the same eps."""
    schedule = SCHEDULE.respaced(steps)
    x0, y = _pair()
    eps = torch.randn(x0.shape, generator=_gen(2), dtype=x0.dtype)
    kept = schedule.timesteps
    for prev, cur in zip(kept[:-1], kept[1:]):
        t = torch.full((2,), cur)
        x_prev = deterministic_step(q_sample(x0, y, t, eps, schedule), x0, y, t, schedule)
        assert torch.allclose(x_prev, q_sample(x0, y, torch.full((2,), prev), eps, schedule), atol=1e-12)


# ---------------------------------------------------------------------------- forward & posterior


def test_q_sample_statistics():
    n = 20000
    x0, y = (v.expand(n, 1, 4, 4) for v in _pair((1, 1, 4, 4)))
    for i in (0, 7, 14):
        t = torch.full((n,), i)
        x_t = q_sample(x0, y, t, torch.randn(x0.shape, generator=_gen(i), dtype=x0.dtype), SCHEDULE)
        eta = SCHEDULE.etas[i].item()
        std = SCHEDULE.kappa * math.sqrt(eta)
        mean_err = (x_t.mean(0) - (x0[0] + eta * (y[0] - x0[0]))).abs().max()
        assert mean_err < 5 * std / math.sqrt(n)
        assert torch.allclose(x_t.var(0), torch.full_like(x0[0], std**2), rtol=0.05)


def test_prior_and_scale_input():
    noise, y = _pair()
    assert torch.allclose(prior_sample(y, noise, SCHEDULE), y + 2.0 * 0.99 * noise, atol=1e-14)
    t = torch.tensor([0, 14])
    scaled = scale_input(noise, t, SCHEDULE)
    expect = noise / torch.sqrt(4 * SCHEDULE.etas[t] + 1).view(2, 1, 1, 1)
    assert torch.allclose(scaled, expect, atol=1e-14)
    assert scale_input(noise.float(), t, SCHEDULE).dtype == torch.float32


@pytest.mark.parametrize("steps", [15, 4])
def test_posterior_gives_marginal(steps):
    """x_t ~ q(x_t|x0), then x_{t-1} ~ q(x_{t-1}|x_t,x0) has the marginal q(x_{t-1}|x0)."""
    schedule = SCHEDULE.respaced(steps)
    n = 20000
    x0, y = (v.expand(n, 1, 4, 4) for v in _pair((1, 1, 4, 4)))
    g = _gen(3)
    kept = schedule.timesteps
    for prev, cur in [(kept[0], kept[1]), (kept[-2], kept[-1])]:
        t = torch.full((n,), cur)
        x_t = q_sample(x0, y, t, torch.randn(x0.shape, generator=g, dtype=x0.dtype), schedule)
        mean, var = posterior_mean_variance(x_t, x0, t, schedule)
        x_prev = mean + var.sqrt() * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
        eta = schedule.etas[prev].item()
        std = schedule.kappa * math.sqrt(eta)
        assert (x_prev.mean(0) - (x0[0] + eta * (y[0] - x0[0]))).abs().max() < 5 * std / math.sqrt(n)
        assert torch.allclose(x_prev.var(0), torch.full_like(x0[0], std**2), rtol=0.05)


# ---------------------------------------------------------------------------- samplers


def _smooth_model(x0, scale=0.1):
    """A model whose answer depends on its input, index and condition (for non-trivial paths)."""
    def denoiser(x_t, t_index, cond):
        bias = 0 if cond is None or cond[0] is None else cond[0]
        return x0.to(x_t.dtype) + scale * torch.tanh(x_t) * (1 + t_index.view(-1, 1, 1, 1) / 15) + bias
    return denoiser


@pytest.mark.parametrize("sampler", [sample_resshift, sample_deterministic])
@pytest.mark.parametrize("steps", [None, 4])
def test_exact_model_returns_x0(sampler, steps):
    x0, y = _pair(dtype=torch.float32)
    out = _sample(sampler, _exact(x0), y, generator=_gen(4), steps=steps)
    assert torch.equal(out, x0)


@pytest.mark.parametrize("sampler", [sample_resshift, sample_deterministic])
def test_samplers_reproducible(sampler):
    x0, y = _pair(dtype=torch.float32)
    cond = torch.full_like(y, 0.01)
    a = _sample(sampler, _smooth_model(x0), y, generator=_gen(5), lq=cond)
    b = _sample(sampler, _smooth_model(x0), y, generator=_gen(5), lq=cond)
    c = _sample(sampler, _smooth_model(x0), y, generator=_gen(6), lq=cond)
    assert torch.equal(a, b) and not torch.equal(a, c) and a.dtype == torch.float32


def test_deterministic_sampler_uses_noise_only_for_prior():
    x0, y = _pair()
    noise = torch.randn(y.shape, generator=_gen(7), dtype=y.dtype)
    a = _sample(sample_deterministic, _smooth_model(x0), y, noise=noise, generator=_gen(1))
    b = _sample(sample_deterministic, _smooth_model(x0), y, noise=noise, generator=_gen(2))
    assert torch.equal(a, b)


@pytest.mark.parametrize("sampler", [sample_resshift, sample_deterministic])
def test_steps_15_equals_no_respacing(sampler):
    x0, y = _pair()
    a = _sample(sampler, _smooth_model(x0), y, generator=_gen(8))
    b = _sample(sampler, _smooth_model(x0), y, generator=_gen(8), steps=15)
    assert torch.equal(a, b)


@pytest.mark.parametrize("sampler", [sample_resshift, sample_deterministic])
def test_one_step_calls_denoiser_once_at_top_index(sampler):
    x0, y = _pair()
    calls = []

    def denoiser(x_t, t_index, cond):
        calls.append((x_t.clone(), t_index.clone(), cond))
        return x0 + 0.5 * x_t

    lq = object()
    noise = torch.randn(y.shape, generator=_gen(9), dtype=y.dtype)
    out = _sample(sampler, denoiser, y, noise=noise, steps=1, lq=lq)
    assert len(calls) == 1
    x_t, t_index, got_cond = calls[0]
    assert t_index.tolist() == [14, 14] and got_cond[0] is lq and got_cond[1] is y
    assert torch.equal(x_t, prior_sample(y, noise, SCHEDULE))
    assert torch.equal(out, x0 + 0.5 * x_t)


def test_original_indices_and_trajectory():
    x0, y = _pair()
    seen = []

    def denoiser(x_t, t_index, cond):
        seen.append(t_index[0].item())
        return x0

    out, traj = _sample(sample_deterministic, denoiser, y, steps=4, generator=_gen(0), return_trajectory=True)
    assert seen == [14, 9, 5, 0] and len(traj) == 5 and traj[-1] is out


# ---------------------------------------------------------------------------- inversion


@pytest.mark.parametrize("steps", [15, 4])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_inversion_recovers_x_T_with_exact_model(steps, dtype, tol):
    x0, y = _pair(dtype=dtype)
    model = _exact(x0)
    _, traj = _sample(sample_deterministic, model, y, generator=_gen(10), steps=steps, return_trajectory=True)
    # traj[-2] is the state at the first kept index: the last step (m = 0) cannot be undone
    x_T, inv = invert_deterministic(model, traj[-2], SCHEDULE, (None, y), steps=steps, return_trajectory=True)
    assert torch.allclose(x_T, traj[0], atol=tol, rtol=0)
    assert len(inv) == len(traj) - 1
    for a, b in zip(inv, reversed(traj[:-1])):
        assert torch.allclose(a, b, atol=tol, rtol=0)


def test_inversion_of_clean_image_follows_official_convention():
    """x0 itself stands in for x_{t_1}; with the exact model the noise part grows by sqrt(eta_T/eta_1)."""
    x0, y = _pair()
    x_T = invert_deterministic(_exact(x0), x0, SCHEDULE, (None, y))
    etas = SCHEDULE.etas
    residual_1 = -etas[0] * (y - x0)  # x0 - mean of q(x_1 | x0, y)
    expect = x0 + etas[-1] * (y - x0) + (etas[-1] / etas[0]).sqrt() * residual_1
    assert torch.allclose(x_T, expect, atol=1e-10)
    with pytest.raises(ValueError):
        invert_deterministic(_exact(x0), x0, SCHEDULE, (None, y), steps=1)


def test_fixed_point_inversion_with_input_dependent_model():
    x0, y = _pair()
    cond = torch.zeros_like(y)
    model = _smooth_model(x0, scale=0.02)
    _, traj = _sample(sample_deterministic, model, y, generator=_gen(11), lq=cond, return_trajectory=True)
    plain = invert_deterministic(model, traj[-2], SCHEDULE, (cond, y))
    exact = invert_deterministic(model, traj[-2], SCHEDULE, (cond, y), fixed_point_iters=60)
    assert (plain - traj[0]).abs().max() > 1e-3  # DDIM inversion is approximate ...
    assert torch.allclose(exact, traj[0], atol=1e-8)  # ... solving the implicit step is exact


# ---------------------------------------------------------------------------- wrapper and loss


def test_denoiser_wrapper_scales_input():
    seen = {}

    class Backbone(torch.nn.Module):
        def forward(self, x, t_index, lq):
            seen.update(x=x, t=t_index, lq=lq)
            return x * 0

    x_t, lq = _pair()
    t = torch.tensor([3, 11])
    out = ResShiftDenoiser(Backbone(), SCHEDULE)(x_t, t, lq)
    assert torch.equal(seen["x"], scale_input(x_t, t, SCHEDULE))
    assert seen["t"] is t and seen["lq"] is lq and out.shape == x_t.shape


def test_resshift_loss():
    x0, y = _pair()
    loss_fn = ResShiftLoss(SCHEDULE)
    zero = loss_fn(_exact(x0), x0, (None, y), generator=_gen(12))
    assert zero.shape == (2,) and torch.all(zero == 0)
    model = _smooth_model(x0)
    a = loss_fn(model, x0, (0.0, y), generator=_gen(13))
    b = loss_fn(model, x0, (0.0, y), generator=_gen(13))
    assert torch.equal(a, b) and torch.all(a > 0)
    t = torch.tensor([0, 14])
    noise = torch.randn(x0.shape, generator=_gen(14), dtype=x0.dtype)
    got = loss_fn(model, x0, (0.0, y), t_index=t, noise=noise)
    x_t = q_sample(x0, y, t, noise, SCHEDULE)
    assert torch.allclose(got, ((model(x_t, t, (0.0, y)) - x0) ** 2).mean(dim=(1, 2, 3)))
    # uniform t over all T indices
    counts = torch.zeros(15)

    def counting(x_t, t_index, cond):
        counts.index_add_(0, t_index, torch.ones(len(t_index)))
        return x_t

    g = _gen(15)
    for _ in range(200):
        loss_fn(counting, x0, (None, y), generator=g)
    assert counts.sum() == 400 and torch.all(counts > 0)


def test_resshift_loss_perceptual_term():
    """The journal version's MSE + w LPIPS(decode(x0_hat), HR): value, gradient through the decoder, clamp."""
    x0, y = _pair(dtype=torch.float32)
    image = torch.rand(x0.shape, generator=_gen(16))
    gain = torch.ones((), requires_grad=True)

    def model(x_t, t_index, cond):  # x0_hat depends on a parameter, so the gradient path can be checked
        return gain * _smooth_model(x0, scale=2.0)(x_t, t_index, cond)

    decode = lambda z: 0.5 * z  # noqa: E731  (a codec's latent -> image in [-1, 1])
    l1 = lambda sr, hr: (sr - hr).abs().flatten(1).mean(1)  # noqa: E731  (a stand-in perceptual distance)
    t, noise = torch.tensor([0, 14]), torch.randn(x0.shape, generator=_gen(17))
    plain = ResShiftLoss(SCHEDULE)(model, x0, (0.0, y), t_index=t, noise=noise)
    got = ResShiftLoss(SCHEDULE, l1, 0.5, decode)(model, x0, (0.0, y), t_index=t, noise=noise, image=image)
    x0_hat = model(q_sample(x0, y, t, noise, SCHEDULE), t, (0.0, y))
    sr = (decode(x0_hat).clamp(-1, 1) + 1) / 2  # clamped as the official; some values are out of range here
    assert (decode(x0_hat).abs() > 1).any()
    torch.testing.assert_close(got, plain + 0.5 * l1(sr, image))
    (grad_plain,) = torch.autograd.grad(plain.sum(), gain)
    (grad_full,) = torch.autograd.grad(got.sum(), gain)
    assert grad_full != grad_plain  # the perceptual term reaches the network through the decoder
    with pytest.raises(ValueError, match="image="):
        ResShiftLoss(SCHEDULE, l1, 0.5, decode)(model, x0, (0.0, y))


def test_progress_bar_runs():
    x0, y = _pair()
    out = _sample(sample_deterministic, _exact(x0), y, generator=_gen(0), steps=4, progress=True)
    assert torch.equal(out, x0)
    invert_deterministic(_exact(x0), x0, SCHEDULE, (None, y), steps=4, progress=True)


def test_residual_preconditioning_gives_y_at_T_and_x_t_at_1_for_a_zero_net():
    from instantsr.diffusion.resshift import ResShiftDenoiser, skip_scalings

    sched = ResShiftSchedule()
    zero = ResShiftDenoiser(lambda x, t, lq: torch.zeros_like(x), sched, sigma_data=0.25)
    x_t, y = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    top, bottom = torch.full((2,), 14), torch.zeros(2, dtype=torch.long)
    torch.testing.assert_close(zero(x_t, top, (None, y)), y, atol=0.01, rtol=0)  # c_skip(T) ~ 0
    torch.testing.assert_close(zero(x_t, bottom, (None, y)), x_t, atol=0.1, rtol=0.1)  # c_skip(1) ~ 1
    c_skip, c_out = skip_scalings(torch.arange(15), sched, 0.25, torch.zeros(15, 1))
    assert (c_skip.diff(dim=0) < 0).all() and (c_out.diff(dim=0) > 0).all()
    assert float(c_out[-1]) == pytest.approx(0.25, rel=0.01)  # at T the residual's std is all unknown
    with pytest.raises(ValueError, match="needs cond"):
        zero(x_t, top, None)
