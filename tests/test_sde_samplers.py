"""Predictor–corrector and probability-flow samplers, and the exact likelihood, run on the exact
score of a 2-D mixture with unequal weights (Chapter 9).

The mixture's components are far apart (distance ≈ 5, std 0.3), so every sample is assigned to
its component without ambiguity and the check compares, per component, the weight, the mean and
the std with the exact marginal at the final time. A wrong drift sign, a missing g² or the
missing ½ of the ODE moves the std by far more than the tolerance (the negative controls below).
"""

import math

import pytest
import torch

from companion.distributions import Gaussian, GaussianMixture
from companion.ode import bits_per_dim, log_likelihood, ode_sampler
from companion.samplers import langevin_corrector, pc_sampler, predictor_step
from companion.sde import SubVPSDE, VESDE, VPSDE

pytestmark = pytest.mark.usefixtures("float64")

ALL = [VESDE(), VPSDE(), SubVPSDE()]
IDS = ["ve", "vp", "subvp"]
N = 3000
WEIGHTS = (0.7, 0.3)


def mixture():
    return GaussianMixture.isotropic(list(WEIGHTS), [[2.0, 2.0], [-2.0, -1.0]], 0.09)


def mismatch(x, sde, eps):
    """The largest deviation, in units of the tolerance, of (weight, mean, std) per component from
    the exact marginal at eps. ≤ 1 passes. Tolerances: weight ±0.03; mean ±(0.05 + 5 s.e.);
    std within 6 % (a variance error of 12 %)."""
    truth = mixture().at(sde, eps)
    k = truth.responsibilities(x).argmax(-1)
    worst = 0.0
    for j in range(2):
        xj = x[k == j]
        if len(xj) < 2:
            return math.inf
        true_std = float(truth.covs[j, 0, 0]) ** 0.5
        worst = max(worst, abs(len(xj) / len(x) - WEIGHTS[j]) / 0.03)
        mean_tol = 0.05 + 5 * true_std / math.sqrt(max(len(xj), 1))
        worst = max(worst, float((xj.mean(0) - truth.means[j]).abs().max()) / mean_tol)
        worst = max(worst, float((xj.std(0) / true_std - 1).abs().max()) / 0.06)
    return worst


@pytest.mark.parametrize("sde", ALL, ids=IDS)
@pytest.mark.parametrize("predictor,corrector", [
    ("euler_maruyama", None), ("reverse_diffusion", None), ("ancestral", None),
    ("reverse_diffusion", "langevin"), ("euler_maruyama", "ald")])
def test_pc_sampler_recovers_the_mixture(sde, predictor, corrector):
    g = torch.Generator().manual_seed(0)
    x, nfe = pc_sampler(sde, mixture().marginal_score(sde), (N, 2), n_steps=400, predictor=predictor,
                        corrector=corrector, snr=0.1, denoise=False, generator=g, dtype=torch.float64)
    assert nfe == 400 * (2 if corrector else 1)
    assert mismatch(x, sde, sde.default_eps) <= 1


@pytest.mark.parametrize("sde", ALL, ids=IDS)
@pytest.mark.parametrize("method", ["euler", "heun", "dpm2m", "rk45", "scipy-rk45"])
def test_ode_sampler_recovers_the_mixture(sde, method):
    g = torch.Generator().manual_seed(0)
    x, nfe = ode_sampler(sde, mixture().marginal_score(sde), (N, 2), method=method, n_steps=100, grid="geometric",
                         rtol=1e-4, atol=1e-4, generator=g, dtype=torch.float64)
    if method in ("euler", "dpm2m"):
        assert nfe == 100
    elif method == "heun":
        assert nfe == 200
    assert mismatch(x, sde, sde.default_eps) <= 1


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_wrong_drifts_fail_the_check(sde):
    """Negative controls. Half the score (a missing factor 2 in g² s) and a reverse step that
    ignores the score and follows the forward drift (seed 004's sampler, E73) both fail; so does
    the probability-flow ODE without its ½ (a score twice too large)."""
    score = mixture().marginal_score(sde)
    g = torch.Generator().manual_seed(0)
    half, _ = pc_sampler(sde, lambda x, t: 0.5 * score(x, t), (N, 2), n_steps=400, predictor="euler_maruyama",
                         corrector=None, denoise=False, generator=g, dtype=torch.float64)
    no_score, _ = pc_sampler(sde, lambda x, t: torch.zeros_like(x), (N, 2), n_steps=400, predictor="euler_maruyama",
                             corrector=None, denoise=False, generator=g, dtype=torch.float64)
    no_half, _ = ode_sampler(sde, lambda x, t: 2 * score(x, t), (N, 2), method="heun", n_steps=50, grid="geometric",
                             generator=g, dtype=torch.float64)
    for x in (half, no_score, no_half):
        assert mismatch(x, sde, sde.default_eps) > 3


