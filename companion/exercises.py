"""Checkers for the exercises: students call them on their own implementations.

Every ``check_...`` function takes a student's function (or a value) with the signature stated in
its docstring, runs it on fixed, seeded inputs whose exact answer is known (a closed-form score of
a Gaussian or a mixture from :mod:`companion.distributions`, a closed-form variance, or the
reference implementation of this package on the same inputs and the same noise), prints one line
and returns a :class:`Check`::

    import torch
    from companion.exercises import check_langevin_step

    def my_step(x, score_fn, step_size, z):
        return x + step_size * score_fn(x) + (2 * step_size) ** 0.5 * z

    check_langevin_step(my_step)   # prints "PASS: ..." and returns Check(passed=True, ...)
    assert check_langevin_step(my_step)   # a Check is truthy exactly when it passed

A wrong answer prints ``FAIL:`` followed by a hint. The checkers test for the typical mistakes
of each exercise (a sign error, a missing factor 2, a missing weighting, noise levels in the
wrong order, ...) and name the one they found; a wrong answer that matches no known mistake gets
the measured and the expected numbers.

Conventions:

- Functions that are deterministic once the noise is fixed (a Langevin or MALA step, a
  predictor step, a loss) receive the noise as an argument (``z``, ``u``), so that the checker
  can compare with the exact answer to rounding error. Whole samplers receive a
  ``torch.Generator`` and are checked statistically against exact variance recursions, with
  tolerances of at least five standard errors.
- Misuse of a checker raises ``ValueError`` naming the argument and the fix: passing something
  that is not callable (for example the result of your function instead of the function), or an
  unknown option.
- Anything the student's function does wrong is a FAIL with a hint, never an exception: raising
  an exception, returning the wrong type or shape, returning NaN or infinite values.
- Every checker is deterministic (explicit seeds; the global random state is restored on exit),
  runs on the CPU in float64 and takes well under three seconds.

Chapters: 1 Langevin dynamics, 2 score functions, 3 score matching, 4 denoising score matching,
5 multi-scale noise, 6 annealed Langevin dynamics, 8 score SDEs as limits of chains, 9 the
reverse-time SDE. ``CHECKERS`` maps every checker's name to the function.
"""

import functools
import math
from dataclasses import dataclass

import torch

from .distributions import Gaussian, GaussianMixture
from .schedules import geometric
from .sde import VESDE, VPSDE, SubVPSDE
from .samplers import PREDICTORS, ancestral_coefficients

DTYPE = torch.float64


@dataclass(frozen=True)
class Check:
    """The result of a checker: ``bool(check)`` is ``passed``, ``str(check)`` the printed line.

    Its three fields are ``name``, the checker that produced it (e.g. ``"check_langevin_step"``);
    ``passed``, whether the implementation gave the exact answer within the stated tolerance; and
    ``message``, what was checked on success and the hint on failure.
    """

    name: str
    passed: bool
    message: str

    def __bool__(self):
        return self.passed

    def __str__(self):
        return f"{'PASS' if self.passed else 'FAIL'}: {self.message}"

    def __repr__(self):
        return f"Check({self.name}, passed={self.passed}, message={self.message!r})"

    def _repr_markdown_(self):
        return f"**{'PASS' if self.passed else 'FAIL'}** ({self.name}): {self.message}"


class _Fail(Exception):
    """Raised inside a checker to end it with a FAIL and this message."""


CHECKERS = {}


def _checker(func):
    """Register a checker; turn _Fail into a FAIL, print the line, keep the global RNG unchanged."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # students who draw from the global generator still get fixed draws
            try:
                result = Check(func.__name__, True, func(*args, **kwargs))
            except _Fail as fail:
                result = Check(func.__name__, False, str(fail))
        print(result)
        return result

    CHECKERS[func.__name__] = wrapper
    return wrapper


# -- helpers ------------------------------------------------------------------------------------


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _require_callable(fn, name, signature):
    if not callable(fn):
        raise ValueError(f"{name} must be your function {signature}; got {type(fn).__name__}. "
                         f"Pass the function itself, not its result (no parentheses).")


def _run(fn, *args, hints=(), **kwargs):
    """Call the student's function; an exception becomes a FAIL naming it."""
    try:
        return fn(*args, **kwargs)
    except _Fail:
        raise
    except Exception as err:  # noqa: BLE001 -- any error of the student's code is a FAIL
        text = f"your function raised {type(err).__name__}: {err}"
        for needle, hint in hints:
            if needle in str(err):
                text += f" ({hint})"
        raise _Fail(text) from None


def _as_output(out, shape, what):
    """The student's output as a float64 tensor of the given shape, or a FAIL."""
    if isinstance(out, (tuple, list)) and len(out) and isinstance(out[0], torch.Tensor) and shape != ():
        raise _Fail(f"{what} must be one tensor of shape {tuple(shape)}; your function returned a "
                    f"{type(out).__name__} of {len(out)} items")
    try:
        t = torch.as_tensor(out.detach() if isinstance(out, torch.Tensor) else out).to(DTYPE)
    except (TypeError, ValueError, RuntimeError):
        raise _Fail(f"{what} must be a tensor of shape {tuple(shape)}; your function returned "
                    f"{type(out).__name__}") from None
    if tuple(t.shape) != tuple(shape) and not (shape == () and t.numel() == 1):
        raise _Fail(f"{what} must have shape {tuple(shape)}; your function returned shape {tuple(t.shape)} "
                    f"(check which dimensions you sum or average over, and the broadcasting of per-sample values)")
    t = t.reshape(shape)
    if not torch.isfinite(t).all():
        raise _Fail(f"{what} contains NaN or infinite values")
    return t


def _close(a, b, rtol=1e-6, atol=1e-9):
    a, b = torch.as_tensor(a, dtype=DTYPE), torch.as_tensor(b, dtype=DTYPE)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=rtol, atol=atol))


def _fmt(t, n=3):
    t = torch.as_tensor(t, dtype=DTYPE)
    if t.numel() == 1:
        return f"{float(t):.6g}"
    flat = t.reshape(-1)[:n].tolist()
    return "[" + ", ".join(f"{v:.4g}" for v in flat) + (", ...]" if t.numel() > n else "]")


def _diagnose(out, expected, mistakes, what, rtol=1e-6, atol=1e-9):
    """Return if out equals expected; else FAIL with the hint of the first mistake it equals, or a
    generic hint with the numbers. `mistakes` is a list of (hint, value it would give)."""
    if _close(out, expected, rtol, atol):
        return
    for hint, value in mistakes:
        if _close(out, value, rtol, atol):
            raise _Fail(hint)
    err = (torch.as_tensor(out, dtype=DTYPE) - torch.as_tensor(expected, dtype=DTYPE)).abs().max()
    raise _Fail(f"{what} is wrong and matches none of the typical mistakes: you returned {_fmt(out)}, "
                f"the exact answer is {_fmt(expected)} (largest absolute error {float(err):.3g})")


def _mixture():
    """The asymmetric 2-D test mixture (three components, unequal weights and variances)."""
    return GaussianMixture.isotropic([0.6, 0.3, 0.1], [[-3.0, 0.0], [2.0, 2.0], [0.0, -3.0]],
                                     [1.0, 0.5, 2.0]).to(dtype=DTYPE)


def _gaussian():
    """A correlated 2-D Gaussian target."""
    return Gaussian(torch.tensor([1.0, -0.5], dtype=DTYPE), torch.tensor([[1.5, 0.6], [0.6, 0.8]], dtype=DTYPE))


# -- Chapter 1: Langevin dynamics -----------------------------------------------------------------


