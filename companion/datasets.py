"""Data sets (Chapters 3 to 7): toy 2-D point clouds for the chapters on learning the score, MNIST
from IDX files or an .npz (Chapter 7), scikit-learn's bundled 8×8 digits (Chapter 6) and uniform
dequantisation.

Each toy function returns a float tensor [n, 2] drawn with an explicit generator, so a chapter
gets the same points on every run. Shapes are scaled to a spread of a few units around the
origin.
"""

import math

import torch

from . import _checks


def _uniform(n, generator):
    return torch.rand(n, generator=generator)


def swiss_roll(n, *, noise=0.1, generator=None):
    """A 2-D Swiss roll: the spiral (t cos t, t sin t) / 3 for t in [1.5π, 4.5π], plus Gaussian noise
    of std ``noise`` (the toy data of Chapter 4's exercises). Returns an [n, 2] tensor.
    """
    _checks.non_negative_int(n, "n")
    t = 1.5 * math.pi * (1 + 2 * _uniform(n, generator))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], -1) / 3
    return x + noise * torch.randn(n, 2, generator=generator)


def moons(n, *, noise=0.1, generator=None):
    """Two interleaving half circles, centred and scaled to about [−2, 2]², plus Gaussian noise of std
    ``noise``: toy data for learning a score (Chapters 3 and 4). Returns an [n, 2] tensor.
    """
    _checks.non_negative_int(n, "n")
    upper = _uniform(n, generator) < 0.5
    t = math.pi * _uniform(n, generator)
    x = torch.where(upper[:, None], torch.stack([t.cos(), t.sin()], -1), torch.stack([1 - t.cos(), 0.5 - t.sin()], -1))
    x = (x - torch.tensor([0.5, 0.25])) * 1.5
    return x + noise * torch.randn(n, 2, generator=generator)


def rings(n, *, radii=(1.0, 2.0, 3.0), noise=0.08, generator=None):
    """Concentric circles of the given ``radii`` with equal numbers of points per unit length, plus
    Gaussian noise of std ``noise``: toy data for learning a score (Chapters 3 and 4). Returns an
    [n, 2] tensor.
    """
    _checks.non_negative_int(n, "n")
    radii = torch.as_tensor(radii, dtype=torch.get_default_dtype())
    k = torch.multinomial(radii / radii.sum(), n, replacement=True, generator=generator)
    t = 2 * math.pi * _uniform(n, generator)
    x = radii[k, None] * torch.stack([t.cos(), t.sin()], -1)
    return x + noise * torch.randn(n, 2, generator=generator)


def checkerboard(n, *, squares=4, size=4.0, generator=None):
    """Uniform on the black squares of a ``squares`` × ``squares`` board of side ``size``, centred at 0:
    toy data with sharp edges for learning a score (Chapters 3 and 4). Returns an [n, 2] tensor.
    """
    _checks.non_negative_int(n, "n")
    if isinstance(squares, bool) or not isinstance(squares, int) or squares < 2 or squares % 2:
        raise ValueError(f"squares must be an even integer >= 2 (every row then has squares/2 black cells); got {squares!r}")
    cell = size / squares
    i = torch.randint(0, squares, (n,), generator=generator)
    j = torch.randint(0, squares // 2, (n,), generator=generator) * 2 + i % 2
    corner = torch.stack([i, j], -1).to(torch.get_default_dtype()) * cell - size / 2
    return corner + cell * torch.rand(n, 2, generator=generator)


# --- images -------------------------------------------------------------------------------------

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def _read_idx(path):
    """Read an IDX file (optionally gzipped) into a uint8 tensor, as in LeCun et al.'s format."""
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = data[0] * 256 + data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).reshape(shape)


def _find_idx(folder, stem):
    from pathlib import Path

    folder = Path(folder)
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / "MNIST" / "raw" / stem,
                      folder / "MNIST" / "raw" / f"{stem}.gz", folder / "raw" / stem, folder / "raw" / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(path, split="train"):
    """MNIST digits (LeCun et al. 1998) as a pair (images uint8 [N, 28, 28], labels int64 [N]), the
    data of Chapter 7.

    ``path`` is either an .npz file with arrays ``images`` and ``labels``, or a folder holding the
    four IDX files (plain or .gz), directly or in torchvision's layout MNIST/raw/. ``split`` chooses
    the IDX pair (``'train'`` or ``'test'``); an .npz holds whatever it holds. To fetch the IDX files
    where a network is available, use ``download_mnist``.
    """
    from pathlib import Path

    path = Path(path)
    if path.suffix == ".npz":
        import numpy as np

        with np.load(path) as data:
            if "images" not in data or "labels" not in data:
                raise ValueError(f"{path} must hold arrays 'images' and 'labels'; it has {sorted(data.keys())}")
            return torch.from_numpy(data["images"]).to(torch.uint8), torch.from_numpy(data["labels"]).long()
    if split not in MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    if not path.is_dir():
        raise ValueError(f"{path} is neither an .npz file nor a folder of MNIST IDX files")
    found = [_find_idx(path, stem) for stem in MNIST_FILES[split]]
    if None in found:
        raise ValueError(f"no MNIST {split} IDX files under {path} (expected {MNIST_FILES[split][0]}[.gz] "
                         f"and {MNIST_FILES[split][1]}[.gz]); fetch them with companion.datasets.download_mnist")
    return _read_idx(found[0]), _read_idx(found[1]).long()


def download_mnist(root, url=MNIST_URL):
    """Download the four gzipped MNIST IDX files into ``root`` where a network is available, skipping
    files already there, and return ``root`` (Chapter 7).

    Raises:
        RuntimeError: if a download fails.
    """
    import urllib.error
    import urllib.request
    from pathlib import Path

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stem in (s for pair in MNIST_FILES.values() for s in pair):
        target = root / f"{stem}.gz"
        if target.is_file():
            continue
        try:
            urllib.request.urlretrieve(url + target.name, target.with_suffix(".part"))
        except (urllib.error.URLError, OSError) as err:
            raise RuntimeError(f"could not download {url + target.name} ({err}); without a network, pass "
                               f"load_mnist a folder of IDX files or an .npz with images and labels") from err
        target.with_suffix(".part").rename(target)
    return root


def sklearn_digits():
    """scikit-learn's bundled 8×8 digits (1,797 images, 17 grey levels) as a pair (uint8 [N, 8, 8]
    with values 0–16, labels int64 [N]); no download needed. The data of Chapter 6, A live run.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.from_numpy(d.images).to(torch.uint8), torch.from_numpy(d.target).long()


def dequantize(images, levels=256, generator=None):
    """Uniform dequantisation to [0, 1): (k + u) / levels for integer pixels k, u ~ U(0, 1), as the
    NCSN reference does for 8-bit images (Chapter 6, Preprocessing, loss and optimisation,
    evaluation). Returns float [N, 1, H, W] (a channel axis is added to [N, H, W] input).
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be integer pixel values (uint8); got {images.dtype}")
    x = images.to(torch.get_default_dtype())
    if x.ndim == 3:
        x = x[:, None]
    return (x + torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)) / levels
