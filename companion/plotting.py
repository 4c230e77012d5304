"""Figures used by the chapters (Chapters 1 to 9): densities, score fields, samples, trajectories,
image grids and the NCSN diagram.

Plotting lives here and nowhere in the numerical modules. Every function draws on a given
matplotlib Axes (or a new one) and returns it, so chapters can compose panels.
"""

import matplotlib.pyplot as plt
import torch


def _axes(ax):
    return ax if ax is not None else plt.subplots(figsize=(4, 4))[1]


def grid_2d(xlim, ylim, n=100, dtype=None):
    """A regular n × n grid over ``xlim`` × ``ylim``, the grid of the 2-D figures (Chapters 2, 4 and 5).

    Returns:
        A triple ``(xx, yy, points)``, the [n, n] coordinate arrays and the [n·n, 2] points, of
        ``dtype`` (torch's default if None).
    """
    xs = torch.linspace(*xlim, n, dtype=dtype)
    ys = torch.linspace(*ylim, n, dtype=dtype)
    xx, yy = torch.meshgrid(xs, ys, indexing="xy")
    return xx, yy, torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)


def density_2d(log_prob_fn, xlim=(-4, 4), ylim=(-4, 4), n=150, ax=None, cmap="Blues", dtype=None, **kwargs):
    """Filled contours of exp(log_prob_fn) on an n × n grid of the given dtype (default: torch's), the
    density panels of Chapters 1, 2 and 4 to 9; further keyword arguments go to ``contourf``.
    Returns the Axes.
    """
    ax = _axes(ax)
    xx, yy, pts = grid_2d(xlim, ylim, n, dtype)
    with torch.no_grad():
        p = log_prob_fn(pts).exp().reshape(n, n)
    ax.contourf(xx.numpy(), yy.numpy(), p.numpy(), levels=20, cmap=cmap, **kwargs)
    ax.set(xlim=xlim, ylim=ylim, aspect="equal")
    return ax


def score_field(score_fn, xlim=(-4, 4), ylim=(-4, 4), n=20, ax=None, normalize=False, color="k", dtype=None,
                **kwargs):
    """Quiver plot of a 2-D vector field s(x) on an n × n grid of the given dtype (default: torch's),
    the score fields of Chapters 1 and 2 (Chapter 2, The score as a vector field). Returns the Axes.

    With ``normalize=True`` every arrow has unit length (direction only); otherwise arrows are
    scaled together, so their lengths compare.
    """
    ax = _axes(ax)
    xx, yy, pts = grid_2d(xlim, ylim, n, dtype)
    with torch.no_grad():
        s = score_fn(pts).reshape(n, n, 2)
    if normalize:
        s = s / s.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    ax.quiver(xx.numpy(), yy.numpy(), s[..., 0].numpy(), s[..., 1].numpy(), color=color, **kwargs)
    ax.set(xlim=xlim, ylim=ylim, aspect="equal")
    return ax


def samples_2d(x, ax=None, s=2, alpha=0.5, **kwargs):
    """Scatter plot of [N, 2] samples, the sample panels of Chapters 1, 2 and 4 to 9. Returns the Axes."""
    ax = _axes(ax)
    x = torch.as_tensor(x).detach().cpu()
    ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=s, alpha=alpha, **kwargs)
    ax.set(aspect="equal")
    return ax


# ---------------------------------------------------------------------------------------------
# Chapter 2 (score functions): a mixture panel and the flow lines of a score field.


def mixture_panel(mixture, xlim=(-5, 5), ylim=(-5, 5), ax=None, n_arrows=17, normalize=True, show_means=True,
                  cmap="Blues", arrow_color="k"):
    """Draw a 2-D Gaussian mixture: its density as filled contours, its score field as arrows on
    top, and its component means as red crosses; returns the Axes.

    The grid is cast to the mixture's dtype, so float32 and float64 mixtures both work. With
    normalize=True every arrow has unit length (the direction of the score only), which keeps the
    arrows readable where the score is large. Used for the static figures and by
    ``companion.widgets.mixture_score_explorer`` in Chapter 2 (score functions and energy-based models).
    """
    dtype = mixture.means.dtype
    ax = density_2d(lambda x: mixture.log_prob(x.to(dtype)), xlim, ylim, ax=ax, cmap=cmap)
    score_field(lambda x: mixture.score(x.to(dtype)), xlim, ylim, n=n_arrows, ax=ax, normalize=normalize,
                color=arrow_color, width=0.004)
    if show_means:
        m = mixture.means.detach().cpu()
        ax.scatter(m[:, 0].numpy(), m[:, 1].numpy(), marker="x", color="tab:red", s=30, zorder=3)
    ax.set(xlabel=r"$x_1$", ylabel=r"$x_2$")
    return ax


