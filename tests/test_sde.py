"""The VE, VP and sub-VP processes against simulation, their moment ODEs, and the chains they
are the limits of; the continuous-time loss and its exact minimiser (Chapters 8 and 9)."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from companion import schedules
from companion.distributions import Gaussian, GaussianMixture
from companion.losses import sde_loss
from companion.sde import (SDES, SubVPSDE, VESDE, VPSDE, noise_prediction_from_score, score_from_noise_prediction,
                           time_grid)

pytestmark = pytest.mark.usefixtures("float64")

ALL = [VESDE(), VPSDE(), SubVPSDE()]
IDS = ["ve", "vp", "subvp"]
TIMES = [0.05, 0.3, 0.7, 1.0]


def simulate_forward(sde, x0, t_end, n_steps, generator, g_fn=None):
    """Euler–Maruyama of dx = f(t) x dt + g(t) dW from x0 at time 0."""
    x, dt = x0.clone(), t_end / n_steps
    g_fn = g_fn or (lambda t: float(sde.diffusion(t)))
    for k in range(n_steps):
        t = k * dt
        x = x + sde.drift(x, t) * dt + g_fn(t) * math.sqrt(dt) * torch.randn(x.shape, generator=generator)
    return x


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_forward_simulation_matches_the_perturbation_kernel(sde):
    """From a point x0 = 2 the simulated mean and variance are a(t) x0 and b(t)² of transition(0, t)
    (for VE that is σ(t)² − σ_min², E17): within 5 standard errors (Corollary cor-sde-kernels)."""
    g = torch.Generator().manual_seed(0)
    n, t_end = 40_000, 0.6
    x = simulate_forward(sde, torch.full((n, 1), 2.0), t_end, 600, g)
    a, b = (float(v) for v in sde.transition(0.0, t_end))
    assert abs(float(x.mean()) - 2 * a) < 5 * b / math.sqrt(n) + 2e-3
    assert abs(float(x.var()) / b**2 - 1) < 5 * math.sqrt(2 / n) + 5e-3


def test_ve_with_g_equal_to_dsigma2_dt_has_the_wrong_variance():
    """E17's misprint g = dσ²/dt (no square root) simulates a different process: negative control."""
    sde = VESDE()
    g = torch.Generator().manual_seed(1)
    wrong = simulate_forward(sde, torch.zeros(4000, 1), 0.6, 200, g, g_fn=lambda t: float(sde._g2(torch.tensor(t))))
    b2 = float(sde.transition(0.0, 0.6)[1]) ** 2
    assert abs(float(wrong.var()) / b2 - 1) > 0.5


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_kernel_solves_the_moment_odes(sde):
    """dm/dt = f m, dv/dt = 2 f v + g² integrated numerically give the closed-form a(t) and b(t)²."""

    def rhs(t, y):
        f, g2 = float(sde._f(torch.tensor(t))), float(sde._g2(torch.tensor(t)))
        return [f * y[0], 2 * f * y[1] + g2]

    sol = solve_ivp(rhs, (0, 1), [1.0, 0.0], t_eval=TIMES, rtol=1e-11, atol=1e-13)
    for k, t in enumerate(TIMES):
        a, b = (float(v) for v in sde.transition(0.0, t))
        assert sol.y[0, k] == pytest.approx(a, rel=1e-7)
        assert sol.y[1, k] == pytest.approx(b**2, rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_transitions_compose_into_the_marginal(sde):
    """x_t = a x_s + b z applied to x_s = α(s) x₀ + σ(s) z' must give α(t) and σ(t)."""
    for s, t in [(0.0, 0.4), (0.1, 0.5), (0.5, 1.0)]:
        a, b = sde.transition(s, t)
        alpha_s, std_s = sde.marginal(s)
        alpha_t, std_t = sde.marginal(t)
        assert float(a * alpha_s) == pytest.approx(float(alpha_t), rel=1e-12)
        assert float((a * std_s) ** 2 + b**2) == pytest.approx(float(std_t) ** 2, rel=1e-12)


def test_vp_preserves_unit_variance_and_ve_explodes():
    """E16: with Var[x₀] = 1, VP keeps Var[x_t] = α² + σ² = 1 at every t; VE's grows to σ_max²."""
    vp, ve = VPSDE(), VESDE(0.01, 50.0)
    t = torch.linspace(0, 1, 20)
    alpha, std = vp.marginal(t)
    assert torch.allclose(alpha**2 + std**2, torch.ones(20), atol=1e-12)
    alpha, std = ve.marginal(t)
    assert float(alpha[-1] ** 2 + std[-1] ** 2) == pytest.approx(1 + 50.0**2)


def test_subvp_std_has_no_square_root_and_stays_below_vp():
    vp, sub = VPSDE(), SubVPSDE()
    t = torch.linspace(0.01, 1, 50)
    B = 0.1 * t + 0.5 * 19.9 * t**2
    assert torch.allclose(sub.marginal(t)[1], 1 - torch.exp(-B), rtol=1e-12)
    assert (sub.marginal(t)[1] < vp.marginal(t)[1]).all()
    assert torch.allclose(sub.marginal(t)[0], vp.marginal(t)[0])


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_noise_level_inverse(sde):
    t = torch.tensor([1e-5, 1e-3, 0.2, 0.5, 0.9, 1.0])
    assert torch.allclose(sde.time_of_noise_level(sde.noise_level(t)), t, rtol=1e-9, atol=1e-12)


def test_ve_discretize_is_the_ncsn_chain():
    """Steps i = 0 … N−1 at t_i = i/(N−1) add √(σ_i² − σ_{i−1}²) z with σ geometric from σ_min
    to σ_max and σ_{−1} = 0, so that the chain ends at std σ_max exactly."""
    sde, N = VESDE(0.01, 50.0), 10
    sigmas = [0.01 * (5000 ** (i / (N - 1))) for i in range(N)]
    x = torch.zeros(3, 2)
    total = 0.0
    for i, t in enumerate(torch.linspace(0, 1, N).tolist()):
        f, G = sde.discretize(x, torch.full((3,), t), N)
        expected = math.sqrt(sigmas[i] ** 2 - (sigmas[i - 1] ** 2 if i else 0.0))
        assert torch.all(f == 0) and torch.allclose(G, torch.full((3, 1), expected), rtol=1e-12)
        total += expected**2
    assert total == pytest.approx(50.0**2)


def test_vp_discretize_is_the_ddpm_chain():
    """f = (√(1 − β_i) − 1) x and G = √β_i with β_i linear from β_min/N to β_max/N; the product of
    the (1 − β_i) approaches α(1)² = e^{−B(1)} with an error of order 1/N (−½Σβ_i²)."""
    sde, N = VPSDE(), 1000
    betas = np.linspace(0.1 / N, 20 / N, N)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    for i in [0, 1, 500, 998, 999]:
        t = torch.full((4,), i / (N - 1))
        f, G = sde.discretize(x, t, N)
        assert torch.allclose(x + f, math.sqrt(1 - betas[i]) * x, rtol=1e-12)
        assert torch.allclose(G, torch.full((4, 1), math.sqrt(betas[i])), rtol=1e-12)
    log_alpha2 = 2 * float(sde.marginal(1.0)[0].log())
    gaps = [float(np.log1p(-np.linspace(0.1 / n, 20 / n, n)).sum()) - log_alpha2 for n in (1000, 10_000)]
    assert gaps[0] == pytest.approx(-0.5 * (betas**2).sum(), rel=0.02)
    assert gaps[0] / gaps[1] == pytest.approx(10, rel=0.02)


def test_discretize_index_rounds_instead_of_truncating():
    """t (N−1) computed in floating point lands just below an integer for some t in
    linspace(1, 0, N); truncating it would skip a level and use one level twice."""
    sde, N = VESDE(), 1000
    x = torch.zeros(1, 1)
    Gs = [float(sde.discretize(x, torch.tensor([t]), N)[1]) for t in torch.linspace(1, 0, N).tolist()]
    assert len(set(Gs)) == N


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_time_grids(sde):
    eps = sde.default_eps
    for kind in ("uniform", "geometric", "edm"):
        t = time_grid(sde, 12, kind)
        assert t.shape == (13,) and t[0] == sde.T and t[-1] == eps and (t.diff() < 0).all()
    levels = sde.noise_level(time_grid(sde, 12, "geometric"))
    ratios = levels[1:] / levels[:-1]
    assert torch.allclose(ratios, ratios[0].expand(12), rtol=1e-8)
    levels = sde.noise_level(time_grid(sde, 12, "edm", rho=7.0))
    assert torch.allclose(levels, schedules.edm(float(levels[0]), float(levels[-1]), 13, rho=7.0), rtol=1e-8)
    levels = sde.noise_level(time_grid(sde, 12, "geometric"))
    assert torch.allclose(levels, schedules.geometric(float(levels[0]), float(levels[-1]), 13), rtol=1e-8)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="sigma_max must exceed"):
        VESDE(1.0, 0.5)
    with pytest.raises(ValueError, match="kind"):
        time_grid(VPSDE(), 10, "log")
    with pytest.raises(ValueError, match="eps"):
        time_grid(VPSDE(), 10, eps=1.5)
    with pytest.raises(ValueError, match="lam"):
        VPSDE().reverse(lambda x, t: x, lam=-1.0)
    with pytest.raises(ValueError, match="eps"):
        sde_loss(VPSDE(), lambda x, t: x, torch.zeros(4, 2), eps=2.0)
    assert set(SDES) == {"ve", "vp", "subvp"}


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_exact_marginal_of_a_mixture(sde):
    """GaussianMixture.at(sde, t) and the per-point marginal_score agree, and the score is the
    gradient of marginal_log_prob (autograd)."""
    gm = GaussianMixture([0.7, 0.3], [[2.0, 2.0], [-2.0, -1.0]], [[[0.09, 0.02], [0.02, 0.05]], 0.09 * torch.eye(2)])
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0)) * 2
    t = torch.tensor([1e-3, 0.1, 0.3, 0.5, 0.8, 1.0])
    score = gm.marginal_score(sde)(x, t)
    for k in range(6):
        p_t = gm.at(sde, float(t[k]))
        assert torch.allclose(score[k], p_t.score(x[k]), atol=1e-10)
        assert float(gm.marginal_log_prob(sde, x[k:k + 1], t[k:k + 1])) == pytest.approx(float(p_t.log_prob(x[k])))
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.marginal_log_prob(sde, xg, t).sum(), xg)
    assert torch.allclose(grad, score, atol=1e-10)


