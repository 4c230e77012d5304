"""Score-matching objectives (Chapters 3, 4, 5 and 9).

Every loss is a plain function ``loss(score_fn, x, ...) -> tensor``. Unless a docstring says
otherwise a per-sample value is a **sum over dimensions** carrying the ½ written in its formula,
and ``reduction='mean'`` (the default) averages over the batch; ``reduction='sum'`` sums and
``reduction='none'`` returns the [batch] per-sample values. Images and other [batch, ...] inputs
are handled by flattening each sample: ``score_fn`` receives and returns tensors of x's shape.

.. list-table::
   :header-rows: 1

   * - loss
     - per-sample value
     - needs
   * - ``esm_loss``
     - ½‖s(x) − ∇log p(x)‖²
     - the true score (Hyvärinen 2005; Chapter 3)
   * - ``ism_loss``
     - ½‖s(x)‖² + tr ∇ₓs(x)
     - the Jacobian trace, exact or estimated (Hyvärinen 2005; Chapter 3)
   * - ``ssm_loss``
     - vᵀ∇ₓs(x) v + ½(vᵀs(x))², or vᵀ∇ₓs(x) v + ½‖s(x)‖² with SSM-VR
     - one vector–Jacobian product per projection (Song, Garg, Shi & Ermon 2019; Chapter 3)
   * - ``dsm_loss``
     - ½‖s(x + σz) + z/σ‖²
     - nothing but noise (Vincent 2011; Chapter 4)
   * - ``ncsn_loss``
     - ½ λ(σ)‖s(x + σz, σ) + z/σ‖², σ drawn from the levels
     - a noise-conditional model (Song & Ermon 2019; Chapter 5)
   * - ``sde_loss``
     - ½ λ(t)‖s(α x + σ z, t) + z/σ‖², t ~ U(eps, T)
     - a time-conditional model and an SDE (Song et al. 2021; Chapter 9)
"""

import torch
from torch.func import jacrev, vmap

from . import _checks
from .schedules import check_decreasing
from .sde import batch_view

REDUCTIONS = ("mean", "sum", "none")
PROBES = ("rademacher", "gaussian", "sphere")


def _reduce(per_sample, reduction):
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")


def _flat(t):
    return t.reshape(t.shape[0], -1)


def _probes(shape, probe, generator, like):
    """Random projections v with E[v v^T] = I, shape [n, batch, D].

    'rademacher': entries ±1. 'gaussian': N(0, I). 'sphere': uniform on the sphere of radius
    sqrt(D), so that E[v v^T] = I as well (a unit-norm probe would give tr(J) / D instead).
    """
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}; got {probe!r}")
    if probe == "rademacher":
        v = torch.randint(0, 2, shape, generator=generator, device=like.device).to(like.dtype) * 2 - 1
        return v
    v = torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)
    if probe == "sphere":
        v = v / v.norm(dim=-1, keepdim=True) * shape[-1] ** 0.5
    return v


def jacobian_trace(score_fn, x, *, method="vectorized"):
    """tr ∇ₓs(x) for every sample, exactly, shape [batch]; differentiable in the parameters. The term
    of implicit score matching (Hyvärinen 2005) whose cost grows with the dimension (Chapter 3, The
    cost of the Jacobian trace).

    Args:
        score_fn: a callable x -> s(x), same shape as x.
        x: [batch, ...] points.
        method: ``'loop'``, D backward passes, one per input dimension, each keeping the graph: the
            direct transcription of the formula, and the baseline of the cost benchmark. Or
            ``'vectorized'`` (the default), the per-sample Jacobian by reverse-mode products batched
            with torch.func (vmap of jacrev): the same arithmetic in one batched call; it requires a
            ``score_fn`` that treats samples independently (no batch statistics) and takes
            O(batch·D²) memory.

    Returns:
        A [batch] tensor.
    """
    _checks.batch(x)
    if method == "loop":
        x = x.detach().requires_grad_(True)
        s = _flat(score_fn(x))
        trace = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i in range(s.shape[1]):
            (g,) = torch.autograd.grad(s[:, i].sum(), x, create_graph=True)
            trace = trace + _flat(g)[:, i]
        return trace
    if method == "vectorized":
        sample_shape = x.shape[1:]

        def single(xi):  # one flattened sample -> its flattened score
            return score_fn(xi.reshape(1, *sample_shape)).reshape(-1)

        jac = vmap(jacrev(single))(_flat(x))  # [batch, D, D]
        return jac.diagonal(dim1=-2, dim2=-1).sum(-1)
    raise ValueError(f"method must be 'loop' or 'vectorized'; got {method!r}")


