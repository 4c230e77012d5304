"""Data sets (toy 2-D, MNIST from IDX or .npz, 8×8 digits) and the small training loop."""

import gzip
import math

import numpy as np

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


def write_idx(path, array):
    """Write a uint8 IDX file (LeCun et al.'s format): magic 0x0000 08 ndim, big-endian dims, bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.numpy().tobytes())


@pytest.mark.parametrize("layout", ["flat", "torchvision-gz"])
def test_load_mnist_reads_idx_files(tmp_path, layout):
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([3, 1, 4, 1, 5], dtype=torch.uint8)
    folder = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    suffix = "" if layout == "flat" else ".gz"
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", images)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", labels)
    x, y = datasets.load_mnist(tmp_path)
    assert torch.equal(x, images) and torch.equal(y, labels.long())
    with pytest.raises(ValueError, match="no MNIST test IDX files"):
        datasets.load_mnist(tmp_path, split="test")


def test_load_mnist_reads_an_npz(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    np.savez(tmp_path / "d.npz", images=images, labels=np.array([7, 2], dtype=np.uint8))
    x, y = datasets.load_mnist(tmp_path / "d.npz")
    assert x.shape == (2, 28, 28) and y.tolist() == [7, 2]
    np.savez(tmp_path / "bad.npz", x=images)
    with pytest.raises(ValueError, match="'images' and 'labels'"):
        datasets.load_mnist(tmp_path / "bad.npz")


def test_download_without_a_network_says_what_to_do(tmp_path):
    with pytest.raises(RuntimeError, match="without a network"):
        datasets.download_mnist(tmp_path, url="http://127.0.0.1:9/")


def test_dequantize_fills_each_pixel_bin_uniformly():
    images = torch.tensor([[[0, 255], [128, 7]]], dtype=torch.uint8).expand(20_000, 2, 2).contiguous()
    x = datasets.dequantize(images, generator=torch.Generator().manual_seed(6))
    assert x.shape == (20_000, 1, 2, 2)
    k = images[:, None].double()
    assert ((x >= k / 256) & (x <= (k + 1) / 256)).all()  # <= : float32 may round u ~ 1 up
    torch.testing.assert_close(x.mean(0).double(), (k[0] + 0.5) / 256, rtol=0, atol=2e-4)
    with pytest.raises(ValueError, match="uint8"):
        datasets.dequantize(images.float())


def test_sklearn_digits_are_bundled():
    x, y = datasets.sklearn_digits()
    assert x.shape == (1797, 8, 8) and x.max() == 16 and set(y.tolist()) == set(range(10))


def test_checkerboard_needs_an_even_board():
    # With an odd board the rows have different numbers of black cells; the sampler assumes equal.
    with pytest.raises(ValueError, match="even integer"):
        datasets.checkerboard(10, squares=3)