@_checker
def check_langevin_step(step):
    """Check one step of the unadjusted Langevin algorithm (ULA).

    Chapter 1, exercise 1 (and every Langevin sampler of the book). The exact answer is

        ``x + step_size * score_fn(x) + sqrt(2 * step_size) * z``,

    compared to rounding error on 64 points of a correlated 2-D Gaussian (closed-form score) at
    two step sizes, 0.1 and 0.01. Mistakes recognised: the drift against the score, noise
    scaled by ``sqrt(step_size)`` (the convention with alpha/2 written with alpha = eps), no noise,
    noise ``2 * step_size`` without the square root, and updating ``x`` in place.

    Args:
        step: your function ``step(x, score_fn, step_size, z) -> x_next``, with ``x`` and ``z`` of
            shape ``[batch, D]``, ``score_fn(x)`` of the same shape, ``step_size`` a float.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(step, "step", "step(x, score_fn, step_size, z)")
    target = _gaussian()
    g = _gen(101)
    x = target.sample(64, generator=g) * 1.5
    z = torch.randn(64, 2, generator=g, dtype=DTYPE)
    s = target.score(x)
    for eps in (0.1, 0.01):
        x_in = x.clone()
        out = _as_output(_run(step, x_in, target.score, eps, z.clone()), x.shape, "step(x, score_fn, step_size, z)")
        if not torch.equal(x_in, x):
            raise _Fail("your step modified x in place (x += ...); return a new tensor, x = x + ..., so that the "
                        "chain's earlier states stay intact")
        _diagnose(out, x + eps * s + math.sqrt(2 * eps) * z, [
            ("your Langevin step moves against the score (sign of the drift): use x + eps * s(x), which climbs "
             "towards high density", x - eps * s + math.sqrt(2 * eps) * z),
            ("your noise has scale sqrt(eps) and your drift eps/2: that is the convention x + (alpha/2) s + "
             "sqrt(alpha) z with alpha = eps, a ULA step of size eps/2. This book writes x + eps s + sqrt(2 eps) z",
             x + eps / 2 * s + math.sqrt(eps) * z),
            ("your noise has scale sqrt(eps) instead of sqrt(2 eps): the stationary variance is half what it "
             "should be (the chain samples p^2, not p)", x + eps * s + math.sqrt(eps) * z),
            ("your noise has scale 2 eps instead of sqrt(2 eps): take the square root", x + eps * s + 2 * eps * z),
            ("your step has no noise: that is gradient ascent on log p, which stops at a mode instead of "
             "sampling; add sqrt(2 eps) z", x + eps * s),
            ("your noise enters with a minus sign: use the z the checker passes as given, x + eps s + sqrt(2 eps) z",
             x + eps * s - math.sqrt(2 * eps) * z),
        ], "x_next")
    return "x + eps s(x) + sqrt(2 eps) z, exact at eps = 0.1 and 0.01 on a 2-D Gaussian"


@_checker
def check_tempered_variance(variance_fn):
    """Check the stationary variance of ULA with tempered noise.

    Chapter 1, exercise 2. The chain ``x + eps * s(x) + lam * sqrt(2 eps) * z`` on the target
    N(0, v) contracts by ``a = 1 - eps / v``, so its stationary variance is

        ``2 eps lam**2 / (1 - a**2) = lam**2 * v / (1 - eps / (2 v))``,

    compared (relative error 1e-6) at (lam, eps, v) = (0.5, 0.1, 1), (2, 0.05, 0.5) and
    (0.7, 0.3, 2). Mistakes recognised: the continuous-time value ``lam**2 * v`` (no
    discretisation bias), ``lam`` not squared, ``lam`` ignored, and the bias computed with the
    rescaled step ``lam**2 * eps``.

    Args:
        variance_fn: your function ``variance_fn(lam, eps, v) -> float``.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(variance_fn, "variance_fn", "variance_fn(lam, eps, v)")
    cases = [(0.5, 0.1, 1.0), (2.0, 0.05, 0.5), (0.7, 0.3, 2.0)]
    out = torch.stack([_as_output(_run(variance_fn, *c), (), f"variance_fn{c}") for c in cases])

    def formula(f):
        return torch.tensor([f(lam, e, v) for lam, e, v in cases], dtype=DTYPE)

    _diagnose(out, formula(lambda lam, e, v: lam**2 * v / (1 - e / (2 * v))), [
        ("you returned the continuous-time variance lam^2 v: the discrete chain adds the bias factor "
         "1 / (1 - eps / (2 v))", formula(lambda lam, e, v: lam**2 * v)),
        ("lam multiplies the noise, so it enters the variance squared: lam^2 v / (1 - eps / (2 v))",
         formula(lambda lam, e, v: lam * v / (1 - e / (2 * v)))),
        ("your variance does not depend on lam: the noise lam sqrt(2 eps) z contributes 2 eps lam^2 per step",
         formula(lambda lam, e, v: v / (1 - e / (2 * v)))),
        ("the bias uses the contraction a = 1 - eps / v of the original chain, not the rescaled step lam^2 eps: "
         "lam^2 v / (1 - eps / (2 v))", formula(lambda lam, e, v: lam**2 * v / (1 - lam**2 * e / (2 * v)))),
    ], "the stationary variance", rtol=1e-6)
    return "lam^2 v / (1 - eps / (2 v)), exact at three settings"


@_checker
def check_mala_step(step):
    """Check one step of the Metropolis-adjusted Langevin algorithm (MALA), every chain accepted or
    rejected on its own.

    Chapter 1, exercise 3 (Roberts and Tweedie 1996). With the proposal
    ``y = x + eps s(x) + sqrt(2 eps) z``, i.e. q(y given x) = N(y; x + eps s(x), 2 eps I), chain b
    moves to ``y[b]`` exactly when ``log u[b] < log p(y) - log p(x) + log q(x given y) - log q(y given x)``.
    Compared to rounding error on 400 chains of a three-component 2-D mixture at ``eps = 0.5``
    with the given ``z`` and ``u``. Mistakes recognised: one accept/reject decision for the
    whole batch, one uniform number for every chain, no proposal correction (random-walk
    Metropolis), the proposal variance eps instead of 2 eps, the ratio q upside down, the
    comparison reversed, and accepting every proposal.

    Args:
        step: your function ``step(x, log_prob_fn, score_fn, step_size, z, u) -> x_next`` with
            ``x``, ``z`` of shape ``[batch, D]``, ``u`` of shape ``[batch]`` uniform on (0, 1),
            ``log_prob_fn(x)`` of shape ``[batch]``.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(step, "step", "step(x, log_prob_fn, score_fn, step_size, z, u)")
    mix, eps, B = _mixture(), 0.5, 400
    g = _gen(102)
    x = mix.sample(B, generator=g)
    z = torch.randn(B, 2, generator=g, dtype=DTYPE)
    u = torch.rand(B, generator=g, dtype=DTYPE)
    y = x + eps * mix.score(x) + math.sqrt(2 * eps) * z
    log_ratio = mix.log_prob(y) - mix.log_prob(x)

    def log_q(to, frm, var):
        return -(to - frm - eps * mix.score(frm)).square().sum(-1) / (2 * var)

    def moved(log_alpha, uu=u):
        return torch.where((uu.log() < log_alpha)[:, None], y, x)

    correction = log_q(x, y, 2 * eps) - log_q(y, x, 2 * eps)
    log_alpha = log_ratio + correction
    out = _as_output(_run(step, x.clone(), mix.log_prob, mix.score, eps, z.clone(), u.clone()), x.shape,
                     "step(x, log_prob_fn, score_fn, step_size, z, u)")
    joint = y if bool(u[0].log() < log_alpha.sum()) else x
    _diagnose(out, moved(log_alpha), [
        ("you accept or reject all chains together (one decision from the summed log-ratios): that is MALA in "
         "dimension batch * D, whose acceptance collapses; decide for every chain separately", joint),
        ("you use one uniform number for every chain: draw (here: use) u[b] for chain b", moved(log_alpha, u[0])),
        ("you dropped the proposal ratio q(x | y) / q(y | x): the Langevin proposal is not symmetric, so without "
         "it the chain does not leave p invariant", moved(log_ratio)),
        ("your proposal density has variance eps; the Langevin proposal N(x + eps s(x), 2 eps I) has variance "
         "2 eps, so log q = -|y - x - eps s(x)|^2 / (4 eps)",
         moved(log_ratio + log_q(x, y, eps) - log_q(y, x, eps))),
        ("your proposal ratio is upside down: the Hastings factor is q(x | y) / q(y | x), the density of the "
         "reverse move over the forward one", moved(log_ratio - correction)),
        ("your comparison is reversed: accept when log u < log alpha (u below the acceptance probability)",
         torch.where((u.log() > log_alpha)[:, None], y, x)),
        ("you accept every proposal: that is ULA; add the Metropolis–Hastings accept/reject step", y),
    ], "x_next")
    rate = float((out == y).all(-1).double().mean())
    return f"per-chain Metropolis–Hastings with the Langevin proposal, exact on 400 chains (acceptance {rate:.2f})"


@_checker
def check_autocorrelation(autocorrelation_fn):
    """Check an estimator of the lag-m autocorrelation of stationary ULA chains.

    Chapter 1, exercise 4. The checker runs 20,000 ULA chains on N(3, 4) with ``eps = 0.4``,
    started from the chain's own stationary law N(3, 4 / (1 - eps / 8)), for 10 steps, and passes
    the states as a ``[11, 20000]`` tensor. For this chain the autocorrelation at lag m is exactly
    ``a**m`` with ``a = 1 - eps / 4 = 0.9`` (Chapter 1, the proposition on ULA for a Gaussian).
    Your estimates at lags 1, 2 and 5 must lie within 0.02 (about six standard errors) of it;
    any consistent estimator passes (step 0 against step m across chains, or pooled over time).
    Mistakes recognised: no centring, no normalisation (a covariance), and a lag off by one.

    Args:
        autocorrelation_fn: your function ``autocorrelation_fn(states, lag) -> float``, with
            ``states[k, c]`` the state of chain c after k steps.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(autocorrelation_fn, "autocorrelation_fn", "autocorrelation_fn(states, lag)")
    mu, v, eps, n = 3.0, 4.0, 0.4, 20_000
    a = 1 - eps / v
    g = _gen(103)
    x = mu + math.sqrt(v / (1 - eps / (2 * v))) * torch.randn(n, generator=g, dtype=DTYPE)
    states = [x]
    for _ in range(10):
        x = x + eps * (-(x - mu) / v) + math.sqrt(2 * eps) * torch.randn(n, generator=g, dtype=DTYPE)
        states.append(x)
    states = torch.stack(states)

    def corr(p, q):
        return float(torch.corrcoef(torch.stack([p, q]))[0, 1])

    for lag in (1, 2, 5):
        out = float(_as_output(_run(autocorrelation_fn, states.clone(), lag), (), f"autocorrelation_fn(states, {lag})"))
        p, q = states[0], states[lag]
        mistakes = [
            ("you did not subtract the mean: the chains sit around 3, and E[x_0 x_m] / sqrt(E[x_0^2] E[x_m^2]) is "
             "pulled towards 1; centre each state first", float((p * q).mean() / (p.square().mean() * q.square().mean()).sqrt())),
            ("you returned a covariance: divide by the standard deviations (the stationary variance is 4.21, not 1)",
             float(((p - p.mean()) * (q - q.mean())).mean())),
            ("your lag is off by one: at lag m compare states[0] with states[m] (states[0] is the start)",
             corr(states[0], states[lag + 1])),
            ("your lag is off by one: at lag m compare states[0] with states[m] (states[0] is the start)",
             corr(states[0], states[lag - 1]) if lag > 1 else float("nan")),
        ]
        if abs(out - a**lag) < 0.02:
            continue
        for hint, value in mistakes:
            if math.isfinite(value) and abs(out - value) < 1e-6:
                raise _Fail(hint)
        raise _Fail(f"at lag {lag} you estimated {out:.4f}; the exact autocorrelation is (1 - eps / s^2)^m = "
                    f"{a**lag:.4f} and the sample correlation of states[0] and states[{lag}] is {corr(p, q):.4f}")
    return "autocorrelations at lags 1, 2, 5 agree with a^m = 0.9^m within 0.02"


