"""Data sets: toy 2-D point clouds for the chapters on learning the score.

Each function returns a float tensor [n, 2] drawn with an explicit generator, so a chapter gets
the same points on every run. Shapes are scaled to a spread of a few units around the origin.
"""

import math

import torch

from . import _checks


def _uniform(n, generator):
    return torch.rand(n, generator=generator)


def swiss_roll(n, *, noise=0.1, generator=None):
    """A 2-D Swiss roll: the spiral (t cos t, t sin t) / 3 for t in [1.5π, 4.5π], plus Gaussian noise."""
    _checks.non_negative_int(n, "n")
    t = 1.5 * math.pi * (1 + 2 * _uniform(n, generator))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], -1) / 3
    return x + noise * torch.randn(n, 2, generator=generator)


def moons(n, *, noise=0.1, generator=None):
    """Two interleaving half circles, centred and scaled to about [-2, 2]²."""
    _checks.non_negative_int(n, "n")
    upper = _uniform(n, generator) < 0.5
    t = math.pi * _uniform(n, generator)
    x = torch.where(upper[:, None], torch.stack([t.cos(), t.sin()], -1), torch.stack([1 - t.cos(), 0.5 - t.sin()], -1))
    x = (x - torch.tensor([0.5, 0.25])) * 1.5
    return x + noise * torch.randn(n, 2, generator=generator)


def rings(n, *, radii=(1.0, 2.0, 3.0), noise=0.08, generator=None):
    """Concentric circles with equal numbers of points per unit length."""
    _checks.non_negative_int(n, "n")
    radii = torch.as_tensor(radii, dtype=torch.get_default_dtype())
    k = torch.multinomial(radii / radii.sum(), n, replacement=True, generator=generator)
    t = 2 * math.pi * _uniform(n, generator)
    x = radii[k, None] * torch.stack([t.cos(), t.sin()], -1)
    return x + noise * torch.randn(n, 2, generator=generator)


def checkerboard(n, *, squares=4, size=4.0, generator=None):
    """Uniform on the black squares of a squares × squares board of side `size`, centred at 0."""
    _checks.non_negative_int(n, "n")
    cell = size / squares
    i = torch.randint(0, squares, (n,), generator=generator)
    j = torch.randint(0, squares // 2, (n,), generator=generator) * 2 + i % 2
    corner = torch.stack([i, j], -1).to(torch.get_default_dtype()) * cell - size / 2
    return corner + cell * torch.rand(n, 2, generator=generator)