@pytest.mark.parametrize("lam,ok", [(0.0, True), (0.5, True), (1.0, True), ("noise dropped", False)])
def test_the_lambda_family_shares_the_marginals(lam, ok):
    """E72: dx = [f − ½(1 + λ²) g² s] dt + λ g dW̄ ends with the variance s₀² + σ_min² for every λ
    (VE, Gaussian data, exact score); the reverse SDE with its noise dropped, dx = [f − g² s] dt,
    ends with a much smaller one."""
    sde, s0 = VESDE(0.01, 20.0), 0.5
    data = Gaussian(torch.zeros(1), torch.full((1, 1), s0**2))
    score = data.marginal_score(sde)
    if ok:
        rev = sde.reverse(score, lam=lam)
        drift, diff = rev.drift, lambda t: float(rev.diffusion(t))
    else:
        drift, diff = sde.reverse(score).drift, lambda t: 0.0
    g = torch.Generator().manual_seed(0)
    x = sde.prior_sample((20_000, 1), generator=g) * math.sqrt(1 + s0**2 / 20.0**2)
    ts = torch.linspace(1, 1e-5, 1001).tolist()
    for t, t_next in zip(ts[:-1], ts[1:]):
        h = t - t_next
        x = x - drift(x, torch.full((len(x),), t)) * h + diff(t) * math.sqrt(h) * torch.randn(x.shape, generator=g)
    target = s0**2 + float(sde.marginal(1e-5)[1]) ** 2
    if ok:
        assert float(x.var()) == pytest.approx(target, rel=0.03)
    else:
        assert float(x.var()) < 0.5 * target


def test_ancestral_and_reverse_diffusion_match_the_reference_formulas():
    """VE: ancestral x + (σ_i² − σ_{i−1}²) s + √(σ_{i−1}²(σ_i² − σ_{i−1}²)/σ_i²) z; reverse diffusion
    x + (σ_i² − σ_{i−1}²) s + √(σ_i² − σ_{i−1}²) z. VP: ancestral (x + β s)/√(1 − β) with
    1 − β = α(t)²/α(t_next)²."""
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    score = mixture().marginal_score(VESDE())
    ve, t, t_next = VESDE(), 0.5, 0.45
    si, sj = float(ve.marginal(t)[1]), float(ve.marginal(t_next)[1])
    s = score(x, torch.full((8,), t))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    got, _ = predictor_step("ancestral", ve, score, x, t, t_next, torch.Generator().manual_seed(1))
    assert torch.allclose(got, x + (si**2 - sj**2) * s + math.sqrt(sj**2 * (si**2 - sj**2) / si**2) * z)
    got, _ = predictor_step("reverse_diffusion", ve, score, x, t, t_next, torch.Generator().manual_seed(1))
    assert torch.allclose(got, x + (si**2 - sj**2) * s + math.sqrt(si**2 - sj**2) * z)
    vp = VPSDE()
    score = mixture().marginal_score(vp)
    beta = 1 - float(vp.marginal(t)[0] / vp.marginal(t_next)[0]) ** 2
    _, mean = predictor_step("ancestral", vp, score, x, t, t_next)
    assert torch.allclose(mean, (x + beta * score(x, torch.full((8,), t))) / math.sqrt(1 - beta))


def test_vp_ancestral_and_reverse_diffusion_agree_to_second_order():
    """DDPM's ancestral mean (x + β s)/√(1 − β) and the reverse-diffusion mean (2 − √(1 − β)) x + β s
    differ by O(β²): halving the step quarters the gap."""
    vp = VPSDE()
    score = mixture().marginal_score(vp)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    gaps = []
    for h in (0.02, 0.01, 0.005):
        a = predictor_step("ancestral", vp, score, x, 0.5, 0.5 - h)[1]
        b = predictor_step("reverse_diffusion", vp, score, x, 0.5, 0.5 - h)[1]
        gaps.append(float((a - b).norm()))
    assert gaps[0] / gaps[1] == pytest.approx(4, rel=0.1)
    assert gaps[1] / gaps[2] == pytest.approx(4, rel=0.1)