# -- Chapter 2: score functions -------------------------------------------------------------------


@_checker
def check_quadratic_energy_score(score_fn):
    """Check the score of the energy-based model p(x) proportional to exp(-E(x)) with
    ``E(x) = 0.5 x^T A x + b^T x + c`` and a matrix A that is not symmetric.

    Chapter 2, exercise 1. The exact answer is ``-(A_s x + b)`` with ``A_s = (A + A^T) / 2``, the
    score of N(-A_s^{-1} b, A_s^{-1}); compared to rounding error at 50 points in dimension 3.
    Mistakes recognised: ``-(A x + b)`` or ``-(A^T x + b)`` (the non-symmetric part kept), the
    wrong sign, a missing one half, a missing ``b``.

    Args:
        score_fn: your function ``score_fn(x, A, b) -> score`` with ``x`` of shape ``[N, D]``
            (points as rows), ``A`` of shape ``[D, D]``, ``b`` of shape ``[D]``.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(score_fn, "score_fn", "score_fn(x, A, b)")
    A = torch.tensor([[2.0, 1.5, 0.0], [-0.5, 1.0, 0.3], [0.4, -0.7, 1.5]], dtype=DTYPE)
    b = torch.tensor([0.3, -1.0, 0.5], dtype=DTYPE)
    x = torch.randn(50, 3, generator=_gen(104), dtype=DTYPE)
    A_s = (A + A.T) / 2
    out = _as_output(_run(score_fn, x.clone(), A.clone(), b.clone()), x.shape, "score_fn(x, A, b)")
    nonsym = ("only the symmetric part A_s = (A + A^T) / 2 enters: x^T A x = x^T A_s x, so grad E = A_s x + b, "
              "not A x + b")
    _diagnose(out, -(x @ A_s.T + b), [
        (nonsym, -(x @ A.T + b)),
        (nonsym, -(x @ A + b)),
        ("wrong sign: the score of exp(-E) is -grad E(x), which points downhill in energy", x @ A_s.T + b),
        ("grad (0.5 x^T A_s x) = A_s x, not 2 A_s x: keep the one half", -(2 * x @ A_s.T + b)),
        ("you forgot the linear term: grad (b^T x) = b", -(x @ A_s.T)),
    ], "the score")
    return "-((A + A^T)/2 x + b), exact for a non-symmetric A"


@_checker
def check_fisher_information(fisher_fn):
    """Check a Monte Carlo estimate of the Fisher information for location, ``J = E[s(x) s(x)^T]``.

    Chapter 2, exercise 3. The checker passes 20,000 samples of an asymmetric three-component 2-D
    mixture and its exact score; the expected answer is the sample average of ``s s^T`` on those
    samples, and any consistent estimator within 5% (Frobenius norm) passes, e.g. minus the
    average Hessian of log p. Mistakes recognised: a sum instead of a mean, the inverse
    covariance ``C^{-1}`` (only a lower bound, equal to J for Gaussians alone), the Hessian without
    its minus sign.

    Args:
        fisher_fn: your function ``fisher_fn(score_fn, x) -> J`` with ``x`` of shape ``[N, D]``,
            returning a ``[D, D]`` tensor.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(fisher_fn, "fisher_fn", "fisher_fn(score_fn, x)")
    mix = _mixture()
    x = mix.sample(20_000, generator=_gen(105))
    s = mix.score(x)
    J = s.T @ s / len(x)
    out = _as_output(_run(fisher_fn, mix.score, x.clone()), (2, 2), "fisher_fn(score_fn, x)")

    def near(a, b, tol=0.05):
        return float((a - b).norm() / b.norm()) < tol

    if near(out, J):
        return "E[s s^T] agrees with the exact-score estimate within 5%"
    if near(out, J * len(x)):
        raise _Fail("you summed s s^T over the samples: divide by their number (J is an expectation)")
    if near(out, torch.linalg.inv(torch.cov(x.T))):
        raise _Fail("you returned C^{-1}, the inverse covariance: for this mixture J(p) is strictly larger "
                    "(J >= C^{-1}, with equality only for a Gaussian); average s(x) s(x)^T instead")
    if near(out, -J):
        raise _Fail("your J is negative definite: J = E[s s^T] = -E[Hessian of log p], with a minus sign")
    raise _Fail(f"J is wrong: you returned {_fmt(out, 4)}, the exact-score estimate is {_fmt(J, 4)}")