def score_streamlines(score_fn, xlim=(-4, 4), ylim=(-4, 4), n=80, ax=None, color="k", density=1.0, linewidth=0.6,
                      dtype=torch.float64, **kwargs):
    """Flow lines of a 2-D vector field: curves x(t) with dx/dt = s(x), drawn with matplotlib's
    streamplot on an n x n grid of the given dtype (pass the dtype score_fn expects); returns the Axes.

    For a score s = grad log p these are the paths of the gradient flow of log p: they run from low
    to high density and end at stationary points of the score (Chapter 2, score functions).
    """
    ax = _axes(ax)
    xx, yy, pts = grid_2d(xlim, ylim, n, dtype=dtype)
    with torch.no_grad():
        s = score_fn(pts).reshape(n, n, 2).to(torch.float64).cpu()
    ax.streamplot(xx.numpy(), yy.numpy(), s[..., 0].numpy(), s[..., 1].numpy(), color=color, density=density,
                  linewidth=linewidth, arrowsize=0.7, **kwargs)
    ax.set(xlim=xlim, ylim=ylim, aspect="equal")
    return ax


# ---------------------------------------------------------------------------------------------
# Chapter 1 (Langevin dynamics): 1-D histograms against a density, and 2-D trajectories.


def samples_hist_1d(x, log_prob_fn=None, xlim=(-5, 5), bins=80, ax=None, n_grid=400, color="C0", label="samples",
                    density_label="target density", density_color="k"):
    """Histogram of 1-D samples, scaled so that its area is the fraction of samples inside xlim,
    with the density exp(log_prob_fn) drawn on top as a curve; returns the Axes.

    ``x`` has shape [N] or [N, 1]; ``log_prob_fn`` takes a [n_grid, 1] tensor (the convention of
    ``companion.distributions``) and must be normalised. Samples outside xlim are left out of the
    bars but still count in N, so a chain that has not converged, or has drifted away, shows as
    missing mass. Used in Chapter 1 (Langevin dynamics) for the inverse-CDF sampler and for ULA /
    MALA histograms, and by ``companion.widgets.langevin_explorer``.
    """
    import numpy as np

    ax = _axes(ax)
    x = torch.as_tensor(x).detach().reshape(-1).to(torch.float64).cpu().numpy()
    counts, edges = np.histogram(x, bins=bins, range=xlim)
    heights = counts / (max(len(x), 1) * np.diff(edges))
    ax.stairs(heights, edges, fill=True, alpha=0.45, color=color, label=label)
    if log_prob_fn is not None:
        t = torch.linspace(*xlim, n_grid, dtype=torch.float64)
        with torch.no_grad():
            dens = log_prob_fn(t[:, None]).exp().reshape(-1).to(torch.float64).cpu()
        ax.plot(t.numpy(), dens.numpy(), color=density_color, lw=1.2, label=density_label)
    ax.set(xlim=xlim, xlabel="$x$", ylabel="density")
    return ax


def trajectories_2d(path, ax=None, color="C3", lw=0.8, alpha=0.8, mark_ends=True, **kwargs):
    """Draw 2-D trajectories: ``path`` is a list of T tensors of shape [N, 2] (or one [T, N, 2]
    tensor), one polyline per chain, with a small circle at each start and a filled dot at each
    end; returns the Axes.

    Collect ``path`` with the ``callback`` of a companion sampler, e.g.
    ``langevin(..., callback=lambda d: path.append(d["x"][:5]))``. Used in Chapter 1 (Langevin
    dynamics) to contrast gradient ascent with Langevin dynamics.
    """
    ax = _axes(ax)
    p = torch.stack(list(path)) if not isinstance(path, torch.Tensor) else path
    p = p.detach().to(torch.float64).cpu().numpy()
    for n in range(p.shape[1]):
        ax.plot(p[:, n, 0], p[:, n, 1], color=color, lw=lw, alpha=alpha, **kwargs)
    if mark_ends:
        ax.scatter(p[0, :, 0], p[0, :, 1], s=18, facecolors="none", edgecolors=color, zorder=3)
        ax.scatter(p[-1, :, 0], p[-1, :, 1], s=18, color=color, zorder=3)
    return ax


