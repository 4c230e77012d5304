"""ipywidgets controls used by the chapters, and the functions behind their figures (Chapters 1 to
6 and 9).

Each ``*_explorer`` function builds its controls and returns the widget; a chapter displays it in
one call. The website cannot run them (there is no kernel behind a static page), so every
chapter shows a static figure of a few settings beside each control. The ``flawed_*`` functions
reproduce wrong samplers from a source note for Chapter 9.
"""


def _png(fig):
    """Render a matplotlib figure to PNG bytes for an ipywidgets Image, and close it. (An Image
    widget, unlike an Output widget, adds nothing to the cell's outputs when nbval replays it.)"""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Chapter 2 (score functions and energy-based models).


def mixture_score_explorer(xlim=(-5, 5), ylim=(-5, 5), variance=1.0, n_arrows=17):
    """Sliders that move the two means of a two-component isotropic Gaussian mixture
    w N(mu_1, v I) + (1 - w) N(mu_2, v I) in the plane and set the weight w; every change redraws
    the density (filled contours), the score field (arrows) and the means (red crosses) with
    ``companion.plotting.mixture_panel``. A checkbox switches between unit arrows (direction only)
    and arrows scaled by the length of the score.

    Used in Chapter 2 (score functions and energy-based models) to watch the stationary points of
    the score appear, move and merge. Needs ipywidgets and a running kernel; returns the widget.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    from .distributions import GaussianMixture
    from .plotting import mixture_panel

    def slider(value, lo, hi, description, step=0.1):
        return widgets.FloatSlider(value=value, min=lo, max=hi, step=step, description=description,
                                   continuous_update=False, readout_format=".1f")

    m1x, m1y = slider(-2.0, *xlim, "mu_1 x"), slider(0.0, *ylim, "mu_1 y")
    m2x, m2y = slider(2.0, *xlim, "mu_2 x"), slider(0.0, *ylim, "mu_2 y")
    weight = widgets.FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05, description="w",
                                 continuous_update=False, readout_format=".2f")
    unit = widgets.Checkbox(value=True, description="unit arrows")
    out = widgets.Output()

    def redraw(_=None):
        mixture = GaussianMixture.isotropic(
            [weight.value, 1.0 - weight.value], [[m1x.value, m1y.value], [m2x.value, m2y.value]], variance
        )
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(4.5, 4.5))
            mixture_panel(mixture, xlim, ylim, ax=ax, n_arrows=n_arrows, normalize=unit.value)
            ax.set_title(f"w = {weight.value:.2f}")
            display(fig)
            plt.close(fig)

    for control in (m1x, m1y, m2x, m2y, weight, unit):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([m1x, m1y]), widgets.HBox([m2x, m2y]), widgets.HBox([weight, unit]), out])


# ---------------------------------------------------------------------------------------------
# Chapter 1 (Langevin dynamics).


def langevin_targets():
    """The 1-D targets offered by ``langevin_explorer``, as a dict name -> distribution:
    the standard Gaussian, for which ULA's stationary law is known in closed form
    (N(0, 1 / (1 - eps/2)), Chapter 1), and a two-mode mixture 0.7 N(-1.5, 0.5^2) + 0.3 N(1.5, 0.5^2),
    whose narrow components make ULA unstable for eps >= 2 * 0.5^2 = 0.5 near the modes.
    """
    import torch

    from .distributions import Gaussian, GaussianMixture

    return {
        "Gaussian N(0, 1)": Gaussian(torch.zeros(1, dtype=torch.float64), torch.eye(1, dtype=torch.float64)),
        "mixture 0.7 N(-1.5, 0.25) + 0.3 N(1.5, 0.25)": GaussianMixture.isotropic(
            torch.tensor([0.7, 0.3], dtype=torch.float64), torch.tensor([[-1.5], [1.5]], dtype=torch.float64), 0.25
        ),
    }


def draw_langevin_state(target="Gaussian N(0, 1)", method="ULA", step_size=0.1, n_steps=100, x_init=3.0,
                        n_chains=5000, seed=0, xlim=(-5, 5), ax=None):
    """Run ``n_chains`` chains of ULA (``companion.samplers.langevin``) or MALA (``companion.samplers.mala``)
    with step size ``step_size`` for ``n_steps`` steps, all started at ``x_init``, on one of the 1-D targets
    of ``langevin_targets`` (a name, or any 1-D distribution with log_prob and score), and draw the
    histogram of the chains against the target density with ``companion.plotting.samples_hist_1d``.

    For the Gaussian target and ULA with step_size < 2 it also draws ULA's stationary law
    N(0, 1 / (1 - step_size / 2)) as a dashed curve (the discretisation bias of Chapter 1). If the
    chains diverge (step_size too large for the curvature) the panel says so instead. The title
    reports the step size, the number of steps and, for MALA, the acceptance rate. Used for the
    static figure and the interactive control of Chapter 1 (Langevin dynamics); returns the Axes.
    """
    import math

    import matplotlib.pyplot as plt
    import torch

    from .plotting import samples_hist_1d
    from .samplers import langevin, mala

    ax = ax if ax is not None else plt.subplots(figsize=(6, 3))[1]
    name = target if isinstance(target, str) else repr(target)
    dist = langevin_targets()[target] if isinstance(target, str) else target
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.full((n_chains, 1), float(x_init), dtype=dist.means.dtype)
    title = f"{method}, $\\varepsilon$ = {step_size:.3g}, {n_steps} steps"
    try:
        if method == "MALA":
            x, rate = mala(dist.log_prob, dist.score, x0, step_size, n_steps, generator=gen)
            title += f", acceptance {float(rate):.2f}"
        else:
            x = langevin(dist.score, x0, step_size, n_steps, generator=gen)
    except ValueError:
        ax.text(0.5, 0.5, "the chains diverged:\nstep size too large for the curvature", ha="center", va="center",
                transform=ax.transAxes, color="tab:red")
        ax.set(xlim=xlim, title=title, xlabel="$x$", ylabel="density")
        return ax
    samples_hist_1d(x, dist.log_prob, xlim=xlim, ax=ax)
    if method == "ULA" and name.startswith("Gaussian") and step_size < 2:
        v = 1.0 / (1.0 - step_size / 2)
        t = torch.linspace(*xlim, 400, dtype=torch.float64)
        ax.plot(t.numpy(), (torch.exp(-t**2 / (2 * v)) / math.sqrt(2 * math.pi * v)).numpy(), "--", color="tab:red",
                lw=1.2, label="ULA stationary law")
    ax.axvline(float(x_init), color="0.5", lw=0.8, ls=":")
    ax.set_title(title, fontsize=10)
    return ax


def langevin_explorer(n_chains=5000, seed=0):
    """Controls for Langevin sampling on a 1-D target (Chapter 1, Langevin dynamics): the target
    (see ``langevin_targets``), the method (ULA or MALA), the step size eps (log scale, 1e-3 to 3),
    the number of steps and the starting point. Every change reruns ``n_chains`` chains and redraws
    their histogram against the target density with ``draw_langevin_state`` (for the Gaussian and
    ULA, also ULA's biased stationary law). Needs ipywidgets and a running kernel; returns the widget.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    target = widgets.Dropdown(options=list(langevin_targets()), description="target")
    method = widgets.ToggleButtons(options=["ULA", "MALA"], description="method")
    step = widgets.FloatLogSlider(value=0.1, base=10, min=-3, max=0.477, step=0.01, description="step ε",
                                  continuous_update=False, readout_format=".3g")
    steps = widgets.IntSlider(value=100, min=0, max=2000, step=10, description="steps", continuous_update=False)
    start = widgets.FloatSlider(value=3.0, min=-4.0, max=4.0, step=0.5, description="start", continuous_update=False)
    out = widgets.Output()

    def redraw(_=None):
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 3))
            draw_langevin_state(target.value, method.value, step.value, steps.value, start.value, n_chains=n_chains,
                                seed=seed, ax=ax)
            ax.legend(fontsize=8, loc="upper left")
            display(fig)
            plt.close(fig)

    for control in (target, method, step, steps, start):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([target, method]), widgets.HBox([step, steps, start]), out])