@_checker
def check_mixture_score(score_fn):
    """Check the score of an isotropic Gaussian mixture, ``sum_k w_k N(mu_k, v_k I)``.

    Chapter 2 (the mixture score; used in exercise 4 and throughout the book). The exact answer is

        ``sum_k r_k(x) (mu_k - x) / v_k``,  ``r_k = softmax_k(log w_k + log N(x; mu_k, v_k I))``,

    i.e. :meth:`companion.distributions.GaussianMixture.score`, compared to rounding error at 60
    points near the modes and at three points 40 to 60 units away, where ``exp`` of the
    log-densities underflows. Mistakes recognised: the weights ``w_k`` in place of the
    responsibilities, responsibilities that ignore the weights or the normalising constants
    ``v_k^{-D/2}``, the wrong sign, a division by the standard deviation, and NaN far from the
    modes (responsibilities computed outside log space).

    Args:
        score_fn: your function ``score_fn(x, weights, means, variances) -> score`` with ``x`` of
            shape ``[N, D]``, ``weights`` ``[K]``, ``means`` ``[K, D]``, ``variances`` ``[K]``.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(score_fn, "score_fn", "score_fn(x, weights, means, variances)")
    mix = _mixture()
    w, mu = mix.weights, mix.means
    var = mix.covs[:, 0, 0]
    near_pts = mix.sample(60, generator=_gen(106)) * 1.2
    far_pts = torch.tensor([[40.0, 40.0], [-60.0, 10.0], [5.0, -45.0]], dtype=DTYPE)

    def run(x):
        out = _run(score_fn, x.clone(), w.clone(), mu.clone(), var.clone())
        try:
            t = torch.as_tensor(out.detach() if isinstance(out, torch.Tensor) else out).to(DTYPE)
        except (TypeError, ValueError, RuntimeError):
            t = None
        if t is not None and t.shape == x.shape and not torch.isfinite(t).all():
            raise _Fail("your score is NaN or infinite far from the modes: exp(log N_k) underflows to 0 and the "
                        "responsibilities become 0/0. Compute them in log space, "
                        "r = torch.softmax(log w + log N_k, dim=-1)")
        return _as_output(out, x.shape, "score_fn(x, weights, means, variances)")

    D = mu.shape[1]
    diff = lambda x: mu - x[:, None, :]  # noqa: E731  [N, K, D]
    comp = lambda x: diff(x) / var[:, None]  # noqa: E731

    def weighted(x, logits):
        return (torch.softmax(logits, -1)[..., None] * comp(x)).sum(1)

    def sq(x):
        return diff(x).square().sum(-1)

    x = near_pts
    out = run(x)
    _diagnose(out, mix.score(x), [
        ("you weighted the component scores by the weights w_k; the weights must be the responsibilities "
         "r_k(x) = w_k N_k(x) / p(x), which depend on x", (w[:, None] * comp(x)).sum(1)),
        ("your responsibilities ignore the mixture weights: r_k is proportional to w_k N(x; mu_k, v_k I)",
         weighted(x, -0.5 * D * var.log() - sq(x) / (2 * var))),
        ("your responsibilities drop the normalising constants: with unequal variances log N_k includes "
         "-(D/2) log(2 pi v_k)", weighted(x, w.log() - sq(x) / (2 * var))),
        ("wrong sign: each component contributes (mu_k - x) / v_k, pointing towards its mean", -mix.score(x)),
        ("each component score is (mu_k - x) / v_k with the variance v_k, not the standard deviation",
         (torch.softmax(w.log() - 0.5 * D * var.log() - sq(x) / (2 * var), -1)[..., None]
          * diff(x) / var.sqrt()[:, None]).sum(1)),
    ], "the score near the modes")
    out = run(far_pts)
    _diagnose(out, mix.score(far_pts), [], "the score far from the modes")
    return "responsibility-weighted component scores, exact near the modes and 60 units away"


# -- Chapter 3: score matching --------------------------------------------------------------------


@_checker
def check_sphere_probes(probe_fn):
    """Check a sampler of projection vectors uniform on the sphere of radius ``sqrt(D)``.

    Chapter 3, exercise 1. Hutchinson's estimator ``v^T B v`` and sliced score matching need
    ``E[v v^T] = I``. The checker draws 20,000 probes in D = 5 with a seeded generator and
    checks that every norm is ``sqrt(5)`` (relative 1e-5), that the sample mean is within 0.05 of
    0 and the sample second moment within 0.06 of the identity (over five standard errors), and
    that the same seed gives the same probes. Mistakes recognised: unit-norm probes (they
    estimate tr/D), Gaussian probes without normalisation, Rademacher probes, a non-Gaussian
    direction before normalising, and ignoring the generator.

    Args:
        probe_fn: your function ``probe_fn(n, d, generator) -> v`` of shape ``[n, d]``.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(probe_fn, "probe_fn", "probe_fn(n, d, generator)")
    n, d = 20_000, 5
    v = _as_output(_run(probe_fn, n, d, _gen(107)), (n, d), "probe_fn(n, d, generator)")
    norms = v.norm(dim=-1)
    if torch.allclose(v.abs(), torch.ones_like(v)):
        raise _Fail("these are Rademacher probes (entries +-1): they have the norm sqrt(D) and E[v v^T] = I but are not "
                    "uniform on the sphere; normalise a Gaussian vector, sqrt(D) g / |g|")
    if not torch.allclose(norms, torch.full_like(norms, math.sqrt(d)), rtol=1e-5):
        if torch.allclose(norms, torch.ones_like(norms), rtol=1e-5):
            raise _Fail("your probes have unit norm: E[v v^T] = I / D, so v^T B v estimates tr(B) / D and an SSM loss "
                        "built on them is divided by D; scale them to radius sqrt(D)")
        raise _Fail(f"the norms vary from {float(norms.min()):.3f} to {float(norms.max()):.3f}: normalise each "
                    f"Gaussian vector g to sqrt(D) g / |g| (unnormalised, these are Gaussian probes)")
    second = v.T @ v / n
    if float(v.mean(0).abs().max()) > 0.05 or float((second - torch.eye(d, dtype=DTYPE)).abs().max()) > 0.06:
        raise _Fail(f"your probes have the right norm but are not uniform on the sphere: mean {_fmt(v.mean(0), 5)}, "
                    f"E[v v^T] diagonal {_fmt(second.diagonal(), 5)} (should be 0 and 1). Draw g ~ N(0, I) "
                    f"(torch.randn, not torch.rand) and normalise it")
    again = _as_output(_run(probe_fn, n, d, _gen(107)), (n, d), "probe_fn(n, d, generator)")
    if not torch.equal(again, v):
        raise _Fail("the same seed gave different probes: draw with torch.randn(..., generator=generator)")
    return "norm sqrt(D), E[v] = 0 and E[v v^T] = I within sampling error, reproducible from the generator"


def _ssm_weights(dtype):
    W = torch.tensor([[-1.0, 0.4, 0.0, 0.2], [-0.3, -0.8, 0.5, 0.0], [0.1, 0.0, -1.2, 0.3], [0.0, 0.6, -0.2, -0.5]],
                     dtype=dtype)
    U = torch.tensor([[0.5, -0.2, 0.3, 0.1], [0.0, 0.7, -0.4, 0.2], [0.3, 0.1, 0.6, -0.5], [-0.2, 0.4, 0.0, 0.8]],
                     dtype=dtype)
    return W, U


def _ssm_score(x):
    """A smooth non-linear vector field with a non-symmetric Jacobian (the model of the SSM check)."""
    W, U = _ssm_weights(x.dtype)
    return x @ W.T + 0.3 + 0.8 * torch.tanh(x @ U.T)


def _ssm_jacobian(x):
    """Its Jacobian in closed form: W + 0.8 diag(1 - tanh(U x)^2) U, shape [batch, D, D]."""
    W, U = _ssm_weights(x.dtype)
    return W + 0.8 * (1 - torch.tanh(x @ U.T).square())[:, :, None] * U


@_checker
def check_ssm_loss(loss_fn):
    """Check a sliced score matching loss with one given projection per sample.

    Chapter 3, exercise 2 (Song, Garg, Shi and Ermon 2019). The exact answer is the batch mean of

        ``v^T J(x) v + 0.5 (v^T s(x))**2``,  ``J(x)`` the Jacobian of ``s`` at ``x``,

    with the Jacobian in closed form, for a non-linear model in
    dimension 4, 64 samples and Rademacher projections (``E[v v^T] = I``); compared to relative
    error 1e-6. Mistakes recognised: the exercise's bug (differentiating ``(s * x).sum()``), unit-norm
    projections (the loss divided by D), SSM-VR's ``0.5 |s|^2``, the trace term with the wrong
    sign, a missing one half, and a sum over the batch.

    Args:
        loss_fn: your function ``loss_fn(score_fn, x, v) -> loss`` (a scalar tensor), with ``x``
            and ``v`` of shape ``[batch, D]``. ``x`` does not require gradients: enable them
            yourself (``x = x.detach().requires_grad_(True)``).

    Returns:
        Check: the result, also printed.
    """
    _require_callable(loss_fn, "loss_fn", "loss_fn(score_fn, x, v)")
    g = _gen(108)
    B, D = 64, 4
    x = torch.randn(B, D, generator=g, dtype=DTYPE)
    v = torch.randint(0, 2, (B, D), generator=g).to(DTYPE) * 2 - 1
    s = _ssm_score(x)
    J = _ssm_jacobian(x)  # [B, D, D], J[b, i, j] = ds_i / dx_j
    quad = torch.einsum("bi,bij,bj->b", v, J, v)
    proj = (v * s).sum(-1)
    expected = (quad + 0.5 * proj.square()).mean()
    vu = v / v.norm(dim=-1, keepdim=True)
    g_bug = torch.einsum("bij,bi->bj", J, x) + s  # grad_x (s(x) . x)
    out = _as_output(_run(loss_fn, _ssm_score, x.clone(), v.clone()), (), "loss_fn(score_fn, x, v)")
    _diagnose(out, expected, [
        ("you differentiate (s * x).sum(): the vector–Jacobian product of SSM is grad((s * v).sum(), x), "
         "then dotted with v, which gives v^T J v", (0.5 * proj.square() + (v * g_bug * v).sum(-1)).mean()),
        ("your SSM loss uses unit-norm projections, which estimate tr(J) / D: the loss is divided by D = 4. "
         "Use projections with E[v v^T] = I (Rademacher, Gaussian, or radius sqrt(D))",
         (torch.einsum("bi,bij,bj->b", vu, J, vu) + 0.5 * (vu * s).sum(-1).square()).mean()),
        ("you combined the unit-norm projection bug with differentiating (s * x).sum(): use v with E[v v^T] = I "
         "and grad((s * v).sum(), x)", (0.5 * (vu * s).sum(-1).square() + (vu * g_bug * vu).sum(-1)).mean()),
        ("that is SSM-VR (0.5 |s|^2): this checker asks for plain SSM, 0.5 (v^T s)^2",
         (quad + 0.5 * s.square().sum(-1)).mean()),
        ("the trace term has the wrong sign: the loss is + v^T J v + 0.5 (v^T s)^2", (-quad + 0.5 * proj.square()).mean()),
        ("missing the one half on (v^T s)^2", (quad + proj.square()).mean()),
        ("you summed over the batch: average it", B * expected),
    ], "the SSM loss")
    return "mean of v^T J v + 0.5 (v^T s)^2, exact (Jacobian in closed form)"


