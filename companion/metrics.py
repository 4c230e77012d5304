"""Sample-quality measures (Chapters 7 and 9).

For point sets: the maximum mean discrepancy with a Gaussian kernel and the sliced Wasserstein
distance (Chapter 9). For digit images: a small classifier whose confident share, class histogram
and features (for a Fréchet distance, as FID does with Inception features) judge samples against
held-out real digits (Chapter 7, How good are the samples?).
"""

from pathlib import Path

import torch
from torch import nn

from . import _checks

SHIPPED_CLASSIFIER = Path(__file__).with_name("weights") / "digit_classifier.pt"


def _flat(x):
    return x.reshape(x.shape[0], -1)


def mmd(x, y, bandwidth=1.0):
    """Unbiased estimate of the squared maximum mean discrepancy (Gretton et al. 2012; Chapter 9) with
    the Gaussian kernel k(a, b) = exp(−‖a − b‖² / (2 h²)), h = ``bandwidth``::

        MMD² = mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j) − 2 mean_{i,j} k(x_i, y_j).

    Zero in expectation when x and y come from the same law; it can be slightly negative. Samples
    are flattened; each set needs at least 2 points. Returns a 0-d tensor.
    """
    _checks.batch(x, "x")
    _checks.batch(y, "y")
    x, y = _flat(x), _flat(y)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("mmd needs at least 2 points in each set")

    def k(a, b):
        return torch.exp(-torch.cdist(a, b).square() / (2 * bandwidth**2))

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
            - 2 * kxy.mean())


