"""Guards for the entries of the "Pitfalls and errata" appendix (book/pitfalls.md) that no other
test covers.

Each test is named after the erratum it guards (test_eNN_… for the audited list E01–E85, test_nN_…
for the additions N1, N2, …) and fails if the package or the book makes that mistake. Most call
`companion` and compare with exact or closed-form answers; the few errata that concern only the
wording or notation of prose are guarded by checks of the book's Markdown sources, which look for the
specific wrong formula or the specific right one.
"""

import inspect
import math
import re
from pathlib import Path

import pytest
import torch

from companion import losses, samplers, schedules
from companion.distributions import Gaussian, GaussianMixture
from companion.nets import NoiseConditionalMLP
from companion.ode import log_likelihood, ode_sampler
from companion.refinenet import CondInstanceNormPlus
from companion.scores import autograd_score
from companion.sde import VESDE, VPSDE, SubVPSDE, time_grid

BOOK = Path(__file__).resolve().parent.parent / "book"
F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def chapter(name):
    return (BOOK / f"{name}.md").read_text(encoding="utf-8")


def all_chapters():
    """Every page of the book except the errata appendix, which quotes the mistakes on purpose."""
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(BOOK.glob("*.md")) if p.stem != "pitfalls"}


# --- seed 000 -----------------------------------------------------------------------------------


def test_e02_langevin_takes_a_score_of_x_alone():
    """E02: Langevin iterations are not diffusion time: ULA calls s(x), with no time argument."""
    calls = []

    def spy(x, *rest):
        calls.append(len(rest))
        return -x

    x0 = torch.zeros(8, 2, dtype=F64)
    samplers.langevin(spy, x0, 0.1, 5, generator=gen(0))
    assert calls == [0] * 5
    with pytest.raises(TypeError):  # a time-conditional model cannot be passed by mistake
        samplers.langevin(lambda x, t: -x, x0, 0.1, 1, generator=gen(0))


def test_e04_the_book_never_writes_exp_as_a_power():
    """E04: the notation exp^{−f} is wrong; the book writes exp(−f) or e^{−f}."""
    for name, text in all_chapters().items():
        assert not re.search(r"\\exp\s*\^", text), f"{name}.md writes \\exp^"
        assert "exp^" not in text, f"{name}.md writes exp^"
    assert r"e^{-" in chapter("score-functions")


def test_e06_exact_trace_takes_one_backward_pass_per_dimension(monkeypatch):
    """E06: the exact Jacobian trace costs D vector–Jacobian products, not D² (no full Jacobian stored)."""
    d = 6
    A = torch.randn(d, d, generator=gen(1), dtype=F64)
    x = torch.randn(5, d, generator=gen(2), dtype=F64)
    count = {"n": 0}
    grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        count["n"] += 1
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    tr = losses.jacobian_trace(lambda y: torch.tanh(y @ A.T), x, method="loop")
    assert count["n"] == d
    # tr J for s(y) = tanh(A y) is Σ_i (1 − tanh²(A y)_i) A_ii
    expected = ((1 - torch.tanh(x @ A.T) ** 2) * A.diagonal()).sum(-1)
    torch.testing.assert_close(tr, expected, rtol=1e-12, atol=1e-12)


# --- seed 001 -----------------------------------------------------------------------------------


def test_e12_forward_sde_is_written_with_dt():
    """E12: the forward SDE is dx = f(x, t) dt + g(t) dw, never f(x, t) dx."""
    pattern = re.compile(r"f\(x,\s*t\)\s*(\\,|\\;|\s)*\\mathrm\{d\}x\b")
    for name, text in all_chapters().items():
        assert not pattern.search(text), f"{name}.md multiplies the drift by dx"
    assert r"\mathrm{d}x = f(x, t)\,\mathrm{d}t + g(t)\,\mathrm{d}w" in chapter("sde-chains")


def test_e13_forward_transition_density_has_a_negative_exponent():
    """E13: p(x_{t+Δt} | x_t) ∝ exp(−‖Δx − fΔt‖²/(2g²Δt)); the minus sign must not be lost."""
    text = chapter("reverse-sde")
    square = r"\frac{\lVert \Delta x - f\Delta t\rVert^2}{2g^2\Delta t}"
    positions = [m.start() for m in re.finditer(re.escape(square), text)]
    assert positions, "the heuristic derivation of the reverse SDE should write the Gaussian exponent"
    for pos in positions:
        before = text[max(0, pos - 12):pos].rstrip()
        assert before.endswith("-"), f"exponent without its minus sign: …{text[pos - 40:pos + 60]}…"