# ---------------------------------------------------------------------------------------------
# Chapter 4 (denoising score matching).


def dsm_example_mixture(dtype=None):
    """The two-dimensional three-component Gaussian mixture of Chapter 4 (denoising score matching):
    weights (0.5, 0.3, 0.2), means (-2, -1), (2, -1), (0, 2), small full covariances.
    """
    import torch

    from .distributions import GaussianMixture

    dtype = dtype or torch.get_default_dtype()
    return GaussianMixture(
        torch.tensor([0.5, 0.3, 0.2], dtype=dtype),
        torch.tensor([[-2.0, -1.0], [2.0, -1.0], [0.0, 2.0]], dtype=dtype),
        torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.2, -0.1], [-0.1, 0.3]], [[0.15, 0.0], [0.0, 0.15]]], dtype=dtype),
    )


def tweedie_explorer(mixture=None, xlim=(-5, 5), ylim=(-5, 5), n_noisy=12):
    """Controls for Chapter 4 (denoising score matching): a log-scale slider for the noise level
    sigma (0.05 to 5), a slider for the number of noisy points and a checkbox for the score arrows.
    Every change redraws, with ``companion.plotting.tweedie_panel``, the perturbed density
    p_sigma = p * N(0, sigma^2 I) of ``mixture`` (default: ``dsm_example_mixture()``), its score field,
    and noisy points x~ = x + sigma z joined to their Tweedie denoisings
    E[x | x~] = x~ + sigma^2 grad log p_sigma(x~). The clean points and the noise are fixed, so
    moving the slider moves every noisy point along its own ray. Needs ipywidgets and a running
    kernel; returns the widget.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    from .plotting import tweedie_panel

    mixture = mixture if mixture is not None else dsm_example_mixture()
    sigma = widgets.FloatLogSlider(value=0.5, base=10, min=-1.3, max=0.7, step=0.02, description="σ",
                                   continuous_update=False, readout_format=".3g")
    points = widgets.IntSlider(value=n_noisy, min=0, max=60, step=1, description="noisy points",
                               continuous_update=False)
    field = widgets.Checkbox(value=True, description="score arrows")
    out = widgets.Output()

    def redraw(_=None):
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(4.8, 4.8))
            tweedie_panel(mixture, sigma.value, xlim, ylim, ax=ax, n_noisy=points.value, show_field=field.value)
            ax.set_title(f"σ = {sigma.value:.3g}")
            display(fig)
            plt.close(fig)

    for control in (sigma, points, field):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([sigma, points, field]), out])


# ---------------------------------------------------------------------------------------------
# Chapter 3 (score matching): Hutchinson's trace estimator.

HUTCHINSON_PROBES = ("gaussian", "rademacher", "sphere", "unit sphere")


def hutchinson_demo_matrix(dim=8, seed=0):
    """A fixed, non-symmetric dim x dim matrix A = G / sqrt(dim) + I (G with standard normal
    entries drawn from ``seed``), float64: the stand-in for a Jacobian ∇ₓs(x) in the Hutchinson
    figures of Chapter 3 (score matching). A learned score's Jacobian need not be symmetric, and
    only the symmetric part of A enters the quadratic forms vᵀAv.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5 + torch.eye(dim, dtype=torch.float64)