@_checker
def check_linear_score_matching(fit_fn):
    """Check the closed-form score-matching fit of a linear model ``s(x) = A x + b``.

    Chapter 3, exercise 3. The sample implicit score matching objective is minimised by
    ``A = -C^{-1}`` and ``b = C^{-1} xbar`` with the maximum-likelihood covariance
    ``C = (1/N) sum (x_n - xbar)(x_n - xbar)^T``: the score of the maximum-likelihood Gaussian.
    Compared to rounding error on 20 samples in dimension 3. Mistakes recognised: the unbiased
    covariance (divided by N - 1), the wrong sign of A or b, the covariance not inverted, and the
    uncentred second moment.

    Args:
        fit_fn: your function ``fit_fn(x) -> (A, b)`` with ``x`` of shape ``[N, D]``, ``A`` of shape
            ``[D, D]`` and ``b`` of shape ``[D]``.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(fit_fn, "fit_fn", "fit_fn(x)")
    L = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.8, 0.0], [-0.3, 0.2, 0.6]], dtype=DTYPE)
    x = torch.randn(20, 3, generator=_gen(109), dtype=DTYPE) @ L.T + torch.tensor([1.0, -2.0, 0.5], dtype=DTYPE)
    out = _run(fit_fn, x.clone())
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise _Fail(f"fit_fn must return a pair (A, b); it returned {type(out).__name__}")
    A = _as_output(out[0], (3, 3), "A")
    b = _as_output(out[1], (3,), "b")
    xbar = x.mean(0)
    C = (x - xbar).T @ (x - xbar) / len(x)
    P = torch.linalg.inv(C)
    _diagnose(A, -P, [
        ("you used the unbiased covariance (divided by N - 1): the minimiser of the sample objective uses the "
         "1/N covariance", -torch.linalg.inv(C * len(x) / (len(x) - 1))),
        ("A has the wrong sign: A = -C^{-1}, negative definite (the score points back to the mean)", P),
        ("A must be minus the inverse covariance, -C^{-1}, not -C", -C),
        ("you used the uncentred second moment (1/N) sum x x^T; subtract the mean first",
         -torch.linalg.inv(x.T @ x / len(x))),
    ], "A")
    _diagnose(b, P @ xbar, [
        ("b has the wrong sign: b = C^{-1} xbar, so that A xbar + b = 0 at the mean", -P @ xbar),
        ("you used the unbiased covariance in b (divided by N - 1); use the 1/N covariance",
         torch.linalg.inv(C * len(x) / (len(x) - 1)) @ xbar),
    ], "b")
    return "A = -C^{-1}, b = C^{-1} xbar with the 1/N covariance, exact"


# -- Chapter 4: denoising score matching ----------------------------------------------------------


@_checker
def check_dsm_loss(loss_fn):
    """Check the denoising score matching loss at one noise level, with the noise given.

    Chapter 4, exercise 3 (Vincent 2011). The exact answer is the batch mean of

        ``0.5 |s(x + sigma z) + z / sigma|**2``  (summed over dimensions),

    since the gradient of log N(x~; x, sigma^2 I) at x~ = x + sigma z is -z / sigma. Compared to
    relative error 1e-6 at sigma = 0.5 and 2 on 128 samples of a 2-D mixture, with the exact score
    of the perturbed mixture as the model. Mistakes recognised: the target ``+z/sigma``, ``-z``
    without 1/sigma, ``-z/sigma**2``, the score at the clean point, a missing one half, a mean over
    dimensions, and a weighting by sigma squared.

    Args:
        loss_fn: your function ``loss_fn(score_fn, x, sigma, z) -> loss`` (a scalar tensor) with
            ``x`` and ``z`` of shape ``[batch, D]`` and ``sigma`` a float.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(loss_fn, "loss_fn", "loss_fn(score_fn, x, sigma, z)")
    mix = _mixture()
    g = _gen(110)
    x = mix.sample(128, generator=g)
    z = torch.randn(128, 2, generator=g, dtype=DTYPE)
    for sigma in (0.5, 2.0):
        score = mix.perturb(sigma).score
        xn = x + sigma * z
        half = lambda r: 0.5 * r.square().sum(-1).mean()  # noqa: E731
        expected = half(score(xn) + z / sigma)
        out = _as_output(_run(loss_fn, score, x.clone(), sigma, z.clone()), (), "loss_fn(score_fn, x, sigma, z)")
        _diagnose(out, expected, [
            ("your DSM target is z/sigma instead of -z/sigma: the score of N(x~; x, sigma^2 I) is "
             "-(x~ - x)/sigma^2 = -z/sigma, so the residual is s(x~) + z/sigma", half(score(xn) - z / sigma)),
            ("your target is -z: divide by sigma (the score of the noise kernel is -z/sigma; -z is the target of "
             "the noise-predicting parameterisation)", half(score(xn) + z)),
            ("your target is -z/sigma^2: with x~ = x + sigma z the kernel's score is -(x~ - x)/sigma^2 = -z/sigma",
             half(score(xn) + z / sigma**2)),
            ("you evaluated the score at the clean x: evaluate it at the noisy point x + sigma z", half(score(x) + z / sigma)),
            ("missing the one half: 0.5 |s + z/sigma|^2", 2 * expected),
            ("you averaged over dimensions: sum the squared residual over dimensions, average over the batch",
             expected / 2),
            ("you multiplied by lambda(sigma) = sigma^2: the one-level DSM loss has no weighting (that belongs to the "
             "multi-scale NCSN loss)", sigma**2 * expected),
        ], f"the loss at sigma = {sigma}")
    return "mean of 0.5 |s(x + sigma z) + z/sigma|^2, exact at sigma = 0.5 and 2"


@_checker
def check_tweedie_denoiser(denoise_fn):
    """Check Tweedie's denoiser ``E[x given x~ = y] = y + sigma**2 s(y)``.

    Chapter 4 (Tweedie's formula; exercise 4's final denoising step; Robbins 1956, Efron 2011).
    The exact answer is :meth:`companion.distributions.GaussianMixture.posterior_mean`, computed
    from the Gaussian posteriors of the components, independently of any score: compared to
    rounding error at 40 noisy points of a 2-D mixture at sigma = 0.3 and 1.5, with the exact
    score of the perturbed mixture. Mistakes recognised: ``y + sigma s``, ``y - sigma**2 s``,
    ``y + s``, and ``sigma**2 s`` without ``y``.

    Args:
        denoise_fn: your function ``denoise_fn(y, sigma, score_fn) -> x_hat`` with ``y`` of shape
            ``[N, D]``, ``sigma`` a float and ``score_fn`` the score of the perturbed density.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(denoise_fn, "denoise_fn", "denoise_fn(y, sigma, score_fn)")
    mix = _mixture()
    for sigma in (0.3, 1.5):
        q = mix.perturb(sigma)
        y = q.sample(40, generator=_gen(111))
        s = q.score(y)
        out = _as_output(_run(denoise_fn, y.clone(), sigma, q.score), y.shape, "denoise_fn(y, sigma, score_fn)")
        _diagnose(out, mix.posterior_mean(y, sigma), [
            ("Tweedie's formula has sigma^2, not sigma: E[x | y] = y + sigma^2 s(y)", y + sigma * s),
            ("wrong sign: the denoiser moves along the score, y + sigma^2 s(y)", y - sigma**2 * s),
            ("the score step must be scaled by the noise variance: y + sigma^2 s(y)", y + s),
            ("you returned only the correction sigma^2 s(y): add y", sigma**2 * s),
        ], f"the denoised points at sigma = {sigma}", rtol=1e-6, atol=1e-8)
    return "y + sigma^2 s(y) equals the posterior mean E[x | y] at sigma = 0.3 and 1.5"


# -- Chapter 5: multi-scale noise (the NCSN objective) --------------------------------------------


def _ncsn_score(x, sigma, m=(1.0, -1.0), v=0.5):
    """The exact score of p_sigma for data N(m, v I): -(x - m) / (v + sigma^2); sigma a number, [batch] or [batch, 1]."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype)
    if sigma.numel() > 1:
        sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return -(x - torch.tensor(m, dtype=x.dtype)) / (v + sigma**2)


