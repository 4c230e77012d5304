"""The shipped MNIST score model and its card (Chapter 7)."""

import json
import shutil

import pytest
import torch

from companion import pretrained


def test_the_shipped_model_matches_its_card():
    model, sigmas, card = pretrained.ncsn_mnist()
    state = torch.load(pretrained.SHIPPED_NCSN, weights_only=True)
    assert card["sha256"] == pretrained.sha256(pretrained.SHIPPED_NCSN)
    assert card["step"] == state["step"] and card["config"] == state["config"]
    assert card["config"]["holdout"] == 1000 and card["bytes"] <= 20e6
    assert torch.equal(sigmas, torch.tensor(card["config"]["sigmas"], dtype=torch.float64))
    assert card["train_command"].startswith("python -m companion train ncsn")
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        out = model(x, sigmas[[0, -1]].float())
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_a_tampered_file_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "ncsn_mnist.pt"
    shutil.copy(pretrained.SHIPPED_NCSN, copy)
    card = json.loads(pretrained.SHIPPED_NCSN.with_suffix(".json").read_text())
    card["sha256"] = "0" * 64
    copy.with_suffix(".json").write_text(json.dumps(card))
    monkeypatch.setattr(pretrained, "SHIPPED_NCSN", copy)
    with pytest.raises(ValueError, match="reinstall companion"):
        pretrained.ncsn_mnist()

