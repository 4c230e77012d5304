"""The shipped MNIST score model and its card (Chapter 7)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from companion import pretrained
from companion.refinenet import NCSNv2, CondRefineNetDilated


def test_the_shipped_model_matches_its_card():
    model, sigmas, card = pretrained.ncsn_mnist()
    state = torch.load(pretrained.SHIPPED_NCSN, weights_only=True)
    assert card["sha256"] == pretrained.sha256(pretrained.SHIPPED_NCSN)
    assert card["step"] == state["step"] and card["config"] == state["config"]
    assert card["config"]["holdout"] == 1000 and card["bytes"] <= 20e6
    assert torch.equal(sigmas, torch.tensor(card["config"]["sigmas"], dtype=torch.float64))
    assert card["train_command"].startswith("python -m companion train ncsn")
    # The loaded model is the card's network with the EMA weights, its output divided by σ.
    config = card["config"]
    x, levels = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.tensor([0, len(sigmas) - 1])
    sigma = sigmas[levels].float()
    shadow = state["ema"]["shadow"]
    if config["model"] == "NCSNv2":
        net = NCSNv2(channels=1, ngf=config["ngf"], image_size=config["image_size"])
        net.load_state_dict(shadow)
        unit = torch.ones(2)
    else:
        assert config["model"] == "CondRefineNetDilated" and config["divide_by_sigma"]
        net = CondRefineNetDilated(channels=1, ngf=config["ngf"], n_levels=len(sigmas), image_size=config["image_size"])
        net.load_state_dict({k.removeprefix("net."): v for k, v in shadow.items() if k.startswith("net.")})
        unit = levels
    net.eval()
    with torch.no_grad():
        out = model(x, sigma)
        expected = net(x, unit) / sigma.view(-1, 1, 1, 1)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_a_tampered_file_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "ncsn_mnist.pt"
    shutil.copy(pretrained.SHIPPED_NCSN, copy)
    card = json.loads(pretrained.SHIPPED_NCSN.with_suffix(".json").read_text())
    card["sha256"] = "0" * 64
    copy.with_suffix(".json").write_text(json.dumps(card))
    monkeypatch.setattr(pretrained, "SHIPPED_NCSN", copy)
    with pytest.raises(ValueError, match="reinstall companion"):
        pretrained.ncsn_mnist()



def test_the_checkpoints_the_shipped_model_was_warm_started_from_are_in_the_repository():
    """Its lineage can be checked: every checkpoint of the chain is committed with the SHA-256 the card records."""
    root = Path(__file__).parents[1]
    card = json.loads(pretrained.SHIPPED_NCSN.with_suffix(".json").read_text())
    starts = pretrained.warm_starts(card["config"])
    for start in starts:
        assert pretrained.sha256(root / start["checkpoint"]) == start["sha256"]
    for run in pretrained.training_history(card)[:-1]:  # each earlier log reaches the step the next run began from
        assert run["log"][-1][0] == run["steps"]