def _hutchinson_variance(matrix, probe):
    """Variance of one probe's vᵀAv (Chapter 3): 2‖A_s‖²_F (Gaussian), 2(‖A_s‖²_F − Σ A_ii²)
    (Rademacher), 2D/(D+2) (‖A_s‖²_F − (tr A)²/D) (uniform on the sphere of radius √D), and the
    last divided by D² for unit-norm probes."""
    d = matrix.shape[0]
    sym = 0.5 * (matrix + matrix.T)
    fro2, diag2, tr = float(sym.square().sum()), float(matrix.diagonal().square().sum()), float(matrix.trace())
    if probe == "gaussian":
        return 2 * fro2
    if probe == "rademacher":
        return 2 * (fro2 - diag2)
    sphere = 2 * d / (d + 2) * (fro2 - tr**2 / d)
    return sphere if probe == "sphere" else sphere / d**2


def hutchinson_estimates(matrix, probe="gaussian", n_probes=1, n_repeats=4000, seed=0):
    """``n_repeats`` independent Hutchinson estimates of tr(matrix), each the mean of ``n_probes``
    quadratic forms vᵀAv, computed by ``companion.losses.hutchinson_trace`` on the linear field
    s(x) = A x, whose Jacobian is A everywhere. probe is 'gaussian', 'rademacher', 'sphere'
    (uniform on the sphere of radius √D, so that E[v vᵀ] = I) or 'unit sphere' (radius 1: the
    estimates then average tr(A) / D, the bias of unit-norm probes). Returns a [n_repeats] tensor
    (Chapter 3, score matching).
    """
    import torch

    from .losses import hutchinson_trace

    if probe not in HUTCHINSON_PROBES:
        raise ValueError(f"probe must be one of {HUTCHINSON_PROBES}; got {probe!r}")
    matrix = torch.as_tensor(matrix, dtype=torch.float64)
    d = matrix.shape[0]
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(n_repeats, d, dtype=torch.float64)
    kind = "sphere" if probe == "unit sphere" else probe
    est = hutchinson_trace(lambda y: y @ matrix.T, x, n_probes=n_probes, probe=kind, generator=gen).detach()
    return est / d if probe == "unit sphere" else est