# ---------------------------------------------------------------------------------------------
# Chapter 4 (denoising score matching): a perturbed mixture, its score and the Tweedie denoiser.


def tweedie_panel(mixture, sigma, xlim=(-5, 5), ylim=(-5, 5), ax=None, n_arrows=15, n_noisy=12, seed=0,
                  show_field=True, cmap="Blues"):
    """Draw the perturbed density p_sigma = p * N(0, sigma^2 I) of a Gaussian mixture p (filled
    contours), its score grad log p_sigma (unit arrows, if show_field) and the Tweedie denoiser on
    a few noisy points; returns the Axes.

    The noisy points are x~ = x + sigma z with x ~ p and z ~ N(0, I) drawn from ``seed``, so that the
    same clean points and the same noise are used for every sigma. Each x~ (open circle) is joined
    by a red segment to its posterior mean E[x | x~] (red dot), computed by
    ``mixture.posterior_mean``; Tweedie's formula says that this is x~ + sigma^2 grad log p_sigma(x~).
    Used in Chapter 4 (denoising score matching) for a static figure and by
    ``companion.widgets.tweedie_explorer``.
    """
    if n_noisy < 0:
        raise ValueError(f"n_noisy must be non-negative; got {n_noisy}")
    dtype = mixture.means.dtype
    perturbed = mixture.perturb(sigma)
    ax = density_2d(lambda x: perturbed.log_prob(x.to(dtype)), xlim, ylim, ax=ax, cmap=cmap)
    if show_field:
        score_field(lambda x: perturbed.score(x.to(dtype)), xlim, ylim, n=n_arrows, ax=ax, normalize=True,
                    color="0.25", width=0.0035)
    if n_noisy:
        gen = torch.Generator().manual_seed(seed)
        clean = mixture.sample(n_noisy, generator=gen)
        noisy = clean + sigma * torch.randn(clean.shape, generator=gen, dtype=dtype)
        with torch.no_grad():
            denoised = mixture.posterior_mean(noisy, sigma)
        noisy, denoised = noisy.detach().cpu().numpy(), denoised.detach().cpu().numpy()
        for a, b in zip(noisy, denoised):
            ax.plot([a[0], b[0]], [a[1], b[1]], color="tab:red", lw=1.0, zorder=3)
        ax.scatter(noisy[:, 0], noisy[:, 1], s=22, facecolors="white", edgecolors="tab:red", zorder=4)
        ax.scatter(denoised[:, 0], denoised[:, 1], s=14, color="tab:red", zorder=5)
    ax.set(xlim=xlim, ylim=ylim, xlabel=r"$x_1$", ylabel=r"$x_2$")
    return ax


# ---------------------------------------------------------------------------------------------
# Chapter 3 (score matching): where a learned score is wrong.


