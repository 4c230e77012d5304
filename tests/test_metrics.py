"""Sample-quality measures against exact answers."""

import math

import pytest
import torch

from companion.metrics import DigitClassifier, digit_report, frechet_distance, mmd, sliced_wasserstein, train_classifier

@pytest.mark.usefixtures("float64")
def test_frechet_distance_of_two_gaussians_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, 2, generator=g)
    b = torch.randn(200_000, 2, generator=g) * torch.tensor([2.0, 0.5]) + torch.tensor([1.0, 0.0])
    # diagonal covariances: |mu|^2 + sum (sqrt(s_a) - sqrt(s_b))^2 = 1 + (1 - 2)^2 + (1 - 0.5)^2
    assert frechet_distance(a, b) == pytest.approx(1 + 1 + 0.25, abs=0.02)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)


@pytest.mark.usefixtures("float64")
def test_sliced_wasserstein_of_a_shift():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1000, 3, generator=g)
    delta = torch.tensor([3.0, 0.0, 4.0])
    sw = sliced_wasserstein(x, x + delta, n_projections=4000, generator=g)
    assert sw.item() == pytest.approx(5 / math.sqrt(3), rel=0.03)  # 4000 directions: ~0.7% error
    assert sliced_wasserstein(x, x, generator=g).item() == 0


@pytest.mark.usefixtures("float64")
def test_mmd_separates_laws_and_not_samples_of_one_law():
    g = torch.Generator().manual_seed(2)
    same = [mmd(torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)).item() for _ in range(20)]
    shifted = mmd(torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g) + 1.0).item()
    assert abs(sum(same) / 20) < 0.002 and max(abs(v) for v in same) < 0.01
    assert shifted > 0.1


def test_mmd_of_two_shifted_gaussians_matches_its_closed_form():
    """For N(0, I) and N(δ, I) in d dimensions and k = exp(−‖a − b‖²/(2h²)), Gaussian integrals give
    MMD² = 2 (h²/(h² + 2))^{d/2} (1 − exp(−‖δ‖²/(2(h² + 2)))). At h = 0.5 the value depends on the
    bandwidth enough that the kernels exp(−‖a − b‖²/h²) and exp(−‖a − b‖²/(2h)) are rejected."""

    def closed_form(h2, d=2, shift2=2.0):  # h2 = h², the kernel exp(−r²/(2 h2))
        return 2 * (h2 / (h2 + 2)) ** (d / 2) * (1 - math.exp(-shift2 / (2 * (h2 + 2))))

    g = torch.Generator().manual_seed(7)
    h, delta = 0.5, torch.tensor([1.0, 1.0])
    values = torch.tensor([mmd(torch.randn(1000, 2, generator=g), torch.randn(1000, 2, generator=g) + delta,
                               bandwidth=h).item() for _ in range(10)])
    se = values.std() / 10**0.5
    assert abs(values.mean() - closed_form(h**2)) < 4 * se
    wrong = [closed_form(h**2 / 2), closed_form(h)]  # the 2 dropped; h in place of h²
    assert 4 * se < min(abs(w - closed_form(h**2)) for w in wrong)


def test_digit_report_on_a_trained_classifier():
    # Two synthetic "classes" of 28x28 images: a bright left half or a bright right half.
    g = torch.Generator().manual_seed(3)
    images = torch.zeros(400, 28, 28, dtype=torch.uint8)
    labels = torch.arange(400) % 2
    images[labels == 0, :, :14] = 200
    images[labels == 1, :, 14:] = 200
    images = (images.float() + 40 * torch.rand(400, 28, 28, generator=g)).clamp(0, 255).to(torch.uint8)
    torch.manual_seed(4)
    clf = train_classifier(images, labels, n_steps=60, batch_size=64, generator=g)
    real = images[:, None].float() / 255
    report = digit_report(clf, real[:100], real[100:])
    assert report["confident_share"] > 0.9
    assert report["class_shares"] == pytest.approx([0.5, 0.5], abs=0.05)
    assert report["real_class_shares"] == pytest.approx([0.5, 0.5], abs=0.05)
    noise = digit_report(clf, torch.rand(100, 1, 28, 28, generator=g), real[100:])
    assert noise["frechet"] > 10 * max(report["frechet"], report["frechet_real_vs_real"])
    assert isinstance(DigitClassifier().features(torch.zeros(1, 1, 28, 28)), torch.Tensor)
