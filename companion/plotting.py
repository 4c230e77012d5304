"""Figures used by the chapters: densities, score fields, samples and trajectories.

Plotting lives here and nowhere in the numerical modules. Every function draws on a given
matplotlib Axes (or a new one) and returns it, so chapters can compose panels.
"""

import matplotlib.pyplot as plt
import torch


def _axes(ax):
    return ax if ax is not None else plt.subplots(figsize=(4, 4))[1]


def grid_2d(xlim, ylim, n=100, dtype=torch.float64):
    """A regular grid: returns (xx, yy, points) with points of shape [n*n, 2]."""
    xs = torch.linspace(*xlim, n, dtype=dtype)
    ys = torch.linspace(*ylim, n, dtype=dtype)
    xx, yy = torch.meshgrid(xs, ys, indexing="xy")
    return xx, yy, torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)


def density_2d(log_prob_fn, xlim=(-4, 4), ylim=(-4, 4), n=150, ax=None, cmap="Blues", **kwargs):
    """Filled contours of exp(log_prob_fn) on a grid."""
    ax = _axes(ax)
    xx, yy, pts = grid_2d(xlim, ylim, n)
    with torch.no_grad():
        p = log_prob_fn(pts).exp().reshape(n, n)
    ax.contourf(xx.numpy(), yy.numpy(), p.numpy(), levels=20, cmap=cmap, **kwargs)
    ax.set(xlim=xlim, ylim=ylim, aspect="equal")
    return ax


def score_field(score_fn, xlim=(-4, 4), ylim=(-4, 4), n=20, ax=None, normalize=False, color="k", **kwargs):
    """Quiver plot of a 2-D vector field s(x) on an n x n grid.

    With normalize=True every arrow has unit length (direction only); otherwise arrows are
    scaled together, so their lengths compare.
    """
    ax = _axes(ax)
    xx, yy, pts = grid_2d(xlim, ylim, n)
    with torch.no_grad():
        s = score_fn(pts).reshape(n, n, 2)
    if normalize:
        s = s / s.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    ax.quiver(xx.numpy(), yy.numpy(), s[..., 0].numpy(), s[..., 1].numpy(), color=color, **kwargs)
    ax.set(xlim=xlim, ylim=ylim, aspect="equal")
    return ax


def samples_2d(x, ax=None, s=2, alpha=0.5, **kwargs):
    """Scatter plot of [N, 2] samples."""
    ax = _axes(ax)
    x = torch.as_tensor(x).detach().cpu()
    ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=s, alpha=alpha, **kwargs)
    ax.set(aspect="equal")
    return ax
