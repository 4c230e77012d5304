"""Tests of companion.exercises: every checker passes a correct implementation and fails at least
two typical wrong ones with the specific hint; bad inputs raise ValueError; a misbehaving student
function is a FAIL, never an exception."""

import math

import pytest
import torch

from companion import exercises as ex

# name -> (checker keyword arguments, correct implementations, [(wrong implementation, hint substring)])
CASES = {}


def case(name, correct, wrongs, **kwargs):
    CASES[name] = (kwargs, correct if isinstance(correct, list) else [correct], wrongs)


def checker_of(name):
    return getattr(ex, name.split("[")[0])


# -- Chapter 1 -----------------------------------------------------------------------------------


def ula(x, score_fn, eps, z):
    return x + eps * score_fn(x) + math.sqrt(2 * eps) * z


def ula_in_place(x, score_fn, eps, z):
    x += eps * score_fn(x) + math.sqrt(2 * eps) * z
    return x


case("check_langevin_step", ula, [
    (lambda x, s, e, z: x - e * s(x) + math.sqrt(2 * e) * z, "moves against the score"),
    (lambda x, s, e, z: x + e * s(x) + math.sqrt(e) * z, "sqrt(eps) instead of sqrt(2 eps)"),
    (lambda x, s, e, z: x + e / 2 * s(x) + math.sqrt(e) * z, "alpha/2"),
    (lambda x, s, e, z: x + e * s(x), "no noise"),
    (ula_in_place, "in place"),
])

case("check_tempered_variance", lambda lam, e, v: lam**2 * v / (1 - e / (2 * v)), [
    (lambda lam, e, v: lam**2 * v, "continuous-time"),
    (lambda lam, e, v: v / (1 - e / (2 * v)), "does not depend on lam"),
    (lambda lam, e, v: lam * v / (1 - e / (2 * v)), "squared"),
])


def make_mala(decision="per_chain", q_var=2.0, correction=True):
    def step(x, log_p, score, eps, z, u):
        y = x + eps * score(x) + math.sqrt(2 * eps) * z

        def log_q(to, frm):
            return -(to - frm - eps * score(frm)).square().sum(-1) / (2 * q_var * eps)

        log_alpha = log_p(y) - log_p(x)
        if correction:
            log_alpha = log_alpha + log_q(x, y) - log_q(y, x)
        if decision == "joint":
            return y if bool(u[0].log() < log_alpha.sum()) else x
        if decision == "all":
            return y
        return torch.where((u.log() < log_alpha)[:, None], y, x)

    return step


case("check_mala_step", make_mala(), [
    (make_mala(decision="joint"), "all chains together"),
    (make_mala(correction=False), "dropped the proposal ratio"),
    (make_mala(q_var=1.0), "variance eps"),
    (make_mala(decision="all"), "every proposal"),
])


def corr_step0(states, lag):
    return torch.corrcoef(torch.stack([states[0], states[lag]]))[0, 1]


def corr_pooled(states, lag):
    return torch.corrcoef(torch.stack([states[:-lag].flatten(), states[lag:].flatten()]))[0, 1]


def corr_uncentred(states, lag):
    p, q = states[0], states[lag]
    return (p * q).mean() / (p.square().mean() * q.square().mean()).sqrt()


case("check_autocorrelation", [corr_step0, corr_pooled], [
    (corr_uncentred, "subtract the mean"),
    (lambda st, lag: ((st[0] - st[0].mean()) * (st[lag] - st[lag].mean())).mean(), "covariance"),
    (lambda st, lag: corr_step0(st, lag + 1), "off by one"),
])

# -- Chapter 2 -----------------------------------------------------------------------------------


def sym(A):
    return (A + A.T) / 2


case("check_quadratic_energy_score", lambda x, A, b: -(x @ sym(A).T + b), [
    (lambda x, A, b: -(x @ A.T + b), "symmetric part"),
    (lambda x, A, b: x @ sym(A).T + b, "wrong sign"),
    (lambda x, A, b: -(2 * x @ sym(A).T + b), "one half"),
])


def fisher(score_fn, x):
    s = score_fn(x)
    return s.T @ s / len(x)


case("check_fisher_information", fisher, [
    (lambda sf, x: sf(x).T @ sf(x), "summed"),
    (lambda sf, x: torch.linalg.inv(torch.cov(x.T)), "C^{-1}"),
    (lambda sf, x: sf(x).square().sum(-1).mean(), "must have shape"),
])