def test_langevin_corrector_step_follows_the_snr_rule():
    """ε = 2 α (r ‖z‖/‖s‖)² with the norms averaged over the batch, then x + ε s + √(2ε) z."""
    sde = VESDE()
    score = mixture().marginal_score(sde)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0)) * 3
    got, mean = langevin_corrector(sde, score, x, 0.3, snr=0.16, alpha=0.9, generator=torch.Generator().manual_seed(5))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    s = score(x, torch.full((16,), 0.3))
    step = 2 * 0.9 * (0.16 * z.norm(dim=-1).mean() / s.norm(dim=-1).mean()) ** 2
    assert torch.allclose(mean, x + step * s) and torch.allclose(got, mean + (2 * step).sqrt() * z)


def _endpoint_errors(method, grid, ns):
    sde = VESDE(0.01, 50.0)
    score = mixture().marginal_score(sde)
    x0 = sde.prior_sample((128, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref, _ = ode_sampler(sde, score, x0, method="scipy-rk45", rtol=1e-10, atol=1e-10)
    return [float((ode_sampler(sde, score, x0, method=method, n_steps=n, grid=grid)[0] - ref).abs().mean()) for n in ns]


@pytest.mark.parametrize("method,order,ns", [("euler", 1, (40, 80)), ("heun", 2, (40, 80)), ("dpm2m", 2, (40, 80))])
def test_ode_solvers_converge_at_their_order(method, order, ns):
    """Doubling the steps divides the endpoint error by about 2^order."""
    e = _endpoint_errors(method, "geometric", ns)
    assert math.log2(e[0] / e[1]) == pytest.approx(order, abs=0.35)


def test_rk45_matches_the_scipy_reference():
    sde = VPSDE()
    score = mixture().marginal_score(sde)
    x0 = sde.prior_sample((64, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref, _ = ode_sampler(sde, score, x0, method="scipy-rk45", rtol=1e-10, atol=1e-10)
    x, nfe = ode_sampler(sde, score, x0, method="rk45", rtol=1e-6, atol=1e-6)
    assert float((x - ref).abs().max()) < 1e-4 and 20 < nfe < 500


@pytest.mark.parametrize("sde", [VESDE(0.01, 20.0), VPSDE()], ids=["ve", "vp"])
def test_log_likelihood_matches_the_exact_density(sde):
    """With the exact score and the exact p_T, log p_eps(x) from the ODE equals the mixture's
    log-density at eps within 0.01 nats per sample on average."""
    gm = mixture()
    x = gm.sample(100, generator=torch.Generator().manual_seed(0))
    log_p, nfe = log_likelihood(sde, gm.marginal_score(sde), x, rtol=1e-6, atol=1e-6,
                                prior_log_prob=lambda z: gm.marginal_log_prob(sde, z, sde.T))
    exact = gm.marginal_log_prob(sde, x, sde.default_eps)
    assert float((log_p - exact).abs().mean()) < 0.01
    assert nfe > 0


def test_hutchinson_log_likelihood_is_unbiased():
    """One probe per copy of each point; the average over 200 copies matches the exact trace
    within 4 standard errors."""
    sde, gm = VPSDE(), mixture()
    x = gm.sample(3, generator=torch.Generator().manual_seed(0))
    exact, _ = log_likelihood(sde, gm.marginal_score(sde), x, rtol=1e-5, atol=1e-5)
    reps = 200
    est, _ = log_likelihood(sde, gm.marginal_score(sde), x.repeat_interleave(reps, 0), trace="hutchinson",
                            rtol=1e-5, atol=1e-5, generator=torch.Generator().manual_seed(1))
    est = est.reshape(3, reps)
    se = est.std(1) / math.sqrt(reps)
    assert ((est.mean(1) - exact).abs() < 4 * se + 1e-3).all()
    assert (est.std(1) > 0).all()  # the probes do vary


def test_bits_per_dim_of_uniform_data():
    """Uniform dequantised data on [0, 1]^D has log p = 0, i.e. 8 bits per dimension for 256
    levels; the same data scaled to [−1, 1] has log p = −D log 2 and the same 8 bits."""
    d = 784
    assert float(bits_per_dim(torch.zeros(1), d)) == pytest.approx(8.0)
    assert float(bits_per_dim(torch.full((1,), -d * math.log(2)), d, data_range=2.0)) == pytest.approx(8.0)


def test_sampler_arguments_are_checked():
    sde = VPSDE()
    score = mixture().marginal_score(sde)
    with pytest.raises(ValueError, match="predictor"):
        pc_sampler(sde, score, (4, 2), predictor="euler")
    with pytest.raises(ValueError, match="shape_or_x"):
        pc_sampler(sde, score, (4, -2))
    with pytest.raises(ValueError, match="method"):
        ode_sampler(sde, score, (4, 2), method="rk4")
    with pytest.raises(ValueError, match="trace"):
        log_likelihood(sde, score, torch.zeros(4, 2), trace="skilling")
