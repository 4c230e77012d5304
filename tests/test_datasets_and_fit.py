"""Toy data sets and the small training loop."""

import math

import pytest
import torch

from companion import datasets
from companion.distributions import Gaussian
from companion.losses import dsm_loss
from companion.nets import ScoreMLP
from companion.train import fit


@pytest.mark.parametrize("name", ["swiss_roll", "moons", "rings", "checkerboard"])
def test_toy_sets_are_deterministic_and_shaped(name):
    make = getattr(datasets, name)
    a = make(1000, generator=torch.Generator().manual_seed(0))
    b = make(1000, generator=torch.Generator().manual_seed(0))
    assert a.shape == (1000, 2) and torch.equal(a, b)
    assert a.abs().max() < 6 and a.std(0).min() > 0.5


def test_checkerboard_fills_only_black_squares():
    x = datasets.checkerboard(20_000, squares=4, size=4.0, generator=torch.Generator().manual_seed(1))
    cells = ((x + 2) // 1).long()
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)
    black = counts[counts > 0]
    assert len(black) == 8 and (black - 2500).abs().max() < 5 * math.sqrt(2500)


def test_rings_lie_on_their_radii():
    x = datasets.rings(6000, radii=(1.0, 3.0), noise=0.0, generator=torch.Generator().manual_seed(2))
    r = x.norm(dim=-1)
    assert torch.minimum((r - 1).abs(), (r - 3).abs()).max() < 1e-5
    assert abs((r > 2).float().mean().item() - 0.75) < 0.03  # points per unit length: 3:1


def test_fit_with_dsm_learns_the_perturbed_score():
    torch.manual_seed(3)
    target = Gaussian(torch.tensor([1.0, -1.0]), torch.tensor([[1.0, 0.6], [0.6, 0.8]]))
    g = torch.Generator().manual_seed(4)
    data = target.sample(10_000, generator=g)
    net = ScoreMLP(2, hidden=64, depth=2)
    sigma = 0.3
    losses = fit(lambda m, x: dsm_loss(m, x, sigma, generator=g), net, data, n_steps=1500, lr=3e-3, generator=g)
    assert losses[-100:].mean() < losses[:100].mean()
    probe = target.sample(2000, generator=g)
    exact = target.perturb(sigma).score(probe)
    with torch.no_grad():
        rel = (net(probe) - exact).norm(dim=-1).mean() / exact.norm(dim=-1).mean()
    assert rel < 0.15


def test_fit_validates_its_arguments():
    net = ScoreMLP(2, hidden=8, depth=1)
    with pytest.raises(ValueError, match="batch_size"):
        fit(lambda m, x: m(x).sum(), net, torch.zeros(10, 2), n_steps=1, batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        fit(lambda m, x: m(x).sum(), net, torch.zeros(10, 2), n_steps=1, lr=-1.0)