def mixture_score(x, w, mu, var, log_space=True, use_weights_only=False, constants=True):
    diff = mu - x[:, None, :]
    comp = diff / var[:, None]
    D = x.shape[-1]
    logits = w.log() - diff.square().sum(-1) / (2 * var)
    if constants:
        logits = logits - 0.5 * D * var.log()
    if use_weights_only:
        r = w.expand(len(x), -1)
    elif log_space:
        r = torch.softmax(logits, -1)
    else:
        dens = logits.exp()
        r = dens / dens.sum(-1, keepdim=True)
    return (r[..., None] * comp).sum(1)


case("check_mixture_score", mixture_score, [
    (lambda *a: mixture_score(*a, log_space=False), "log space"),
    (lambda *a: mixture_score(*a, use_weights_only=True), "weights w_k"),
    (lambda *a: mixture_score(*a, constants=False), "normalising constants"),
    (lambda *a: -mixture_score(*a), "wrong sign"),
])

# -- Chapter 3 -----------------------------------------------------------------------------------


def sphere(n, d, generator):
    g = torch.randn(n, d, generator=generator)
    return math.sqrt(d) * g / g.norm(dim=-1, keepdim=True)


case("check_sphere_probes", sphere, [
    (lambda n, d, gen: sphere(n, d, gen) / math.sqrt(d), "tr(B) / D"),
    (lambda n, d, gen: torch.randn(n, d, generator=gen), "norms vary"),
    (lambda n, d, gen: torch.randint(0, 2, (n, d), generator=gen).double() * 2 - 1, "Rademacher"),
    (lambda n, d, gen: sphere(n, d, None), "same seed"),
    (lambda n, d, gen: (u := torch.rand(n, d, generator=gen)) * math.sqrt(d) / u.norm(dim=-1, keepdim=True),
     "not uniform on the sphere"),
])


def make_ssm(unit=False, bug_x=False, vr=False):
    def loss(score_fn, x, v):
        if unit:
            v = v / v.norm(dim=-1, keepdim=True)
        x = x.detach().requires_grad_(True)
        s = score_fn(x)
        (g,) = torch.autograd.grad((s * (x if bug_x else v)).sum(), x, create_graph=True)
        second = 0.5 * s.square().sum(-1) if vr else 0.5 * (v * s).sum(-1).square()
        return ((v * g * v).sum(-1) if bug_x else (g * v).sum(-1)) .add(second).mean()

    return loss


case("check_ssm_loss", make_ssm(), [
    (make_ssm(unit=True), "unit-norm projections, which estimate tr(J) / D"),
    (make_ssm(bug_x=True), "(s * x).sum()"),
    (make_ssm(unit=True, bug_x=True), "unit-norm projection bug"),
    (make_ssm(vr=True), "SSM-VR"),
])


def fit_linear(x, ddof=0):
    xbar = x.mean(0)
    C = (x - xbar).T @ (x - xbar) / (len(x) - ddof)
    P = torch.linalg.inv(C)
    return -P, P @ xbar


case("check_linear_score_matching", fit_linear, [
    (lambda x: fit_linear(x, ddof=1), "N - 1"),
    (lambda x: tuple(-t for t in fit_linear(x)), "wrong sign"),
    (lambda x: (-torch.cov(x.T, correction=0), fit_linear(x)[1]), "not -C"),
    (lambda x: fit_linear(x)[0], "pair (A, b)"),
])

# -- Chapter 4 -----------------------------------------------------------------------------------


def dsm(score_fn, x, sigma, z, sign=1.0, clean=False, dim_mean=False):
    r = score_fn(x if clean else x + sigma * z) + sign * z / sigma
    per = r.square().mean(-1) if dim_mean else r.square().sum(-1)
    return 0.5 * per.mean()


case("check_dsm_loss", dsm, [
    (lambda *a: dsm(*a, sign=-1.0), "z/sigma instead of -z/sigma"),
    (lambda *a: dsm(*a, clean=True), "clean x"),
    (lambda *a: 2 * dsm(*a), "one half"),
    (lambda *a: dsm(*a, dim_mean=True), "averaged over dimensions"),
])

case("check_tweedie_denoiser", lambda y, sigma, s: y + sigma**2 * s(y), [
    (lambda y, sigma, s: y + sigma * s(y), "sigma^2, not sigma"),
    (lambda y, sigma, s: y - sigma**2 * s(y), "wrong sign"),
])

# -- Chapter 5 -----------------------------------------------------------------------------------


def ncsn(score_fn, x, sigma, z, power=2, sign=1.0, reshape=True):
    sg = sigma[:, None] if reshape else sigma
    xn = x + sg * z
    return (0.5 * sigma**power * (score_fn(xn, sigma) + sign * z / sg).square().sum(-1)).mean()


case("check_ncsn_loss", ncsn, [
    (lambda *a: ncsn(*a, power=0), "missing lambda(sigma) = sigma^2 weighting"),
    (lambda *a: ncsn(*a, power=1), "not sigma"),
    (lambda *a: ncsn(*a, sign=-1.0), "z/sigma instead of -z/sigma"),
    (lambda *a: ncsn(*a, reshape=False), "reshape the [batch] levels"),
])