def score_error_panel(score_fn, true_score_fn, log_prob_fn=None, xlim=(-5, 5), ylim=(-5, 5), ax=None, n=120,
                      n_arrows=17, vmax=None, cmap="Reds", arrow_color="k", dtype=None):
    """Compare a learned 2-D score with the exact one: the error ‖s_θ(x) − s_p(x)‖ as a colour map
    on an n x n grid (clipped at ``vmax``), the density of p as contour lines (if ``log_prob_fn`` is
    given), and the learned field as unit arrows on an n_arrows x n_arrows grid; returns the Axes,
    whose ``images[0]`` can feed a colorbar.

    The grid is cast to ``dtype`` (default: torch's default dtype), so float32 networks and float64
    targets both work. Used in Chapter 3 (score matching) to show that a score learned from samples
    is accurate where the data are and wrong far from them, where the loss puts no weight.
    """
    ax = _axes(ax)
    dtype = dtype or torch.get_default_dtype()
    xx, yy, pts = grid_2d(xlim, ylim, n)
    with torch.no_grad():
        err = (score_fn(pts.to(dtype)) - true_score_fn(pts.to(dtype))).norm(dim=-1).reshape(n, n).to(torch.float64)
    ax.imshow(err.numpy(), origin="lower", extent=(*xlim, *ylim), cmap=cmap, vmin=0, vmax=vmax, aspect="equal",
              interpolation="bilinear")
    if log_prob_fn is not None:
        with torch.no_grad():
            dens = log_prob_fn(pts.to(dtype)).exp().reshape(n, n).to(torch.float64)
        ax.contour(xx.numpy(), yy.numpy(), dens.numpy(), levels=5, colors="tab:blue", linewidths=0.6)
    score_field(lambda x: score_fn(x.to(dtype)), xlim, ylim, n=n_arrows, ax=ax, normalize=True, color=arrow_color,
                width=0.004)
    return ax


# ---------------------------------------------------------------------------------------------
# Chapter 6 (annealed Langevin dynamics in practice): grids of small images.