def _quadratic_minimiser(sde, score_fn, x, likelihood_weighting):
    """The loss of c·s is a quadratic in c; fit it through c = 0, 1, 2 on the same draws."""
    values = [float(sde_loss(sde, lambda y, t, c=c: c * score_fn(y, t), x, likelihood_weighting=likelihood_weighting,
                             eps=1e-3, generator=torch.Generator().manual_seed(3))) for c in (0.0, 1.0, 2.0)]
    a = (values[2] - 2 * values[1] + values[0]) / 2
    b = values[1] - values[0] - a
    return -b / (2 * a)


@pytest.mark.parametrize("sde", ALL, ids=IDS)
@pytest.mark.parametrize("likelihood_weighting", [False, True])
def test_sde_loss_is_minimised_by_the_exact_score(sde, likelihood_weighting):
    """Among the scaled scores c·∇log p_t the continuous DSM loss is smallest at c = 1 (a wrong σ
    factor or sign in the target would move the minimiser far from 1). Any positive weighting keeps
    the minimiser at 1, so this checks the target along both weightings' code paths; the weights
    themselves are checked exactly in test_errata (E84)."""
    gm = Gaussian(torch.tensor([1.0, -1.0]), torch.tensor([[1.0, 0.3], [0.3, 0.5]]))
    x = gm.sample(200_000, generator=torch.Generator().manual_seed(2))
    c = _quadratic_minimiser(sde, gm.marginal_score(sde), x, likelihood_weighting)
    assert c == pytest.approx(1.0, abs=0.03)