# -- Chapter 6 -----------------------------------------------------------------------------------


def ald_variance(sigmas, step_lr, T, v, V, noise=2.0, reverse=False, power=2.0):
    levels = sigmas.tolist()
    sigma_L = levels[-1]
    for sig in (levels[::-1] if reverse else levels):
        alpha = step_lr * (sig / sigma_L) ** power
        a = 1 - alpha / (v + sig**2)
        for _ in range(T):
            V = a * a * V + noise * alpha
    return V


case("check_ald_variance", ald_variance, [
    (lambda *a: ald_variance(*a, noise=1.0), "adds alpha per step"),
    (lambda *a: ald_variance(*a, reverse=True), "your sigmas are increasing"),
    (lambda *a: ald_variance(*a, power=0.0), "same at every level"),
])


def make_ald(reverse=False, noise=2.0, use_generator=True, power=2.0, tensor_sigma=False):
    def sampler(score_fn, x, sigmas, step_lr, T, generator):
        levels = sigmas.tolist()
        sigma_L = levels[-1]
        for sig in (levels[::-1] if reverse else levels):
            alpha = step_lr * (sig / sigma_L) ** power
            sig_arg = torch.full(x.shape[:1], sig, dtype=x.dtype) if tensor_sigma else sig
            for _ in range(T):
                z = torch.randn(x.shape, generator=generator if use_generator else None, dtype=x.dtype)
                x = x + alpha * score_fn(x, sig_arg) + math.sqrt(noise * alpha) * z
        return x

    return sampler


case("check_annealed_langevin", [make_ald(), make_ald(tensor_sigma=True)], [
    (make_ald(reverse=True), "your sigmas are increasing"),
    (make_ald(noise=1.0), "sqrt(alpha) instead of sqrt(2 alpha)"),
    (make_ald(power=0.0), "same at every level"),
    (make_ald(use_generator=False), "generator"),
])

# -- Chapter 8 -----------------------------------------------------------------------------------


def em_forward(sde, x, t, dt, z, noise_pow=0.5, g_pow=1, sign=1.0):
    return x + sign * sde.drift(x, t) * dt + sde.diffusion(t) ** g_pow * dt**noise_pow * z


case("check_forward_euler_maruyama_step", em_forward, [
    (lambda *a: em_forward(*a, noise_pow=1.0), "sqrt(dt)"),
    (lambda *a: em_forward(*a, g_pow=2), "g(t)^2"),
    (lambda *a: em_forward(*a, sign=-1.0), "wrong sign"),
])


def prior_kl(sde, m, s, reverse=False, alpha_mean=True, std_as_var=False):
    a, sd = (float(v) for v in sde.marginal(1.0))
    mu = a * m if alpha_mean else m
    V = a**2 * s**2 + (sd if std_as_var else sd**2)
    w = float(sde.prior_std) ** 2
    if reverse:
        return 0.5 * (w / V + mu**2 / V - 1 - math.log(w / V))
    return 0.5 * (V / w + mu**2 / w - 1 - math.log(V / w))


case("check_prior_kl", prior_kl, [
    (lambda *a: prior_kl(*a, reverse=True), "other direction"),
    (lambda *a: prior_kl(*a, alpha_mean=False), "alpha(1) m"),
    (lambda *a: prior_kl(*a, std_as_var=True), "square it"),
])

# -- Chapter 9 -----------------------------------------------------------------------------------


def pf_drift(sde, score_fn, x, t, factor=0.5, with_f=True):
    g2 = sde.diffusion(t)[:, None] ** 2
    return (sde.drift(x, t) if with_f else 0) - factor * g2 * score_fn(x, t)


case("check_probability_flow_drift", [pf_drift, lambda sde, s, x, t: sde.reverse(s, probability_flow=True).drift(x, t)], [
    (lambda *a: pf_drift(*a, factor=1.0), "full g^2"),
    (lambda *a: pf_drift(*a, with_f=False), "forward drift"),
    (lambda *a: pf_drift(*a, factor=-0.5), "minus sign"),
])


def em_reverse(sde, score_fn, x, t, t_next, z, direction=1.0, factor=1.0, noise_pow=0.5):
    h = t - t_next
    s = score_fn(x, torch.full(x.shape[:1], t, dtype=x.dtype))
    f, g = sde.drift(x, t), float(sde.diffusion(t))
    return x - direction * (f - factor * g**2 * s) * h + g * h**noise_pow * z