def test_n1_vp_diffusion_is_the_square_root_of_beta():
    """N1: the VP SDE has g(t) = √β(t), so that dv/dt = −βv + g² keeps unit variance; g = β does not."""
    sde = VPSDE()
    t = torch.linspace(0.0, 1.0, 11, dtype=F64)
    torch.testing.assert_close(sde.diffusion(t), sde.beta(t).sqrt(), rtol=1e-14, atol=0)
    # variance of x_t for unit-variance data: v' = −β v + g² must vanish at v = 1 for every t
    g2 = sde.diffusion(t) ** 2
    torch.testing.assert_close(-sde.beta(t) * 1.0 + g2, torch.zeros_like(t), rtol=0, atol=1e-12)
    alpha, std = sde.marginal(t)
    torch.testing.assert_close(alpha**2 + std**2, torch.ones_like(t), rtol=0, atol=1e-12)
    assert (-sde.beta(t) + sde.beta(t) ** 2).abs().max() > 1.0  # the misprint g = β breaks it


def test_n2_ncsn_chain_step_i_ends_at_time_i_over_n():
    """N2: x_i (i = 1..N) sits at t = i/N, so x_N is at t = 1; the times {0, …, (N−1)/N} index the step's start."""
    sde, n = VESDE(0.01, 50.0), 20
    times = [i / n for i in range(n + 1)]
    std = [float(sde.marginal(t)[1]) for t in times]
    variance = 0.0  # variance of x_i − x_0, adding the chain's independent increments one by one
    for i in range(1, n + 1):
        variance += std[i] ** 2 - std[i - 1] ** 2
        assert variance == pytest.approx(float(sde.transition(0.0, times[i])[1]) ** 2, rel=1e-12)
    assert math.sqrt(variance + std[0] ** 2) == pytest.approx(sde.sigma_max, rel=1e-12)  # x_N at t = 1
    # reading x_N at t = (N − 1)/N, as the misindexed limit does, misses the last level by a factor
    assert float(sde.marginal((n - 1) / n)[1]) < 0.7 * sde.sigma_max
    text = chapter("sde-chains")
    assert "t_i = i/N" in text and "i = 1, \\dots, N" in text


# --- seed 002 -----------------------------------------------------------------------------------


def test_e30_ncsn_loss_is_half_sigma_s_plus_z_squared_for_any_batch_size():
    """E30: ncsn_loss weights by σ² (½‖σ s + z‖²), accepts a batch of one, and refuses ascending σ."""
    torch.manual_seed(3)
    net = NoiseConditionalMLP(3, hidden=16, depth=2).double()
    sigmas = schedules.geometric(5.0, 0.05, 4)
    for batch in (1, 7):
        x = torch.randn(batch, 3, generator=gen(4 + batch), dtype=F64)
        seen = []

        def spy(y, sigma):
            seen.append((y.detach().clone(), sigma.detach().clone()))
            return net(y, sigma)

        with torch.no_grad():
            per_sample = losses.ncsn_loss(spy, x, sigmas, generator=gen(5), reduction="none")
        (y, sigma), = seen
        assert per_sample.shape == (batch,)
        assert all(float(s) in sigmas.tolist() for s in sigma)
        z = (y - x) / sigma[:, None]
        with torch.no_grad():
            expected = 0.5 * (sigma[:, None] * net(y, sigma) + z).square().sum(-1)
        torch.testing.assert_close(per_sample, expected, rtol=1e-12, atol=1e-12)
        with torch.no_grad():  # λ = σ would leave a factor σ behind
            assert (per_sample - expected / sigma).abs().max() > 1e-3
    with pytest.raises(ValueError, match="decreasing"):
        losses.ncsn_loss(net, x, sigmas.flip(0))


def test_e37_ald_is_not_annealed_importance_sampling():
    """E37: the book must say ALD carries no importance weights and has no finite-time guarantee."""
    text = chapter("annealed-langevin")
    assert "not annealed importance sampling" in text
    assert "no finite-time" in text
    assert re.search(r"importance weight", text)
    assert not re.search(r"(theoretical basis|justified by|is a form of) annealed importance sampling", text)