def _score_and_vjp_quadratic(score_fn, x, v):
    """s(x) and vᵀ∇ₓs(x) v for probes v of shape [n, batch, D]; returns ([n, batch, D], [n, batch])."""
    n = v.shape[0]
    xr = x.detach().repeat(n, *([1] * (x.ndim - 1))).requires_grad_(True)  # [n*batch, ...]
    vr = v.reshape(n * x.shape[0], -1)
    s = _flat(score_fn(xr))
    (vjp,) = torch.autograd.grad((s * vr).sum(), xr, create_graph=True)  # vᵀJ for each sample
    quad = (_flat(vjp) * vr).sum(-1)
    return s.reshape(n, x.shape[0], -1), quad.reshape(n, x.shape[0])


def hutchinson_trace(score_fn, x, *, n_probes=1, probe="rademacher", generator=None):
    """Hutchinson's unbiased estimate of tr ∇ₓs(x), shape [batch]: the mean over ``n_probes`` probes
    of vᵀ∇ₓs(x) v with E[v vᵀ] = I (Hutchinson 1989; Chapter 3, Hutchinson's trace estimator). One
    backward pass serves all probes.

    Its variance for a fixed Jacobian J is 2‖J_sym‖²_F / n_probes for Gaussian probes and
    2(‖J_sym‖²_F − Σᵢ Jᵢᵢ²) / n_probes for Rademacher probes, which is never larger.

    Args:
        score_fn: a callable x -> s(x), same shape as x.
        x: [batch, ...] points.
        n_probes: the number of probes averaged, a positive integer.
        probe: ``'rademacher'`` (entries ±1), ``'gaussian'`` (N(0, I)) or ``'sphere'`` (uniform on
            the sphere of radius √D, so that E[v vᵀ] = I as well).
        generator: the torch.Generator of the probes.
    """
    _checks.batch(x)
    _checks.positive_int(n_probes, "n_probes")
    v = _probes((n_probes, x.shape[0], x[0].numel()), probe, generator, x)
    _, quad = _score_and_vjp_quadratic(score_fn, x, v)
    return quad.mean(0)


def esm_loss(score_fn, x, true_score_fn, *, reduction="mean"):
    """Explicit score matching, the Fisher divergence ½ E‖s(x) − ∇log p(x)‖² (Hyvärinen 2005;
    Chapter 3, The Fisher divergence and why it cannot be computed).

    Only usable when the true score is known (a test case, or a known target as in
    ``companion.distributions``); it is the quantity the other losses match up to a constant.

    Args:
        score_fn: the model, a callable x -> s(x).
        x: [batch, ...] samples of p.
        true_score_fn: the callable x -> ∇log p(x).
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
    """
    _checks.batch(x)
    _check_reduction(reduction)
    per_sample = 0.5 * _flat(score_fn(x) - true_score_fn(x)).square().sum(-1)
    return _reduce(per_sample, reduction)


def ism_loss(score_fn, x, *, trace="exact", n_probes=1, probe="rademacher", generator=None, reduction="mean"):
    """Implicit score matching (Hyvärinen 2005; Chapter 3, Hyvärinen's theorem): E[½‖s(x)‖² + tr ∇ₓs(x)].

    Equal to ``esm_loss`` minus ½ E‖∇log p(x)‖², a constant independent of the model, whenever
    p·s vanishes at infinity.

    Args:
        score_fn: the model, a callable x -> s(x).
        x: [batch, ...] samples of p.
        trace: ``'exact'`` uses the vectorised exact Jacobian trace, ``'loop'`` the per-dimension
            loop (D backward passes; the benchmark baseline), and ``'hutchinson'`` Hutchinson's
            estimator with ``n_probes`` probes of kind ``probe``, which makes the loss an unbiased
            estimate (it then equals SSM-VR with the same probes).
        n_probes: probes per sample for ``trace='hutchinson'``.
        probe: ``'rademacher'``, ``'gaussian'`` or ``'sphere'`` (see ``hutchinson_trace``).
        generator: the torch.Generator of the probes.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
    """
    _checks.batch(x)
    _check_reduction(reduction)
    if trace in ("exact", "loop"):
        x = x.detach().requires_grad_(True)
        s = score_fn(x)
        tr = jacobian_trace(score_fn, x, method="vectorized" if trace == "exact" else "loop")
    elif trace == "hutchinson":
        _checks.positive_int(n_probes, "n_probes")
        v = _probes((n_probes, x.shape[0], x[0].numel()), probe, generator, x)
        s_rep, quad = _score_and_vjp_quadratic(score_fn, x, v)
        s, tr = s_rep[0], quad.mean(0)
    else:
        raise ValueError(f"trace must be 'exact', 'loop' or 'hutchinson'; got {trace!r}")
    per_sample = 0.5 * _flat(s).square().sum(-1) + tr
    return _reduce(per_sample, reduction)