@_checker
def check_ncsn_loss(loss_fn):
    """Check the multi-scale NCSN loss with the per-sample noise levels and the noise given.

    Chapter 5 (the NCSN objective with ``lambda(sigma) = sigma**2``; used in Chapter 4, exercise 4;
    Song and Ermon 2019, Eq. 6). Sample b has level ``sigma[b]``; the exact answer is the batch mean of

        ``0.5 sigma**2 |s(x + sigma z, sigma) + z / sigma|**2``,

    i.e. :func:`companion.losses.ncsn_loss` once the levels are drawn; compared to relative error
    1e-6 on 64 samples in 2-D, levels from a geometric ladder 5 > ... > 0.05, with the exact
    noise-conditional score of Gaussian data. Mistakes recognised: no weighting, the weighting
    ``sigma`` or ``1/sigma**2``, the target ``+z/sigma``, a missing one half, the score called with the
    wrong level, and a sum over the batch.

    Args:
        loss_fn: your function ``loss_fn(score_fn, x, sigma, z) -> loss`` (a scalar tensor), with
            ``x``, ``z`` of shape ``[batch, D]`` and ``sigma`` of shape ``[batch]``;
            ``score_fn(x_noisy, sigma)`` takes the ``[batch]`` levels.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(loss_fn, "loss_fn", "loss_fn(score_fn, x, sigma, z)")
    g = _gen(112)
    B = 64
    sigmas = geometric(5.0, 0.05, 10)
    sigma = sigmas[torch.randint(0, 10, (B,), generator=g)]
    x = torch.tensor([1.0, -1.0], dtype=DTYPE) + math.sqrt(0.5) * torch.randn(B, 2, generator=g, dtype=DTYPE)
    z = torch.randn(B, 2, generator=g, dtype=DTYPE)
    sc = sigma[:, None]
    xn = x + sc * z

    def per(res):
        return 0.5 * res.square().sum(-1)

    base = per(_ncsn_score(xn, sigma) + z / sc)
    expected = (sigma**2 * base).mean()
    out = _as_output(_run(loss_fn, _ncsn_score, x.clone(), sigma.clone(), z.clone(), hints=[
        ("must match the size", "reshape the [batch] levels to [batch, 1] to broadcast against x"),
        ("size of tensor", "reshape the [batch] levels to [batch, 1] to broadcast against x")]),
        (), "loss_fn(score_fn, x, sigma, z)")
    _diagnose(out, expected, [
        ("missing lambda(sigma) = sigma^2 weighting: without it the small levels, whose targets z/sigma are huge, "
         "dominate the loss", base.mean()),
        ("the weighting is lambda(sigma) = sigma^2, not sigma", (sigma * base).mean()),
        ("the weighting is lambda(sigma) = sigma^2, not 1/sigma^2", (base / sigma**2).mean()),
        ("your DSM target is z/sigma instead of -z/sigma: the residual is s(x~, sigma) + z/sigma",
         (sigma**2 * per(_ncsn_score(xn, sigma) - z / sc)).mean()),
        ("missing the one half: 0.5 sigma^2 |s + z/sigma|^2", 2 * expected),
        ("you called the score with the largest level for every sample: pass each sample's own sigma",
         (sigma**2 * per(_ncsn_score(xn, sigmas[0]) + z / sc)).mean()),
        ("you summed over the batch: average it", B * expected),
    ], "the NCSN loss")
    return "mean of 0.5 sigma^2 |s(x + sigma z, sigma) + z/sigma|^2 with per-sample levels, exact"


# -- Chapter 6: annealed Langevin dynamics --------------------------------------------------------


def _ald_variance(sigmas, step_lr, n_steps, data_var, start_var, *, noise=2.0, power=2.0, square=True, reverse=False):
    """Variance after annealed Langevin on N(0, data_var) with exact scores, and variants of it."""
    levels = [float(s) for s in sigmas]
    if reverse:
        levels = levels[::-1]
    sigma_L = float(sigmas[-1])
    V = start_var
    for sig in levels:
        alpha = step_lr * (sig / sigma_L) ** power
        a = 1 - alpha / (data_var + sig**2)
        for _ in range(n_steps):
            V = (a * a if square else a) * V + noise * alpha
    return V


@_checker
def check_ald_variance(variance_fn):
    """Check the variance recursion of annealed Langevin dynamics on one-dimensional Gaussian data.

    Chapter 6, exercise 2. For data N(0, v) the exact score at level sigma is ``-x / (v + sigma**2)``,
    and each step ``x + alpha s + sqrt(2 alpha) z`` with ``alpha = step_lr sigma_i**2 / sigma_L**2`` maps the
    variance to ``(1 - alpha / (v + sigma**2))**2 V + 2 alpha``, levels taken from the largest to the
    smallest. Compared (relative error 1e-6) with this recursion for NCSN's original setting
    (sigma 1 to 0.01, L = 10, T = 100, step_lr 1e-5, a point mass v = 0, start variance 1/3) and for
    the two-mode chapter's setting (sigma 20 to 0.1, T = 100, step_lr 1e-3, v = 1, start variance
    256/12). Mistakes recognised: noise variance alpha instead of 2 alpha, the factor ``a`` not
    squared, the levels in increasing order, a step not scaled by ``sigma_i**2``, a step scaled by
    ``sigma_i`` instead of ``sigma_i**2``.

    Args:
        variance_fn: your function ``variance_fn(sigmas, step_lr, n_steps_each, data_var, start_var) -> float``,
            ``sigmas`` a decreasing 1-D tensor.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(variance_fn, "variance_fn", "variance_fn(sigmas, step_lr, n_steps_each, data_var, start_var)")
    cases = [(geometric(1.0, 0.01, 10), 1e-5, 100, 0.0, 1 / 3), (geometric(20.0, 0.1, 10), 1e-3, 100, 1.0, 256 / 12)]
    out = torch.tensor([float(_as_output(_run(variance_fn, c[0].clone(), *c[1:]), (), "variance_fn(...)")) for c in cases],
                       dtype=DTYPE)

    def all_cases(**kw):
        return torch.tensor([_ald_variance(*c, **kw) for c in cases], dtype=DTYPE)

    _diagnose(out, all_cases(), [
        ("your noise adds alpha per step; the step x + alpha s + sqrt(2 alpha) z adds 2 alpha (alpha is the paper's "
         "alpha/2 here)", all_cases(noise=1.0)),
        ("the variance of a x is a^2 V, not a V", all_cases(square=False)),
        ("your sigmas are increasing; annealed Langevin goes from the largest sigma to the smallest",
         all_cases(reverse=True)),
        ("your step is the same at every level: alpha_i = step_lr sigma_i^2 / sigma_L^2", all_cases(power=0.0)),
        ("the step scales with sigma_i^2, not sigma_i: alpha_i = step_lr sigma_i^2 / sigma_L^2", all_cases(power=1.0)),
    ], "the final variance", rtol=1e-6)
    return "the variance recursion V <- (1 - alpha/(v + sigma^2))^2 V + 2 alpha, exact in two settings"