def test_e39_noise_embedding_separates_nearby_small_levels():
    """E39: the noise-conditional MLP embeds log σ, so σ = 0.01 and 0.02 are as distinct as σ = 1 and 2."""
    net = NoiseConditionalMLP(2, hidden=8, depth=1).double()
    captured = []
    net.net.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().clone()))
    x = torch.zeros(1, 2, dtype=F64)
    for s in (0.01, 0.02, 1.0, 2.0):
        net(x, torch.tensor([s], dtype=F64))
    feats = [c[0, 2:] for c in captured]  # the Fourier features of the level
    small, large = (feats[1] - feats[0]).norm(), (feats[3] - feats[2]).norm()
    assert small > 0.5  # a raw-σ embedding would put 0.01 and 0.02 about 0.01 apart
    # sin/cos pairs of log σ: the distance depends only on the ratio of the two levels
    assert float(small) == pytest.approx(float(large), rel=1e-12)
    # the output is divided by σ (technique 3): σ · s(x, σ) is the bare network on [x, features(σ)]
    with torch.no_grad():
        y = torch.randn(4, 2, generator=gen(6), dtype=F64)
        sigma = torch.full((4,), 0.5, dtype=F64)
        captured.clear()
        out = net(y, sigma)
        torch.testing.assert_close(out * 0.5, net.net(captured[0]), rtol=1e-12, atol=1e-12)


def test_e40_cond_instance_norm_plus_starts_as_instance_norm_plus():
    """E40: at initialisation γ ≈ 1, α ≈ 1 and β = 0 for every level, so CIN++ ≈ IN(x) + μ̃."""
    torch.manual_seed(7)
    channels, levels = 16, 10
    norm = CondInstanceNormPlus(channels, levels)
    gamma, alpha, beta = norm.embed.weight.detach().view(levels, 3, channels).unbind(1)
    assert (gamma - 1).abs().max() < 0.15 and (alpha - 1).abs().max() < 0.15
    assert float(gamma.std()) < 0.05 and float(alpha.std()) < 0.05
    assert beta.abs().max() == 0
    x = 3 * torch.randn(4, channels, 6, 6) + torch.randn(1, channels, 1, 1)
    means = x.mean(dim=(2, 3))
    mu = (means - means.mean(-1, keepdim=True)) / (means.var(-1, keepdim=True) + 1e-5).sqrt()
    reference = torch.nn.functional.instance_norm(x, eps=1e-5) + mu[..., None, None]
    with torch.no_grad():
        out = norm(x, torch.randint(0, levels, (4,), generator=gen(8)))
    assert (out - reference).abs().max() < 0.15 * reference.abs().max()


def test_e45_annealed_langevin_has_no_device_default_and_keeps_dtype():
    """E45: the sampler takes its device and dtype from x (no 'cuda' default) and accepts tensor σ's."""
    assert "device" not in inspect.signature(samplers.annealed_langevin).parameters
    sigmas = torch.tensor([1.0, 0.5, 0.1], dtype=F64)
    for dtype in (torch.float32, F64):
        x = torch.rand(16, 2, generator=gen(9)).to(dtype)
        out = samplers.annealed_langevin(lambda y, s: -y / (1 + s[:, None] ** 2), x, sigmas, step_lr=1e-3,
                                         n_steps_each=3, generator=gen(10))
        assert out.dtype == dtype and out.device == x.device and torch.isfinite(out).all()


def test_e55_exercise_step_rule_diverges_and_the_ncsn_rule_samples():
    """E55: α_i = 0.1 (σ_i/σ_L)² diverges at the first level; step_lr = 1e-5 at σ_L = 0.01 follows the exact recursion."""
    sigmas = schedules.geometric(10.0, 0.01, 10)
    n_steps, step_lr = 100, 1e-5

    def score(x, sigma):  # exact score of N(0, 1) perturbed at σ
        return -x / (1 + sigma[:, None] ** 2)

    x0 = 20 * torch.rand(20_000, 1, generator=gen(11), dtype=F64) - 10
    with pytest.raises(ValueError, match="NaN or infinite"):
        samplers.annealed_langevin(score, x0, sigmas, step_lr=0.1, n_steps_each=n_steps, generator=gen(12))
    x = samplers.annealed_langevin(score, x0, sigmas, step_lr=step_lr, n_steps_each=n_steps, generator=gen(12))
    # Gaussian chain: v <- (1 - α_i/(1 + σ_i²))² v + 2 α_i with α_i = step_lr σ_i²/σ_L², from Var U(-10, 10)
    v = 100 / 3
    for sigma in sigmas.tolist():
        alpha = step_lr * (sigma / 0.01) ** 2
        for _ in range(n_steps):
            v = (1 - alpha / (1 + sigma**2)) ** 2 * v + 2 * alpha
    se = v * math.sqrt(2 / len(x))
    assert abs(float(x.var()) - v) < 4 * se
    assert abs(v - 1) < 0.15  # close to the target N(0, 1 + σ_L²): finite and nearly unbiased
    assert abs(float(x.mean())) < 0.05