def draw_hutchinson_estimates(matrix=None, probe="gaussian", n_probes=1, n_repeats=4000, seed=0, xlim=None, ax=None):
    """Histogram of ``hutchinson_estimates(matrix, probe, n_probes, n_repeats, seed)`` with the true
    trace (solid line) and the mean of the estimates (dashed); the title reports the probe, the
    number of probes, and the empirical standard deviation against the theoretical one,
    sqrt(Var(vᵀAv) / n_probes). ``matrix`` defaults to ``hutchinson_demo_matrix()``. Used for the
    static figure and the interactive control of Chapter 3 (score matching); returns the Axes.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    ax = ax if ax is not None else plt.subplots(figsize=(6, 3))[1]
    matrix = hutchinson_demo_matrix() if matrix is None else torch.as_tensor(matrix, dtype=torch.float64)
    est = hutchinson_estimates(matrix, probe, n_probes, n_repeats, seed).numpy()
    tr = float(matrix.trace())
    theory = (_hutchinson_variance(matrix, probe) / n_probes) ** 0.5
    if xlim is None:
        half = 4 * max(theory, est.std(), 1e-3)
        xlim = (min(tr, est.mean()) - half, max(tr, est.mean()) + half)
    counts, edges = np.histogram(est, bins=60, range=xlim)
    ax.stairs(counts / (len(est) * np.diff(edges)), edges, fill=True, alpha=0.5, color="C0")
    ax.axvline(tr, color="k", lw=1.2, label=f"tr A = {tr:.2f}")
    ax.axvline(float(est.mean()), color="tab:red", lw=1.2, ls="--", label=f"mean = {est.mean():.2f}")
    ax.set(xlim=xlim, xlabel="estimate of tr A", ylabel="density")
    ax.set_title(f"{probe}, {n_probes} probe{'s' if n_probes > 1 else ''}: std {est.std():.2f} (theory {theory:.2f})",
                 fontsize=9)
    return ax


def hutchinson_explorer(matrix=None, n_repeats=4000, seed=0):
    """Controls for Hutchinson's trace estimator (Chapter 3, score matching): the kind of probe
    (Gaussian, Rademacher, uniform on the sphere of radius √D, or unit-norm, which is biased)
    and the number of probes averaged per estimate. Every change redraws the histogram of
    ``n_repeats`` estimates of tr A with ``draw_hutchinson_estimates``, on a fixed axis so that
    settings compare. ``matrix`` defaults to ``hutchinson_demo_matrix()``.

    The plot is sent to an Image widget as PNG bytes rather than displayed into an Output widget,
    so that nothing leaks into the notebook cell's own outputs when the chapter is replayed
    without a widget front end (nbval). Needs ipywidgets and a running kernel; returns the widget.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    import torch

    matrix = hutchinson_demo_matrix() if matrix is None else torch.as_tensor(matrix, dtype=torch.float64)
    tr = float(matrix.trace())
    half = 4 * _hutchinson_variance(matrix, "gaussian") ** 0.5
    xlim = (min(tr / matrix.shape[0], tr) - half, tr + half)
    probe = widgets.Dropdown(options=list(HUTCHINSON_PROBES), value="gaussian", description="probe")
    n_probes = widgets.SelectionSlider(options=[1, 2, 4, 8, 16, 32, 64], value=1, description="probes",
                                       continuous_update=False)
    image = widgets.Image(format="png")

    def redraw(_=None):
        fig, ax = plt.subplots(figsize=(7, 3))
        draw_hutchinson_estimates(matrix, probe.value, n_probes.value, n_repeats, seed, xlim=xlim, ax=ax)
        ax.legend(fontsize=8, loc="upper left")
        image.value = _png(fig)

    for control in (probe, n_probes):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([probe, n_probes]), image])