case("check_predictor_step", em_reverse, [
    (lambda *a: em_reverse(*a, direction=-1.0), "forward in time"),
    (lambda *a: em_reverse(*a, factor=0.5), "probability-flow factor"),
    (lambda *a: em_reverse(*a, noise_pow=1.0), "sqrt(h)"),
])


def reverse_diffusion(sde, score_fn, x, t, t_next, z, b_pow=2, keep_x=False):
    a, b = (float(v) for v in sde.transition(t_next, t))
    s = score_fn(x, torch.full(x.shape[:1], t, dtype=x.dtype))
    return (x if keep_x else (2 - a) * x) + b**b_pow * s + b * z


case("check_predictor_step[reverse_diffusion]", reverse_diffusion, [
    (em_reverse, "that is Euler"),
    (lambda *a: reverse_diffusion(*a, b_pow=1), "not b"),
    (lambda *a: reverse_diffusion(*a, keep_x=True), "(2 - a)"),
], predictor="reverse_diffusion")


def ancestral_mean(sde, score_fn, x, t, t_next, mult=False, tweedie=False):
    a, b = (float(v) for v in sde.transition(t_next, t))
    var = float(sde.marginal(t)[1]) ** 2 if tweedie else b**2
    y = x + var * score_fn(x, torch.full(x.shape[:1], t, dtype=x.dtype))
    return a * y if mult else y / a


case("check_ancestral_mean", ancestral_mean, [
    (lambda *a: ancestral_mean(*a, mult=True), "divide by a"),
    (lambda *a: ancestral_mean(*a, tweedie=True), "Tweedie"),
])

# -- the tests ----------------------------------------------------------------------------------


def test_every_checker_has_cases():
    tested = {name.split("[")[0] for name in CASES}
    public = {name for name in dir(ex) if name.startswith("check_") and callable(getattr(ex, name))}
    assert public == set(ex.CHECKERS) == tested
    assert all(len(wrongs) >= 2 for _, _, wrongs in CASES.values())


@pytest.mark.parametrize("name", sorted(CASES))
def test_correct_implementation_passes(name, capsys):
    kwargs, corrects, _ = CASES[name]
    for correct in corrects:
        result = checker_of(name)(correct, **kwargs)
        assert result.passed, result.message
        assert bool(result) and str(result).startswith("PASS: ")
    assert capsys.readouterr().out.startswith("PASS: ")


@pytest.mark.parametrize("name,index", [(name, i) for name in sorted(CASES) for i in range(len(CASES[name][2]))])
def test_wrong_implementation_fails_with_hint(name, index, capsys):
    kwargs, _, wrongs = CASES[name]
    wrong, hint = wrongs[index]
    result = checker_of(name)(wrong, **kwargs)
    assert not result.passed
    assert not bool(result)
    assert hint in result.message, result.message
    assert capsys.readouterr().out.strip() == f"FAIL: {result.message}"


@pytest.mark.parametrize("name", sorted(ex.CHECKERS))
def test_not_callable_raises(name):
    with pytest.raises(ValueError, match="must be your function"):
        ex.CHECKERS[name](1.25)


@pytest.mark.parametrize("name", sorted(ex.CHECKERS))
def test_exception_and_nan_are_fails(name):
    def boom(*args, **kwargs):
        raise RuntimeError("student bug")

    result = ex.CHECKERS[name](boom)
    assert not result.passed and "RuntimeError: student bug" in result.message

    def nan(*args, **kwargs):
        return float("nan")

    result = ex.CHECKERS[name](nan)
    assert not result.passed and any(w in result.message for w in ("shape", "NaN", "must return")), result.message


def test_nan_of_the_right_shape_is_a_fail():
    result = ex.check_langevin_step(lambda x, s, e, z: x * float("nan"))
    assert not result.passed and "NaN" in result.message


def test_wrong_shape_is_a_fail_with_hint():
    result = ex.check_langevin_step(lambda x, s, e, z: (x + e * s(x) + math.sqrt(2 * e) * z)[:, :1])
    assert not result.passed and "must have shape (64, 2)" in result.message


def test_generic_hint_reports_numbers():
    result = ex.check_tempered_variance(lambda lam, e, v: 3.0)
    assert not result.passed
    assert "matches none of the typical mistakes" in result.message and "exact answer" in result.message


def test_bad_predictor_name_raises():
    with pytest.raises(ValueError, match="predictor must be"):
        ex.check_predictor_step(em_reverse, predictor="heun")


def test_global_random_state_is_untouched():
    state = torch.get_rng_state()
    ex.check_annealed_langevin(make_ald(use_generator=False))
    assert torch.equal(state, torch.get_rng_state())


def test_check_repr():
    result = ex.Check("check_x", False, "hint")
    assert "check_x" in repr(result) and str(result) == "FAIL: hint" and "**FAIL**" in result._repr_markdown_()