def image_grid(images, ncol=8, ax=None, title=None, vmin=0.0, vmax=1.0, cmap="gray_r"):
    """Tile a batch of one-channel images ([N, 1, H, W] or [N, H, W]) into one picture, ``ncol`` per
    row with a one-pixel gap, and show it on ``ax`` without ticks; values are clipped to
    [vmin, vmax] (dark ink on white with the default cmap). The digit grids of Chapters 6 and 7.
    Returns the Axes.
    """
    imgs = torch.as_tensor(images).detach().to(torch.float64).cpu()
    if imgs.ndim == 4:
        if imgs.shape[1] != 1:
            raise ValueError(f"image_grid draws one-channel images; got {imgs.shape[1]} channels")
        imgs = imgs[:, 0]
    if imgs.ndim != 3:
        raise ValueError(f"images must have shape [N, 1, H, W] or [N, H, W]; got {tuple(imgs.shape)}")
    n, h, w = imgs.shape
    nrow = -(-n // ncol)
    canvas = torch.full((nrow * (h + 1) + 1, ncol * (w + 1) + 1), float("nan"), dtype=torch.float64)
    for k in range(n):
        r, c = divmod(k, ncol)
        canvas[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = imgs[k].clamp(vmin, vmax)
    ax = ax if ax is not None else plt.subplots(figsize=(0.45 * ncol, 0.45 * nrow))[1]
    cm = plt.get_cmap(cmap).with_extremes(bad="white")
    ax.imshow(canvas.numpy(), cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set(xticks=[], yticks=[])
    if title is not None:
        ax.set_title(title)
    return ax


def ncsn_diagram(ngf=64, image_size=28, ax=None):
    """Draw the layout of the NCSN RefineNet (companion.refinenet) as boxes and arrows: the residual
    stages down the left, the RefineNet blocks up the right, the skip connections between them,
    each box labelled with its channels and resolution (Chapter 7). Returns the Axes.
    """
    from matplotlib.patches import FancyBboxPatch

    ax = ax if ax is not None else plt.subplots(figsize=(9, 5))[1]
    h, w = image_size, 2 * ngf
    half = image_size // 2
    left = [("input $2x-1$", f"1×{h}×{h}", "0.92"), ("conv 3×3", f"{ngf}×{h}×{h}", "0.92"),
            ("res1: 2 residual blocks", f"{ngf}×{h}×{h}", "C0"),
            ("res2: 2 blocks, halves the size", f"{w}×{half}×{half}", "C0"),
            ("res3: 2 blocks, dilation 2", f"{w}×{half}×{half}", "C0"),
            ("res4: 2 blocks, dilation 4", f"{w}×{half}×{half}", "C0")]
    right = [("output: norm, ELU, conv 3×3", f"1×{h}×{h}", "0.92"), None,
             ("refine4 (end)", f"{ngf}×{h}×{h}", "C1"), ("refine3", f"{ngf}×{half}×{half}", "C1"),
             ("refine2", f"{w}×{half}×{half}", "C1"), ("refine1", f"{w}×{half}×{half}", "C1")]
    bw, bh, xl, xr = 3.0, 0.62, 0.0, 5.0
    y = [5 - i for i in range(6)]

    def box(x, yy, text, shape, colour):
        face = colour if colour.startswith("0.") else plt.matplotlib.colors.to_rgba(colour, 0.25)
        ax.add_patch(FancyBboxPatch((x, yy - bh / 2), bw, bh, boxstyle="round,pad=0.04", fc=face, ec="0.3"))
        ax.text(x + bw / 2, yy + 0.06, text, ha="center", va="center", fontsize=8)
        ax.text(x + bw / 2, yy - bh / 2 + 0.08, shape, ha="center", va="bottom", fontsize=7, color="0.3")

    def arrow(x0, y0, x1, y1, **kw):
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color=kw.get("color", "0.2"),
                                                            lw=0.9, ls=kw.get("ls", "-")))

    for i, item in enumerate(left):
        box(xl, y[i], *item)
        if i:
            arrow(xl + bw / 2, y[i - 1] - bh / 2 - 0.05, xl + bw / 2, y[i] + bh / 2 + 0.05)
    for i, item in enumerate(right):
        if item is not None:
            box(xr, y[i], *item)
    for i in (2, 3, 4, 5):  # skip connections into the refine block at the same depth
        arrow(xl + bw + 0.05, y[i], xr - 0.05, y[i], color="C2", ls="--")
    for i in (5, 4, 3):
        arrow(xr + bw / 2, y[i] + bh / 2 + 0.05, xr + bw / 2, y[i - 1] - bh / 2 - 0.05)
    arrow(xr + bw / 2, y[2] + bh / 2 + 0.05, xr + bw / 2, y[0] - bh / 2 - 0.05)
    ax.text(xr + bw + 0.15, y[4], "each refine block:\nRCU on each input,\nfusion (MSF),\n"
            "chained pooling (CRP),\noutput RCU", fontsize=7, va="center", color="0.3")
    ax.text((xl + bw + xr) / 2, y[2] + 0.12, "features", fontsize=7, ha="center", color="C2")
    ax.set(xlim=(-0.3, xr + bw + 1.6), ylim=(y[-1] - 0.6, y[0] + 0.6), xticks=[], yticks=[])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return ax


# ---------------------------------------------------------------------------------------------
# Chapter 8 (from Markov chains to SDEs): the exact marginal densities of a 1-D forward process.


def marginal_density_1d(mixture, sde, t_range=(0.0, 1.0), xlim=(-5, 5), n_t=200, n_x=300, ax=None, cmap="Blues",
                        normalize_columns=True, **kwargs):
    """Draw the exact marginal densities p_t(x) of a 1-D mixture under a score SDE as an image over
    the (t, x) plane, time along the horizontal axis; returns the Axes.

    p_t is ``mixture.marginal_log_prob(sde, x, t)``, the mixture with every component N(μ, v) turned
    into N(α(t) μ, α(t)² v + σ(t)²). With normalize_columns=True each time column is divided by its
    maximum, so that a density that spreads out (VE) stays visible next to a concentrated one; the
    image data is then the density relative to its peak at that time. Forward trajectories can be
    drawn on top with ax.plot(times, paths). Used in Chapter 8 (from Markov chains to SDEs).
    """
    ax = _axes(ax)
    dtype = mixture.means.dtype
    ts = torch.linspace(*t_range, n_t, dtype=dtype)
    xs = torch.linspace(*xlim, n_x, dtype=dtype)
    tt, xx = torch.meshgrid(ts, xs, indexing="xy")  # [n_x, n_t]
    with torch.no_grad():
        dens = mixture.marginal_log_prob(sde, xx.reshape(-1, 1), tt.reshape(-1)).exp().reshape(n_x, n_t)
    if normalize_columns:
        dens = dens / dens.amax(0, keepdim=True)
    ax.pcolormesh(ts.numpy(), xs.numpy(), dens.to(torch.float64).numpy(), cmap=cmap, shading="auto", **kwargs)
    ax.set(xlim=t_range, ylim=xlim, xlabel="$t$", ylabel="$x$")
    return ax