@_checker
def check_annealed_langevin(sampler):
    """Check an annealed Langevin sampler (sigmas decreasing!) against the exact variance recursion.

    Chapter 6, exercise 3 (and Chapter 4, exercise 4; Song and Ermon 2019, Algorithm 1, in this
    book's convention ``alpha_i = step_lr sigma_i**2 / sigma_L**2``, ``x + alpha_i s + sqrt(2 alpha_i) z``).
    The checker runs your sampler on 20,000 chains in 2-D from N(0, 4 I) with the exact score
    ``-(x - 1.5) / (0.25 + sigma**2)`` of the data N(1.5, 0.25 I) perturbed at sigma, six levels
    from 2 down to 0.1, step_lr 5e-4, 20 steps per level. The exact mean and variance after the
    last step follow from the linear recursion; the measured ones must lie within six standard
    errors (variance about 4%). Mistakes recognised: levels in increasing order, noise
    ``sqrt(alpha)``, the step not scaled by sigma squared, the drift against the score, and a
    sampler that ignores the generator.

    Args:
        sampler: your function ``sampler(score_fn, x, sigmas, step_lr, n_steps_each, generator) -> x``;
            ``score_fn(x, sigma)`` accepts sigma as a float or a ``[batch]`` tensor, ``sigmas`` is a
            decreasing 1-D tensor.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(sampler, "sampler", "sampler(score_fn, x, sigmas, step_lr, n_steps_each, generator)")
    mu, v, n, T, step_lr = 1.5, 0.25, 20_000, 20, 5e-4
    sigmas = geometric(2.0, 0.1, 6)

    def score_fn(x, sigma):
        return _ncsn_score(x, sigma, m=(mu, mu), v=v)

    x0 = 2.0 * torch.randn(n, 2, generator=_gen(113), dtype=DTYPE)

    def predict(reverse=False, noise=2.0, power=2.0, sign=1.0):
        levels = sigmas.tolist()[::-1] if reverse else sigmas.tolist()
        m, V = -mu, 4.0  # mean of x - mu, variance
        for sig in levels:
            alpha = step_lr * (sig / 0.1) ** power
            a = 1 - sign * alpha / (v + sig**2)
            for _ in range(T):
                m, V = a * m, a * a * V + noise * alpha
        return m + mu, V

    out = _as_output(_run(sampler, score_fn, x0.clone(), sigmas.clone(), step_lr, T, _gen(114)), x0.shape,
                     "sampler(score_fn, x, sigmas, step_lr, n_steps_each, generator)")
    again = _as_output(_run(sampler, score_fn, x0.clone(), sigmas.clone(), step_lr, T, _gen(114)), x0.shape,
                       "sampler(...)")
    mean, var = float(out.mean()), float(out.var())

    def agrees(pred):
        m, V = pred
        return abs(mean - m) < 6 * math.sqrt(V / (2 * n)) and abs(var - V) < 6 * V * math.sqrt(2 / (2 * n))

    expected = predict()
    if not agrees(expected):
        for hint, pred in [
            ("your sigmas are increasing; annealed Langevin goes from the largest sigma to the smallest "
             "(iterate over sigmas in the given, decreasing order)", predict(reverse=True)),
            ("your noise has scale sqrt(alpha) instead of sqrt(2 alpha): the variance is about half what it should be",
             predict(noise=1.0)),
            ("your step is the same at every level: scale it as alpha_i = step_lr sigma_i^2 / sigma_L^2",
             predict(power=0.0)),
            ("your step scales with sigma_i, not sigma_i^2", predict(power=1.0)),
        ]:
            if agrees(pred):
                raise _Fail(hint)
        if abs(mean - mu) > 1 and var > 10 * expected[1]:
            raise _Fail("your chains move away from the data: the drift must be + alpha s(x, sigma) (along the score)")
        raise _Fail(f"after the last level the exact mean is {expected[0]:.4f} and variance {expected[1]:.5f}; your "
                    f"chains have mean {mean:.4f} and variance {var:.5f}")
    if not torch.equal(out, again):
        raise _Fail("the same generator seed gave different samples: draw every z with "
                    "torch.randn(x.shape, generator=generator)")
    return (f"mean {mean:.4f} and variance {var:.5f} match the exact {expected[0]:.4f} and {expected[1]:.5f}; "
            f"reproducible from the generator")


# -- Chapter 8: score SDEs as limits of chains -----------------------------------------------------


def _sdes():
    return [("VP", VPSDE()), ("VE", VESDE())]


@_checker
def check_forward_euler_maruyama_step(step):
    """Check one Euler–Maruyama step of a forward score SDE ``dx = f(x, t) dt + g(t) dW``.

    Chapter 8, exercise 2 (Kloeden and Platen 1992; Song et al. 2021). The exact answer is

        ``x + f(x, t) dt + g(t) sqrt(dt) z``,

    with ``f`` and ``g`` from :meth:`companion.sde.SDE.drift` and :meth:`companion.sde.SDE.diffusion`,
    compared to rounding error for VP and VE at t = 0.3, dt = 0.01 on 32 points in 2-D. Mistakes
    recognised: noise ``g dt`` without the square root, ``g**2`` in place of ``g``, the drift with the
    wrong sign, and VP's drift with beta instead of beta/2.

    Args:
        step: your function ``step(sde, x, t, dt, z) -> x_next`` with ``sde`` a
            :class:`companion.sde.VPSDE` or :class:`companion.sde.VESDE`, ``t`` and ``dt`` floats.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(step, "step", "step(sde, x, t, dt, z)")
    g = _gen(115)
    x = 2 * torch.randn(32, 2, generator=g, dtype=DTYPE)
    z = torch.randn(32, 2, generator=g, dtype=DTYPE)
    t, dt = 0.3, 0.01
    for name, sde in _sdes():
        f, gt = sde.drift(x, t), float(sde.diffusion(t))
        out = _as_output(_run(step, sde, x.clone(), t, dt, z.clone()), x.shape, "step(sde, x, t, dt, z)")
        mistakes = [
            ("your noise is g dt: Brownian increments have standard deviation sqrt(dt), so use g(t) sqrt(dt) z",
             x + f * dt + gt * dt * z),
            ("you used g(t)^2 in the noise: the diffusion coefficient g multiplies dW, so the noise is g sqrt(dt) z",
             x + f * dt + gt**2 * math.sqrt(dt) * z),
            ("the drift has the wrong sign: x + f(x, t) dt (for VP f = -beta x / 2 pulls towards 0)",
             x - f * dt + gt * math.sqrt(dt) * z),
        ]
        if name == "VP":
            mistakes.append(("VP's drift is -beta(t) x / 2, not -beta(t) x", x + 2 * f * dt + gt * math.sqrt(dt) * z))
        _diagnose(out, x + f * dt + gt * math.sqrt(dt) * z, mistakes, f"x_next for {name}")
    return "x + f(x, t) dt + g(t) sqrt(dt) z, exact for VP and VE"


