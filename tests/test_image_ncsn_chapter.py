"""Numerical checks of Chapter 7 (the image NCSN)."""

import ast
import json
import re
from pathlib import Path

import pytest
import torch

from companion import pretrained, schedules
from companion.refinenet import CondInstanceNormPlus, CondRefineNetDilated, NoNorm

ROOT = Path(__file__).parents[1]
CHAPTER = ROOT / "book" / "image-ncsn.md"


@pytest.mark.parametrize("v,sigma,sigma_next", [(1.0, 2.0, 1.5), (0.3, 1.0, 0.9), (2.0, 0.5, 0.1)])
def test_one_reverse_diffusion_step_on_gaussian_data(v, sigma, sigma_next):
    """Proposition prop-ncsn-rd-step: the excess variance after one step, for both noise sizes."""
    g = torch.Generator().manual_seed(0)
    n = 2_000_000
    x = (v + sigma**2) ** 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    drift = x + (sigma**2 - sigma_next**2) * (-x / (v + sigma**2))
    z = torch.randn(n, generator=g, dtype=torch.float64)
    right = drift + (sigma**2 - sigma_next**2) ** 0.5 * z
    wrong = drift + sigma_next * z
    a, b = v + sigma_next**2, v + sigma**2
    tol = 4 * (2 / n) ** 0.5 * b  # four standard errors of a variance estimate
    assert abs(right.var() - a - (b - a) ** 2 / b) < tol
    assert abs(wrong.var() - a - (a**2 / b + sigma_next**2 - a)) < tol
    assert abs(a**2 / b + sigma_next**2 - a) > (b - a) ** 2 / b  # the wrong noise is further off in each case


def test_the_wrong_noise_drifts_as_the_ladder_is_refined():
    def final_var(ladder, v, wrong):
        var = v + ladder[0] ** 2
        for s, s_next in zip(ladder[:-1], ladder[1:]):
            var = var * ((v + s_next**2) / (v + s**2)) ** 2 + (s_next**2 if wrong else s**2 - s_next**2)
        return var

    errors_right = [abs(final_var(schedules.geometric(10.0, 0.01, L).tolist(), 1.0, False) - 1.0001) for L in (10, 100, 1000)]
    errors_wrong = [abs(final_var(schedules.geometric(10.0, 0.01, L).tolist(), 1.0, True) - 1.0001) for L in (10, 100, 1000)]
    assert errors_right[0] > errors_right[1] > errors_right[2] and errors_right[2] < 0.01
    assert errors_wrong[2] > 1.0 and errors_wrong[0] < errors_wrong[1] < errors_wrong[2]


def test_code_and_paper_parameterisations_of_cin_plus_agree():
    """γ(IN(x) + α μ̃) + β of the reference code equals the paper's γ IN(x) + β + α' μ̃ with α' = γ α."""
    torch.manual_seed(0)
    norm = CondInstanceNormPlus(5, n_levels=1)
    with torch.no_grad():
        norm.embed.weight.normal_()
    x = torch.randn(2, 5, 6, 6) + torch.arange(5.0).view(5, 1, 1)
    gamma, alpha, beta = (t.view(1, 5, 1, 1) for t in norm.embed.weight[0].chunk(3))
    means = x.mean(dim=(2, 3))
    tilde = ((means - means.mean(-1, keepdim=True)) / (means.var(-1, keepdim=True) + 1e-5).sqrt()).view(2, 5, 1, 1)
    paper = gamma * torch.nn.functional.instance_norm(x, eps=1e-5) + beta + (gamma * alpha) * tilde
    torch.testing.assert_close(norm(x, torch.zeros(2, dtype=torch.long)), paper)


def test_receptive_field_of_the_encoder_stages():
    """The convolutional receptive field after res1..res4: 11, 24, 56, 120 pixels (dilation 2 and 4)."""
    torch.manual_seed(0)
    net = CondRefineNetDilated(channels=1, ngf=4, n_levels=1, image_size=128)
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, CondInstanceNormPlus):
                setattr(module, name, NoNorm())
    x = torch.rand(1, 1, 128, 128, requires_grad=True)
    h, sides = net.begin(2 * x - 1), []
    for stage in (net.res1, net.res2, net.res3, net.res4):
        for block in stage:
            h = block(h, None)
        grad, = torch.autograd.grad(h[0, :, h.shape[2] // 2, h.shape[3] // 2].sum(), x, retain_graph=True)
        rows = grad[0, 0].abs().sum(1).nonzero()
        sides.append(int(rows.max() - rows.min() + 1))
    assert sides == [11, 24, 56, 120]


def test_the_first_recipes_restoration_curve_in_the_chapter_is_its_cards():
    """Chapter 7 plots the first recipe's restoration curve from a literal dict; it must be the card's."""
    literal = re.search(r"^first_recipe = (\{.*?\})$", CHAPTER.read_text(), re.M | re.S)[1]
    in_chapter = ast.literal_eval(literal)
    card = json.loads((ROOT / "runs" / "ncsn-mnist-ngf16" / "card.json").read_text())
    in_card = {round(r["from_sigma"], 3): r["confident_share"] for r in card["restoration"].values()}
    assert in_chapter == in_card


def test_the_numbers_the_chapter_quotes_are_the_shipped_models():
    """Chapter 7's prose quotes the card of the shipped model; a new model must update it."""
    text = " ".join(CHAPTER.read_text().split())
    card = json.loads(pretrained.SHIPPED_NCSN.with_suffix(".json").read_text())
    ev, shares = card["evaluation"], [r["confident_share"] for r in card["restoration"].values()]
    steps = sum(run["steps"] for run in pretrained.training_history(card))
    share, low, high = (f"{100 * x:.1f}" for x in (ev["confident_share"], *sorted(ev["class_shares"])[::9]))
    quoted = [
        f"confident {share} % of the time", f"range from {low} % to {high} %",
        f"Fréchet distance, {ev['frechet']:.1f}", f"floor of {ev['frechet_real_vs_real']:.1f}",
        f"{share} % of 1,000 samples confident", f"between {low} % and {high} %",
        f"{ev['frechet']:.1f} against {ev['frechet_real_vs_real']:.1f} for real digits", f"{steps:,} steps",
        f"From pure noise it reaches {share} %",
        f"restores {100 * min(shares[:-1]):.0f}–{100 * max(shares[:-1]):.0f} % of the digits",
        f"and {100 * shares[-1]:.0f} % from",
    ]
    assert [phrase for phrase in quoted if phrase not in text] == []