def test_e59_bibliography_keeps_ncsn_and_the_score_sde_apart():
    """E59: NCSN is Song & Ermon (NeurIPS 2019), the score SDE Song et al. (ICLR 2021); every citation resolves."""
    bib = (BOOK / "references.bib").read_text(encoding="utf-8")
    entries = {m.group(1): m.group(2) for m in re.finditer(r"@\w+\{(\w+),(.*?)\n\}", bib, flags=re.S)}
    ncsn, sde = entries["song2019ncsn"], entries["song2021sde"]
    assert "Estimating Gradients of the Data Distribution" in ncsn and re.search(r"year\s*=\s*\{2019\}", ncsn)
    assert "Stochastic Differential Equations" in sde and re.search(r"year\s*=\s*\{2021\}", sde)
    for name, text in all_chapters().items():
        for keys in re.findall(r"\{cite:[a-z]+\}`([^`]+)`", text):
            for key in keys.split(","):
                assert key.strip() in entries, f"{name}.md cites {key.strip()!r}, which is not in references.bib"
        for key in re.findall(r"(?:NCSN|[Nn]oise-conditional score networks) \{cite:[pt]\}`([^`]+)`", text):
            assert key == "song2019ncsn", f"{name}.md cites {key} for NCSN"


def test_e60_taylor_remainder_and_the_descent_step_in_the_book():
    """E60: after the second-order term the remainder is o(‖h‖²) (not o(ε³)), and descent steps are η > 0."""
    for name, text in all_chapters().items():
        assert not re.search(r"o\(\\?(varepsilon|epsilon|eta|h)\^3\)", text), f"{name}.md: o(·³) remainder"
    text = chapter("langevin")
    assert r"\tfrac{1}{2} h^\top \nabla^2 f(x)\, h + o(\|h\|^2)" in text
    assert r"x_{k+1} = x_k - \eta \nabla U(x_k)" in text and r"\eta > 0" in text


# --- seed 004 -----------------------------------------------------------------------------------


def test_e75_edm_grid_takes_its_smallest_steps_at_low_noise():
    """E75: steps must shrink towards σ_min (EDM ρ = 7 and the time grids), never grow there."""
    sigmas = schedules.edm(80.0, 0.002, 40)
    gaps = -sigmas.diff()
    assert (gaps > 0).all() and (gaps.diff() < 0).all()  # strictly smaller steps as σ decreases
    assert float(gaps[-1]) < 1e-3 * float(gaps[0])
    for sde in (VESDE(), VPSDE()):
        levels = sde.noise_level(time_grid(sde, 30, "edm"))
        steps = -levels.diff()
        assert (steps > 0).all() and (steps.diff() < 0).all()


def test_e76_bayes_optimal_discriminator_corrects_the_model_score():
    """E76: with D = p/(p + q), s_q + ∇log(D/(1 − D)) equals the data score s_p exactly."""
    t = lambda v: torch.tensor(v, dtype=F64)  # noqa: E731
    p = GaussianMixture.isotropic(t([0.7, 0.3]), t([[2.0, 0.0], [-2.0, 1.0]]), t([0.5, 1.0]))
    q = GaussianMixture.isotropic(t([0.5, 0.5]), t([[1.5, 0.5], [-1.0, 1.0]]), t([0.8, 0.6]))
    x = 3 * torch.randn(200, 2, generator=gen(13), dtype=F64)

    def logit(y):
        d = torch.sigmoid(p.log_prob(y) - q.log_prob(y))  # the Bayes-optimal discriminator
        return d.log() - torch.log1p(-d)

    corrected = q.score(x) + autograd_score(logit)(x)
    torch.testing.assert_close(corrected, p.score(x), rtol=1e-6, atol=1e-6)
    assert (q.score(x) + autograd_score(lambda y: torch.sigmoid(p.log_prob(y) - q.log_prob(y)))(x)
            - p.score(x)).abs().max() > 0.1  # using D itself as a "score" does not