def ssm_loss(score_fn, x, *, n_projections=1, probe="gaussian", variance_reduction=False, generator=None,
             reduction="mean"):
    """Sliced score matching (Song, Garg, Shi & Ermon 2019; Chapter 3, Sliced score matching)::

        per sample: mean over projections v of  vᵀ∇ₓs(x) v + ½ (vᵀ s(x))²,   E[v vᵀ] = I.

    Its expectation over v equals ``ism_loss``: E_v[vᵀJv] = tr J and E_v[(vᵀs)²] = ‖s‖². With
    ``variance_reduction=True`` (SSM-VR) the second term is replaced by its expectation ½‖s(x)‖²,
    which removes part of the projection noise. ``probe='sphere'`` draws v uniformly on the sphere
    of radius √D, which keeps E[v vᵀ] = I (unit-norm probes would scale the loss by 1/D).

    Args:
        score_fn: the model, a callable x -> s(x).
        x: [batch, ...] samples of p.
        n_projections: projections per sample, a positive integer.
        probe: ``'gaussian'``, ``'rademacher'`` or ``'sphere'``.
        variance_reduction: use SSM-VR.
        generator: the torch.Generator of the projections.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
    """
    _checks.batch(x)
    _check_reduction(reduction)
    _checks.positive_int(n_projections, "n_projections")
    v = _probes((n_projections, x.shape[0], x[0].numel()), probe, generator, x)
    s, quad = _score_and_vjp_quadratic(score_fn, x, v)
    if variance_reduction:
        second = 0.5 * s.square().sum(-1)
    else:
        second = 0.5 * (s * v).sum(-1).square()
    per_sample = (quad + second).mean(0)
    return _reduce(per_sample, reduction)


def dsm_loss(score_fn, x, sigma, *, generator=None, reduction="mean"):
    """Denoising score matching at one noise level (Vincent 2011; Chapter 4, Vincent's equivalence)::

        per sample: ½ ‖s(x̃) + z/σ‖²,   x̃ = x + σ z,  z ~ N(0, I),

    since ∇_x̃ log N(x̃; x, σ²I) = −z/σ. It equals ½ E‖s(x̃) − ∇log p_σ(x̃)‖² plus the constant
    C(σ) = ½ E‖z/σ‖² − ½ E‖∇log p_σ(x̃)‖² (for Gaussian data N(μ, Σ):
    C = D/(2σ²) − ½ tr((Σ + σ²I)⁻¹)). No weighting λ(σ) is applied here.

    Args:
        score_fn: the model, a callable x̃ -> s(x̃).
        x: [batch, ...] clean samples.
        sigma: a positive number, or a [batch] tensor of per-sample levels (the multi-scale losses
            build on this).
        generator: the torch.Generator of the noise z.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
    """
    _checks.batch(x)
    _check_reduction(reduction)
    sigma = _per_sample_sigma(sigma, x)
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    x_noisy = x + sigma * z
    per_sample = 0.5 * _flat(score_fn(x_noisy) + z / sigma).square().sum(-1)
    return _reduce(per_sample, reduction)


def ncsn_loss(score_fn, x, sigmas, *, weighting="sigma2", generator=None, reduction="mean"):
    """The multi-scale denoising objective of NCSN (Song & Ermon 2019, Eq. 6; Chapter 5,
    Noise-conditional score networks and the NCSN objective).

    Each sample gets one level σ drawn uniformly from ``sigmas``, then::

        per sample: ½ λ(σ) ‖s(x + σz, σ) + z/σ‖²,   λ(σ) = σ² (weighting='sigma2') or 1 ('none'),

    summed over dimensions and averaged over the batch: numerically the reference implementation's
    ``anneal_dsm_score_estimation``. With λ = σ² every level contributes a term of the same size,
    ½‖σ s + z‖², whatever σ is (Chapter 4, Many noise levels and the weighting).

    Args:
        score_fn: the model, called as ``score_fn(x_noisy, sigma)`` with a [batch] tensor of levels.
        x: [batch, ...] clean samples.
        sigmas: the levels, strictly decreasing.
        weighting: ``'sigma2'`` or ``'none'``.
        generator: the torch.Generator of the levels and the noise.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
    """
    _checks.batch(x)
    _check_reduction(reduction)
    sigmas = check_decreasing(sigmas).to(device=x.device, dtype=x.dtype)
    if weighting not in ("sigma2", "none"):
        raise ValueError(f"weighting must be 'sigma2' or 'none'; got {weighting!r}")
    idx = torch.randint(0, len(sigmas), x.shape[:1], generator=generator, device=x.device)
    sigma = sigmas[idx]
    per_sample = dsm_loss(lambda x_noisy: score_fn(x_noisy, sigma), x, sigma, generator=generator, reduction="none")
    if weighting == "sigma2":
        per_sample = sigma**2 * per_sample
    return _reduce(per_sample, reduction)