@_checker
def check_prior_kl(kl_fn):
    """Check ``KL(p_1 || prior)`` for one-dimensional Gaussian data ``N(m, s**2)`` under a score SDE.

    Chapter 8, exercise 3. With ``(alpha, sigma) = sde.marginal(1)`` the law at t = 1 is
    ``N(alpha m, alpha**2 s**2 + sigma**2)``; with the prior ``N(0, w)``, ``w = sde.prior_std**2``,

        ``KL = 0.5 (V/w + mu**2/w - 1 - log(V/w))``.

    Compared (relative error 1e-6) for m = 1.5, s = 1 under VE (default and sigma_max = 1), VP
    and sub-VP. Mistakes recognised: the KL in the other direction, ``alpha`` left out of the mean
    or of the data variance, the data variance ignored, and a std used as a variance.

    Args:
        kl_fn: your function ``kl_fn(sde, m, s) -> float``.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(kl_fn, "kl_fn", "kl_fn(sde, m, s)")
    m, s = 1.5, 1.0
    sdes = [VESDE(), VESDE(sigma_min=0.01, sigma_max=1.0), VPSDE(), SubVPSDE()]
    out = torch.tensor([float(_as_output(_run(kl_fn, sde, m, s), (), f"kl_fn({sde!r}, {m}, {s})")) for sde in sdes],
                       dtype=DTYPE)

    def kl(f, reverse=False):
        vals = []
        for sde in sdes:
            a, sd = (float(u) for u in sde.marginal(1.0))
            mu, V = f(a, sd)
            w = float(sde.prior_std) ** 2
            vals.append(0.5 * (w / V + mu**2 / V - 1 - math.log(w / V)) if reverse
                        else 0.5 * (V / w + mu**2 / w - 1 - math.log(V / w)))
        return torch.tensor(vals, dtype=DTYPE)

    _diagnose(out, kl(lambda a, sd: (a * m, a**2 * s**2 + sd**2)), [
        ("that is KL(prior || p_1), the other direction: the exercise asks for KL(p_1 || prior)",
         kl(lambda a, sd: (a * m, a**2 * s**2 + sd**2), reverse=True)),
        ("the mean at t = 1 is alpha(1) m, not m", kl(lambda a, sd: (m, a**2 * s**2 + sd**2))),
        ("the data variance is scaled by alpha(1)^2: Var[x_1] = alpha^2 s^2 + sigma(1)^2", kl(lambda a, sd: (a * m, s**2 + sd**2))),
        ("you ignored the data variance: Var[x_1] = alpha^2 s^2 + sigma(1)^2", kl(lambda a, sd: (a * m, sd**2))),
        ("sde.marginal returns the std sigma(1); square it for the variance", kl(lambda a, sd: (a * m, a**2 * s**2 + sd))),
    ], "KL(p_1 || prior) for VE, VE with sigma_max = 1, VP and sub-VP", rtol=1e-6)
    return "0.5 (V/w + mu^2/w - 1 - log(V/w)) with mu = alpha m, V = alpha^2 s^2 + sigma^2, exact for VE, VP, sub-VP"


# -- Chapter 9: the reverse-time SDE ---------------------------------------------------------------


def _reverse_inputs():
    mix = GaussianMixture.isotropic([0.7, 0.3], [[-1.0, 0.5], [1.5, -1.0]], [0.3, 0.5]).to(dtype=DTYPE)
    g = _gen(116)
    x = 1.5 * torch.randn(32, 2, generator=g, dtype=DTYPE)
    z = torch.randn(32, 2, generator=g, dtype=DTYPE)
    return mix, x, z


@_checker
def check_probability_flow_drift(drift_fn):
    """Check the velocity of the probability-flow ODE, ``f(x, t) - 0.5 g(t)**2 s(x, t)``.

    Chapter 9, exercise 1 (Song et al. 2021, Eq. 13). The exact answer is
    ``sde.reverse(score_fn, probability_flow=True).drift(x, t)``, compared to rounding error for VP
    and VE at 32 points in 2-D with times t = 0.05 to 0.95 (one per point, a ``[batch]`` tensor)
    and the exact score of a diffused mixture. Mistakes recognised: the full ``g**2`` (the reverse
    SDE's drift with its noise dropped), the wrong sign of the score term, ``g`` in place of
    ``g**2``, and a missing ``f``.

    Args:
        drift_fn: your function ``drift_fn(sde, score_fn, x, t) -> velocity`` with ``t`` of shape
            ``[batch]`` and ``score_fn(x, t)``.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(drift_fn, "drift_fn", "drift_fn(sde, score_fn, x, t)")
    mix, x, _ = _reverse_inputs()
    t = torch.linspace(0.05, 0.95, len(x), dtype=DTYPE)
    for name, sde in _sdes():
        score_fn = mix.marginal_score(sde)
        f, s = sde.drift(x, t), score_fn(x, t)
        g2 = sde.diffusion(t)[:, None] ** 2
        out = _as_output(_run(drift_fn, sde, score_fn, x.clone(), t.clone()), x.shape, "drift_fn(sde, score_fn, x, t)")
        _diagnose(out, f - 0.5 * g2 * s, [
            ("you used the full g^2: f - g^2 s is the drift of the reverse SDE, and dropping its noise gives the wrong "
             "ODE; the probability flow has f - (1/2) g^2 s", f - g2 * s),
            ("the score term enters with a minus sign: f - (1/2) g^2 s", f + 0.5 * g2 * s),
            ("the score is multiplied by g(t)^2 / 2, not g(t) / 2", f - 0.5 * g2.sqrt() * s),
            ("you left out the forward drift f(x, t) (zero for VE, -beta x / 2 for VP)", -0.5 * g2 * s),
        ], f"the velocity for {name}")
    return "f(x, t) - (1/2) g(t)^2 s(x, t), exact for VP and VE"


@_checker
def check_predictor_step(step, predictor="euler_maruyama"):
    """Check one predictor step of a reverse-time SDE sampler, from t down to t_next.

    Chapter 9 (the predictors of the predictor–corrector sampler; Song et al. 2021, Algorithm 1
    and App. E). With ``h = t - t_next`` the exact answers are those of
    :func:`companion.samplers.predictor_step` on the same z:

    - ``predictor="euler_maruyama"``: ``x - (f(x, t) - g(t)**2 s(x, t)) h + g(t) sqrt(h) z``;
    - ``predictor="reverse_diffusion"``: ``(2 - a) x + b**2 s(x, t) + b z`` with ``x_t = a x_{t_next} + b z``
      the forward transition (:meth:`companion.sde.SDE.transition`).

    Compared to rounding error for VP and VE from t = 0.5 to 0.45 on 32 points in 2-D with the
    exact score of a diffused mixture. Mistakes recognised: a step forward in time, the
    probability-flow factor 1/2, noise ``g h``, no noise, the score taken at t_next, and (reverse
    diffusion) Euler–Maruyama's coefficients, ``b`` in place of ``b**2``, ``x`` in place of ``(2 - a) x``.

    Args:
        step: your function ``step(sde, score_fn, x, t, t_next, z) -> x_next``, ``t`` and ``t_next``
            floats; ``score_fn(x, t)`` takes t as a ``[batch]`` tensor.
        predictor: ``"euler_maruyama"`` or ``"reverse_diffusion"``.

    Returns:
        Check: the result, also printed.
    """
    if predictor not in ("euler_maruyama", "reverse_diffusion"):
        raise ValueError(f"predictor must be 'euler_maruyama' or 'reverse_diffusion'; got {predictor!r}")
    _require_callable(step, "step", "step(sde, score_fn, x, t, t_next, z)")
    mix, x, z = _reverse_inputs()
    t, t_next = 0.5, 0.45
    h = t - t_next
    for name, sde in _sdes():
        score_fn = mix.marginal_score(sde)
        tb = torch.full((len(x),), t, dtype=DTYPE)
        s, s_next = score_fn(x, tb), score_fn(x, torch.full_like(tb, t_next))
        f, g = sde.drift(x, t), float(sde.diffusion(t))
        a, b = (float(v) for v in sde.transition(t_next, t))
        c1, c2, c3 = PREDICTORS[predictor](sde, t, t_next)
        expected = c1 * x + c2 * s + c3 * z
        out = _as_output(_run(step, sde, score_fn, x.clone(), t, t_next, z.clone()), x.shape,
                         "step(sde, score_fn, x, t, t_next, z)")
        if predictor == "euler_maruyama":
            mistakes = [
                ("your step goes forward in time: the reverse SDE runs from t down to t_next, "
                 "x - (f - g^2 s) h + g sqrt(h) z with h = t - t_next > 0", x + (f - g**2 * s) * h + g * math.sqrt(h) * z),
                ("you used the probability-flow factor 1/2: the reverse SDE's drift is f - g^2 s",
                 x - (f - 0.5 * g**2 * s) * h + g * math.sqrt(h) * z),
                ("your noise is g h: the Brownian increment over h has standard deviation sqrt(h)",
                 x - (f - g**2 * s) * h + g * h * z),
                ("your step has no noise: that discretises the wrong ODE (add g sqrt(h) z)", x - (f - g**2 * s) * h),
                ("evaluate the score at the current time t, not at t_next", x - (f - g**2 * s_next) * h + g * math.sqrt(h) * z),
            ]
        else:
            mistakes = [
                ("that is Euler–Maruyama: reverse diffusion uses the discrete forward transition x_t = a x_{t_next} + b z, "
                 "giving (2 - a) x + b^2 s + b z", x - (f - g**2 * s) * h + g * math.sqrt(h) * z),
                ("the score is multiplied by b^2 (the variance of the forward step), not b", (2 - a) * x + b * s + b * z),
                ("the mean coefficient is (2 - a), from x - f with f = (a - 1) x; you kept x unchanged",
                 x + b**2 * s + b * z),
                ("your step has no noise: add b z", (2 - a) * x + b**2 * s),
                ("evaluate the score at the current time t, not at t_next", (2 - a) * x + b**2 * s_next + b * z),
            ]
        _diagnose(out, expected, mistakes, f"x_next for {name}")
    return f"the {predictor.replace('_', ' ')} predictor, exact for VP and VE"


@_checker
def check_ancestral_mean(mean_fn):
    """Check the mean of the ancestral predictor, ``(x + b**2 s(x, t)) / a``.

    Chapter 9, exercise 2 (Ho et al. 2020; Song et al. 2021, App. F). With the forward
    transition ``x_t = a x_{t_next} + b z`` (:meth:`companion.sde.SDE.transition`) the mean is exactly
    the posterior mean ``E[x_{t_next} | x_t = x]``; compared to rounding error with
    :func:`companion.samplers.ancestral_coefficients` for VP and VE from t = 0.5 to 0.45 on 32
    points in 2-D. Mistakes recognised: multiplying by ``a`` instead of dividing, ``b`` in place of
    ``b**2``, no division by ``a``, and ``sigma(t)**2`` in place of ``b**2`` (Tweedie's estimate of ``x_0``,
    not of ``x_{t_next}``).

    Args:
        mean_fn: your function ``mean_fn(sde, score_fn, x, t, t_next) -> x_mean`` with ``t``,
            ``t_next`` floats; ``score_fn(x, t)`` takes t as a ``[batch]`` tensor.

    Returns:
        Check: the result, also printed.
    """
    _require_callable(mean_fn, "mean_fn", "mean_fn(sde, score_fn, x, t, t_next)")
    mix, x, _ = _reverse_inputs()
    t, t_next = 0.5, 0.45
    for name, sde in _sdes():
        score_fn = mix.marginal_score(sde)
        s = score_fn(x, torch.full((len(x),), t, dtype=DTYPE))
        a, b = (float(v) for v in sde.transition(t_next, t))
        std = float(sde.marginal(t)[1])
        c1, c2, _ = ancestral_coefficients(sde, t, t_next)
        out = _as_output(_run(mean_fn, sde, score_fn, x.clone(), t, t_next), x.shape, "mean_fn(sde, score_fn, x, t, t_next)")
        _diagnose(out, c1 * x + c2 * s, [
            ("divide by a, do not multiply: x_t = a x_{t_next} + b z, so x_{t_next} is about (x_t + b^2 s) / a",
             a * (x + b**2 * s)),
            ("the score is multiplied by b^2, the variance of the forward step, not b", (x + b * s) / a),
            ("you forgot to divide by a (it is 1 for VE but not for VP)", x + b**2 * s),
            ("you used sigma(t)^2, the variance of the whole kernel from x_0: that is Tweedie's estimate of x_0; "
             "the one-step posterior mean uses the step's b^2", (x + std**2 * s) / a),
        ], f"the mean for {name}")
    return "(x + b^2 s(x, t)) / a, exact for VP and VE"


__all__ = ["Check"] + list(CHECKERS)