def test_e77_every_predictor_runs_from_the_sde_prior():
    """E77: every advertised predictor and corrector runs, and the start is drawn from the SDE's own prior."""
    for sde in (VESDE(0.01, 50.0), VPSDE(), SubVPSDE()):
        x_T = samplers.initial_state(sde, (20_000, 2), generator=gen(14), dtype=F64)
        assert float(x_T.std()) == pytest.approx(sde.prior_std, rel=0.02)
    assert VESDE(0.01, 50.0).prior_std == 50.0 and VPSDE().prior_std == 1.0
    sde = VESDE(0.01, 5.0)
    score = Gaussian(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64)).marginal_score(sde)
    for predictor in samplers.PREDICTORS:
        for corrector in (None, *samplers.CORRECTORS):
            x, nfe = samplers.pc_sampler(sde, score, (64, 2), n_steps=10, predictor=predictor, corrector=corrector,
                                         generator=gen(15), dtype=F64)
            assert torch.isfinite(x).all() and nfe == 10 * (2 if corrector else 1) + 1
    for method in ("euler", "heun", "dpm2m"):
        x, nfe = ode_sampler(sde, score, (64, 2), method=method, n_steps=10, generator=gen(16), dtype=F64)
        assert torch.isfinite(x).all() and nfe == 10 * (2 if method == "heun" else 1)


def test_e81_sde_samplers_call_the_score_with_x_and_t():
    """E81: SDE samplers evaluate s(x, t) with t a [batch] tensor of times in [eps, T]; s(x) alone is refused."""
    sde = VPSDE()
    exact = Gaussian(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64)).marginal_score(sde)
    seen = []

    def spy(x, t):
        seen.append(t)
        return exact(x, t)

    samplers.pc_sampler(sde, spy, (8, 2), n_steps=5, generator=gen(17), dtype=F64)
    ode_sampler(sde, spy, (8, 2), method="heun", n_steps=5, generator=gen(18), dtype=F64)
    for t in seen:
        assert isinstance(t, torch.Tensor) and t.shape == (8,)
        assert float(t.min()) >= sde.default_eps - 1e-12 and float(t.max()) <= sde.T
    assert len({round(float(t[0]), 9) for t in seen}) > 5  # the time changes along the trajectory
    for sample in (lambda s: samplers.pc_sampler(sde, s, (8, 2), n_steps=2, generator=gen(19), dtype=F64),
                   lambda s: ode_sampler(sde, s, (8, 2), method="euler", n_steps=2, generator=gen(19), dtype=F64),
                   lambda s: log_likelihood(sde, s, torch.zeros(2, 2, dtype=F64))):
        with pytest.raises(ValueError, match=r"score_fn must take \(x, t\)"):
            sample(lambda x: -x)


# --- cross-seed ---------------------------------------------------------------------------------


def test_e84_default_weightings_are_sigma_squared():
    """E84: ncsn_loss and sde_loss weight by σ² unless told otherwise (g² with likelihood weighting)."""
    torch.manual_seed(20)
    net = NoiseConditionalMLP(2, hidden=16, depth=2).double()
    x = torch.randn(64, 2, generator=gen(21), dtype=F64)
    sigmas = schedules.geometric(3.0, 0.03, 5)
    with torch.no_grad():
        default = losses.ncsn_loss(net, x, sigmas, generator=gen(22), reduction="none")
        sigma2 = losses.ncsn_loss(net, x, sigmas, weighting="sigma2", generator=gen(22), reduction="none")
        flat = losses.ncsn_loss(net, x, sigmas, weighting="none", generator=gen(22), reduction="none")
    torch.testing.assert_close(default, sigma2, rtol=0, atol=0)
    assert (default - flat).abs().max() > 1e-2
    sde = VESDE(0.01, 5.0)
    model = Gaussian(torch.zeros(2, dtype=F64), 0.5 * torch.eye(2, dtype=F64)).marginal_score(sde)
    for likelihood_weighting in (False, True):
        seen = []

        def spy(y, t):
            seen.append((y.clone(), t.clone()))
            return model(y, t)

        per_sample = losses.sde_loss(sde, spy, x, likelihood_weighting=likelihood_weighting, generator=gen(23),
                                     reduction="none")
        (y, t), = seen
        alpha, std = sde.marginal(t)
        z = (y - alpha[:, None] * x) / std[:, None]
        weight = sde.diffusion(t) ** 2 if likelihood_weighting else std**2
        expected = 0.5 * weight * (model(y, t) + z / std[:, None]).square().sum(-1)
        torch.testing.assert_close(per_sample, expected, rtol=1e-10, atol=1e-12)