# ---------------------------------------------------------------------------------------------
# Chapter 6 (annealed Langevin dynamics in practice).


def ald_example_mixture(dtype=None):
    """The two-mode mixture of Chapter 6: 0.8 N((5, 5), I) + 0.2 N((-5, -5), I), the example of
    Song & Ermon (2019) on which plain Langevin dynamics loses the weights.
    """
    import torch

    from .distributions import GaussianMixture

    dtype = dtype or torch.get_default_dtype()
    return GaussianMixture.isotropic(torch.tensor([0.8, 0.2], dtype=dtype),
                                     torch.tensor([[5.0, 5.0], [-5.0, -5.0]], dtype=dtype), 1.0)


def exact_perturbed_score(mixture):
    """s(x, σ) = ∇ log p_σ(x) of a GaussianMixture, exact, in the signature of the samplers (σ a
    [batch] tensor whose entries are all equal, as ``annealed_langevin`` passes it): the exact
    scores of Chapter 6.
    """

    def score(x, sigma):
        return mixture.perturb(float(sigma.reshape(-1)[0])).score(x)

    return score


def ald_samples(step_lr, n_steps_each, n=1000, seed=0, mixture=None, sigmas=None):
    """Annealed Langevin samples of ``mixture`` (default ``ald_example_mixture()``) with its exact
    perturbed scores, started uniformly on [−8, 8]², on ``sigmas`` (default: 10 geometric levels
    from 20 to 0.1), for the step-size exploration of Chapter 6.

    Returns:
        A pair ``(samples, weight)``, weight the fraction of samples with x₁ + x₂ > 0 (the weight of
        the upper mode); samples is None and the weight NaN when the chains diverge, i.e. return
        NaN or points farther than 100 from the origin in some coordinate.
    """
    import torch

    from . import schedules
    from .samplers import annealed_langevin

    mixture = ald_example_mixture(torch.float64) if mixture is None else mixture
    sigmas = schedules.geometric(20.0, 0.1, 10) if sigmas is None else sigmas
    g = torch.Generator().manual_seed(seed)
    x0 = 16 * torch.rand(n, mixture.dim, generator=g, dtype=mixture.means.dtype) - 8
    try:
        x = annealed_langevin(exact_perturbed_score(mixture), x0, sigmas, step_lr=step_lr, n_steps_each=n_steps_each,
                              generator=g)
    except ValueError:  # NaN or infinity
        return None, float("nan")
    if x.abs().max() > 100:  # finite but thrown far outside the data: the chains diverged
        return None, float("nan")
    return x, (x.sum(-1) > 0).double().mean().item()