def sliced_wasserstein(x, y, n_projections=256, generator=None):
    """Sliced 2-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015; Chapter 9),
    √(mean_θ W₂²(θᵀx, θᵀy)) over ``n_projections`` random directions θ uniform on the sphere, each
    1-D distance computed exactly by sorting. x and y must have the same size. For two sets that
    differ by a shift δ it estimates ‖δ‖/√D, the value for infinitely many directions. Returns a 0-d
    tensor.
    """
    _checks.batch(x, "x")
    _checks.batch(y, "y")
    x, y = _flat(x), _flat(y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape; got {tuple(x.shape)} and {tuple(y.shape)}")
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=x.dtype, device=x.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, py = (x @ theta).sort(dim=0).values, (y @ theta).sort(dim=0).values
    return (px - py).square().mean().sqrt()


def frechet_distance(features_a, features_b):
    """‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^(1/2) Σ_b Σ_a^(1/2))^(1/2)): the squared 2-Wasserstein
    distance between the Gaussians with the two sets' means and covariances, the Fréchet distance of
    FID (Heusel et al. 2017; Chapter 7, How good are the samples?). Computed in float64 with
    symmetric eigendecompositions; returns a Python float.

    Args:
        features_a: [N, ...] features of one set (flattened per sample).
        features_b: [M, ...] features of the other set.
    """
    a, b = _flat(features_a).double(), _flat(features_b).double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], a.shape[1]), torch.cov(b.T).reshape(b.shape[1], b.shape[1])
    vals, vecs = torch.linalg.eigh(cov_a)
    root_a = vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return ((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross).item()


class DigitClassifier(nn.Module):
    """A small convolutional classifier for 28×28 digits in [0, 1] (the book's evaluation tool,
    Chapter 7): two conv–ReLU–pool stages and a 128-unit hidden layer whose activations are the
    features of ``frechet_distance``.
    """

    def __init__(self, n_classes=10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
        )
        self.head = nn.Linear(128, n_classes)

    def features(self, x):
        """The 128 activations of the hidden layer for images x of shape [batch, 1, 28, 28], the features
        of the Fréchet distance of Chapter 7.
        """
        return self.body(x)

    def forward(self, x):
        """The class logits, shape [batch, n_classes], for images x of shape [batch, 1, 28, 28] in [0, 1]
        (Chapter 7).
        """
        return self.head(self.body(x))


def train_classifier(images, labels, *, n_steps=2000, batch_size=128, lr=1e-3, generator=None, progress=False):
    """Train a ``DigitClassifier`` on uint8 images [N, 28, 28] with Adam, with small random shifts
    (±2 pixels) so that it does not rely on exact centring (Chapter 7). The number of classes is
    ``labels.max() + 1``. Returns the model in eval mode.
    """
    from tqdm.auto import trange

    model = DigitClassifier(n_classes=int(labels.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x_all = images[:, None].to(torch.get_default_dtype()) / 255
    for _ in trange(n_steps, disable=not progress, desc="classifier"):
        idx = torch.randint(0, len(x_all), (batch_size,), generator=generator)
        dx, dy = torch.randint(-2, 3, (2,), generator=generator).tolist()
        x = torch.roll(x_all[idx], shifts=(dx, dy), dims=(2, 3))
        loss = nn.functional.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(classifier, images, labels, batch_size=1000):
    """Share of uint8 images [N, 28, 28] that ``classifier`` labels correctly, a Python float
    (Chapter 7).
    """
    x = images[:, None].to(torch.get_default_dtype()) / 255
    predicted = torch.cat([classifier(x[i : i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)])
    return (predicted == labels).double().mean().item()


def save_classifier(classifier, path, **info):
    """Save a ``DigitClassifier``'s weights and a dict of plain facts about it (``**info``: accuracy,
    recipe) with ``companion.train.save_checkpoint`` (Chapter 7).
    """
    from .train import save_checkpoint

    save_checkpoint({"state_dict": classifier.state_dict(), "n_classes": classifier.head.out_features, "info": info}, path)


def load_digit_classifier(path=None):
    """The ``DigitClassifier`` saved at ``path``, in eval mode (Chapter 7). The default is the one
    shipped with companion, trained on the first 9,000 of 10,000 MNIST digits; its held-out accuracy
    and training command are in its ``.info`` dict.
    """
    path = Path(path) if path is not None else SHIPPED_CLASSIFIER
    if not path.is_file():
        raise ValueError(f"no classifier at {path}; train one with `python -m companion classifier`")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = DigitClassifier(n_classes=state["n_classes"])
    model.load_state_dict(state["state_dict"])
    model.info = state["info"]
    return model.eval()


@torch.no_grad()
def digit_report(classifier, samples, real, *, threshold=0.9, baseline=None):
    """Judge samples against real held-out digits with a digit classifier (Chapter 7, How good are the
    samples?), using the Fréchet distance of FID (Heusel et al. 2017) in the classifier's feature
    space.

    Args:
        classifier: a ``DigitClassifier``.
        samples: [N, 1, 28, 28] samples in [0, 1].
        real: held-out real digits of the same shape.
        threshold: the probability above which a sample counts as confidently classified.
        baseline: other real digits, as many as the samples (e.g. training digits), for the floor;
            by default the two halves of ``real`` are compared instead.

    Returns:
        A dict with ``'confident_share'`` (the share classified with probability above
        ``threshold``), ``'class_shares'`` and ``'real_class_shares'`` (the class histograms of the
        samples and of the real digits as the classifier reads them, shares summing to 1),
        ``'frechet'`` (the Fréchet distance between the features of the samples and of ``real``)
        and ``'frechet_real_vs_real'`` (the same distance between real sets: the floor a perfect
        sampler would reach with this many samples).
    """
    probs = classifier(samples).softmax(-1)
    confidence, classes = probs.max(-1)
    feats_real = classifier.features(real)
    if baseline is None:
        half = len(real) // 2
        floor = frechet_distance(feats_real[:half], feats_real[half:])
    else:
        floor = frechet_distance(classifier.features(baseline), feats_real)
    return {
        "confident_share": (confidence > threshold).double().mean().item(),
        "class_shares": (torch.bincount(classes, minlength=probs.shape[1]).double() / len(samples)).tolist(),
        "real_class_shares": (torch.bincount(classifier(real).argmax(-1), minlength=probs.shape[1]).double()
                              / len(real)).tolist(),
        "frechet": frechet_distance(classifier.features(samples), feats_real),
        "frechet_real_vs_real": floor,
    }