def test_noise_prediction_wrappers():
    """s = −ε̂/σ and back; with σ² weighting the loss of the wrapped noise predictor is DDPM's
    ½‖ε̂ − z‖²."""
    sde = VPSDE()
    gm = Gaussian(torch.zeros(2), torch.eye(2) * 0.5)
    score_fn = gm.marginal_score(sde)
    eps_fn = noise_prediction_from_score(score_fn, sde)
    x, t = torch.randn(5, 2), torch.rand(5)
    assert torch.allclose(score_from_noise_prediction(eps_fn, sde)(x, t), score_fn(x, t), atol=1e-12)
    data = gm.sample(64, generator=torch.Generator().manual_seed(0))
    loss = sde_loss(sde, score_from_noise_prediction(eps_fn, sde), data, generator=torch.Generator().manual_seed(1),
                    reduction="none")
    g = torch.Generator().manual_seed(1)
    t = 1e-5 + (1 - 1e-5) * torch.rand(64, generator=g)
    x_t, z = sde.perturb(data, t, generator=g)
    assert torch.allclose(loss, 0.5 * (eps_fn(x_t, t) - z).square().sum(-1), atol=1e-10)


def test_time_conditioned_adapter_passes_the_kernel_std():
    from companion.nets import NoiseConditionalMLP, TimeConditioned

    sde = VPSDE()
    net = NoiseConditionalMLP(2, hidden=16, depth=1)
    model = TimeConditioned(net, sde)
    x, t = torch.randn(5, 2), torch.rand(5) * 0.9 + 0.05
    assert torch.allclose(model(x, t), net(x, sde.marginal(t)[1]))
    assert torch.allclose(model(x, 0.5)[0], net(x[:1], float(sde.marginal(0.5)[1]))[0])


def test_kernels_and_chains_refuse_times_out_of_order_or_range():
    # A kernel from a later to an earlier time would come out with a > 1 and b clamped to 0.
    with pytest.raises(ValueError, match="s <= t"):
        VPSDE().transition(0.6, 0.4)
    a, b = VPSDE().transition(0.4, 0.6)
    assert 0 < float(a) < 1 and float(b) > 0
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        VESDE().discretize(torch.zeros(3, 2), 1.5, 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_classical_chains_run_on_the_device_of_x():
    for sde in (VESDE(), VPSDE()):
        f, g = sde.discretize(torch.zeros(3, 2, device="cuda"), 0.5, 10)
        assert f.device.type == g.device.type == "cuda"