def draw_ald_samples(step_lr, n_steps_each, n=1000, seed=0, ax=None, lim=9.0):
    """Scatter the samples of ``ald_samples(step_lr, n_steps_each)`` on the two-mode mixture, with the
    measured weight of the upper mode (0.8 is right) in the title (Chapter 6, Exploring the step
    size and the number of steps). Returns the Axes.
    """
    import matplotlib.pyplot as plt

    from .plotting import samples_2d

    ax = ax if ax is not None else plt.subplots(figsize=(3.2, 3.2))[1]
    x, weight = ald_samples(step_lr, n_steps_each, n=n, seed=seed)
    if x is None:
        ax.text(0.5, 0.5, "the chains diverge", ha="center", va="center", transform=ax.transAxes)
        title = "diverged"
    else:
        samples_2d(x, ax=ax, color="tab:red", s=2)
        title = f"upper-mode weight {weight:.2f}"
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    ax.set_title(f"step_lr {step_lr:.2g}, T = {n_steps_each}\n{title}", fontsize=9)
    return ax


def ald_explorer(n=1000, seed=0):
    """Controls for Chapter 6: the step at the last level (``step_lr``, log scale) and the number of
    Langevin steps per level of annealed Langevin dynamics on the mixture
    0.8 N((5, 5), I) + 0.2 N((-5, -5), I) with exact perturbed scores; every change reruns the
    sampler and redraws the samples with the measured weight of the upper mode. The plot is sent
    to an Image widget as PNG bytes (nothing leaks into the cell's outputs without a widget front
    end). Needs ipywidgets and a running kernel; returns the widget.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    step = widgets.FloatLogSlider(value=1e-3, base=10, min=-5, max=0, step=0.25, description="step_lr",
                                  readout_format=".1e", continuous_update=False)
    n_steps = widgets.SelectionSlider(options=[1, 3, 10, 30, 100, 300], value=30, description="steps / level",
                                      continuous_update=False)
    image = widgets.Image(format="png")

    def redraw(_=None):
        fig, ax = plt.subplots(figsize=(4, 4))
        draw_ald_samples(step.value, n_steps.value, n=n, seed=seed, ax=ax)
        image.value = _png(fig)

    for control in (step, n_steps):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([step, n_steps]), image])


# ---------------------------------------------------------------------------------------------
# Chapter 5 (why naive score-based sampling fails, and multi-scale noise).


def perturbed_mixture_explorer(mixture=None, xlim=(-10, 10), ylim=(-10, 10), n_arrows=17):
    """A log-scale slider for the noise level sigma (0.1 to 30) that redraws, with
    ``companion.plotting.mixture_panel``, the exact perturbed density p_sigma = p * N(0, sigma^2 I) of a
    Gaussian mixture p (filled contours), the direction of its score (unit arrows) and the means;
    the title reports the mass of p_sigma on the side of the first mean of the plane halfway between
    the first and the last mean (estimated from 20,000 samples of p_sigma).

    Used in Chapter 5 (why naive score-based sampling fails, and multi-scale noise) to watch the
    separated modes of 0.8 N((5, 5), I) + 0.2 N((-5, -5), I) (the default ``mixture``) merge into one
    Gaussian as sigma grows, which is what lets annealed Langevin dynamics move mass between them.
    Needs ipywidgets and a running kernel; returns the widget.
    """
    import math

    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    import torch
    from IPython.display import display

    from .distributions import GaussianMixture
    from .plotting import mixture_panel

    if mixture is None:
        mixture = GaussianMixture.isotropic([0.8, 0.2], [[5.0, 5.0], [-5.0, -5.0]], 1.0)
    sigma = widgets.FloatLogSlider(value=1.0, base=10, min=-1, max=math.log10(30), step=0.02, description="σ",
                                   continuous_update=False, readout_format=".3g")
    out = widgets.Output()

    def redraw(_=None):
        perturbed = mixture.perturb(sigma.value)
        x = perturbed.sample(20_000, generator=torch.Generator().manual_seed(0))
        mu = perturbed.means
        midpoint = (mu[0] + mu[-1]) / 2  # the plane halfway between the first and the last mean
        heavy = float(((x - midpoint) @ (mu[0] - mu[-1]) > 0).double().mean())
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(4.8, 4.8))
            mixture_panel(perturbed, xlim, ylim, ax=ax, n_arrows=n_arrows)
            ax.set_title(f"σ = {sigma.value:.3g}: mass {heavy:.2f} on the side of the first mean")
            display(fig)
            plt.close(fig)

    sigma.observe(redraw, names="value")
    redraw()
    return widgets.VBox([sigma, out])


# ---------------------------------------------------------------------------------------------
# Chapter 9 (reversing time): flawed "samplers" found in one of the source notes, reproduced so that
# the chapter can show what they produce next to the correct ones. They are wrong on purpose; only
# the crashes are fixed (a batch is flattened, gradients are off), never the maths.


def flawed_euler_ode(score_fn, x, n_steps=100, dt=0.01):
    """The flawed ``euler_ode_sampler`` of a source note (Chapter 9, Pitfalls in the source notes):
    x ← x − dt·s(x), n_steps times, with a score that takes no time. For s(x) = −x it multiplies x
    by (1 + dt)^n_steps, away from the data.
    """
    import torch

    with torch.no_grad():
        for _ in range(n_steps):
            x = x - dt * score_fn(x)
    return x


def flawed_heun_ode(score_fn, x, n_steps=100, dt=0.01):
    """The flawed ``heun_ode_sampler`` of a source note (Chapter 9, Pitfalls in the source notes):
    k₁ = −s(x), k₂ = −s(x + dt k₁), x ← x + dt (k₁ + k₂)/2, n_steps times.
    """
    import torch

    with torch.no_grad():
        for _ in range(n_steps):
            k1 = -score_fn(x)
            k2 = -score_fn(x + dt * k1)
            x = x + 0.5 * dt * (k1 + k2)
    return x


def flawed_adaptive_ode(score_fn, x, T=1.0, tol=1e-5):
    """The flawed ``adaptive_ode_sampler`` of a source note (Chapter 9, Pitfalls in the source notes):
    scipy's RK45 on dx/dt = −s(x) from t = T to 0, the batch flattened into one state (the source
    handles one sample and crashes on a tensor that requires grad; both are fixed here, the drift is
    not).
    """
    import torch
    from scipy.integrate import solve_ivp

    shape, dtype = x.shape, x.dtype

    def rhs(t, y):
        with torch.no_grad():
            return -score_fn(torch.from_numpy(y).reshape(shape).to(dtype)).reshape(-1).double().numpy()

    sol = solve_ivp(rhs, (T, 0.0), x.reshape(-1).double().numpy(), method="RK45", rtol=tol, atol=tol)
    return torch.from_numpy(sol.y[:, -1]).reshape(shape).to(dtype)


def flawed_sde_sampler(sde, score_fn, x, n_steps=1000, generator=None):
    """The flawed ``sde_sampler`` for VP of a source note (Chapter 9, Pitfalls in the source notes): it
    evaluates the score and never uses it, and steps x ← x + f(x, t) Δt + g(t) √Δt z with the
    *forward* drift f = −½β(t) x while t decreases, so it simulates the forward process and returns
    about N(0, I) whatever the data. ``score_fn(x, t)`` is called, as in the source, and ignored.
    """
    import torch

    dt = sde.T / n_steps
    with torch.no_grad():
        for i in reversed(range(n_steps)):
            t = i * dt
            tb = torch.full(x.shape[:1], t, dtype=x.dtype)
            _ = score_fn(x, tb)  # computed and discarded, as in the source
            drift = sde.drift(x, tb)
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            x = x + drift * dt + float(sde.diffusion(t)) * dt**0.5 * noise
    return x