def ncsn_loss_per_level(score_fn, x, sigmas, *, generator=None, batch_size=None):
    """The NCSN objective's term at each level (Song & Ermon 2019, Eq. 6; Chapter 7, Where in the
    ladder the samples go wrong)::

        L_i = ½ E‖σ_i s(x + σ_i z, σ_i) + z‖²,   the mean over x and z ~ N(0, I),

    σ² times ``dsm_loss`` at σ_i; ``ncsn_loss`` over the same levels is their average in expectation. Compared on
    training and on held-out data it shows overfitting (held-out higher) or its absence (both
    alike). Every level sees the same noise z, drawn once from ``generator``.

    Args:
        score_fn: the model, called as ``score_fn(x_noisy, sigma)`` with a [batch] tensor of levels.
        x: [N, ...] clean samples.
        sigmas: the levels at which to evaluate, any order.
        generator: the torch.Generator of z.
        batch_size: evaluate in chunks of this many samples (default: all at once).

    Returns:
        A [len(sigmas)] tensor.
    """
    _checks.batch(x)
    sigmas = _checks.as_float_tensor(sigmas, "sigmas", dtype=x.dtype, device=x.device).reshape(-1)
    if not (sigmas > 0).all():
        raise ValueError("every sigma must be positive")
    if batch_size is not None:
        _checks.positive_int(batch_size, "batch_size")
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    chunks = list(zip(x.split(batch_size or len(x)), z.split(batch_size or len(x))))
    out = torch.empty(len(sigmas), dtype=x.dtype, device=x.device)
    for i, sigma in enumerate(sigmas):
        total = sum(0.5 * _flat(sigma * score_fn(xb + sigma * zb, sigma.expand(len(xb))) + zb).square().sum()
                    for xb, zb in chunks)
        out[i] = total / len(x)
    return out


def _per_sample_sigma(sigma, x):
    """sigma as a tensor broadcastable against x: a positive number, or one level per sample."""
    if isinstance(sigma, torch.Tensor) and sigma.numel() > 1:
        if sigma.shape != x.shape[:1]:
            raise ValueError(f"sigma must be a number or a [batch] = [{x.shape[0]}] tensor; got {tuple(sigma.shape)}")
        if not (sigma > 0).all():
            raise ValueError("every sigma must be positive")
        return sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    _checks.positive_number(sigma, "sigma")
    return sigma


def sde_loss(sde, score_fn, x, *, eps=1e-5, likelihood_weighting=False, generator=None, reduction="mean"):
    """Continuous-time denoising score matching for a score SDE (Song et al. 2021, Eq. 7; Chapter 9).

    Each sample gets a time t ~ U(eps, T) and x_t = α(t) x + σ(t) z (``sde.marginal``), then::

        per sample: ½ λ(t) ‖s(x_t, t) + z/σ(t)‖²,

    with λ(t) = σ(t)² (the default: ½‖σ s + z‖², every time weighted alike, as NCSN's λ = σ²)
    or λ(t) = g(t)² (``likelihood_weighting=True``: then the time integral of the loss bounds the
    KL divergence from the data to the model, Song, Durkan, Murray & Ermon 2021).

    Args:
        sde: a process of ``companion.sde``.
        score_fn: the model, called as ``score_fn(x_t, t)`` with a [batch] tensor of times.
        x: [batch, ...] clean samples.
        eps: the smallest time, 0 < eps < T.
        likelihood_weighting: use λ(t) = g(t)² instead of σ(t)².
        generator: the torch.Generator of the times and the noise.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
    """
    _checks.batch(x)
    _check_reduction(reduction)
    _checks.positive_number(eps, "eps")
    if not eps < sde.T:
        raise ValueError(f"eps must be below T = {sde.T}; got {eps}")
    t = eps + (sde.T - eps) * torch.rand(x.shape[:1], generator=generator, dtype=x.dtype, device=x.device)
    x_t, z = sde.perturb(x, t, generator=generator)
    _, std = sde.marginal(t)
    std = batch_view(std, x)
    if likelihood_weighting:
        per_sample = 0.5 * sde.diffusion(t) ** 2 * _flat(score_fn(x_t, t) + z / std).square().sum(-1)
    else:
        per_sample = 0.5 * _flat(std * score_fn(x_t, t) + z).square().sum(-1)
    return _reduce(per_sample, reduction)
