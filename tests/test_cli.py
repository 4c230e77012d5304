"""The training command line on the bundled 8×8 digits (tiny network, a few steps)."""

import json

import pytest

from companion.__main__ import main
from companion.train import load_checkpoint

ARGS = ["train", "ncsn", "--data", "digits", "--holdout", "100", "--ngf", "4", "--checkpoint-every", "2",
        "--log-every", "1", "--n-levels", "5", "--sigma-max", "3.0"]


def test_train_resume_and_recipe_check(tmp_path, capsys):
    out = str(tmp_path / "run")
    main(ARGS + ["--steps", "3", "--out", out])
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["step"] == 3 and state["config"]["train_images"] == 1697
    assert len(state["config"]["sigmas"]) == 5 and state["config"]["sigmas"][0] == 3.0
    main(ARGS + ["--steps", "4", "--out", out])  # resumes at step 3
    assert "step 4:" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 4
    recipe = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert recipe["command"].startswith("python -m companion train ncsn")
    with pytest.raises(ValueError, match="another recipe"):
        main(ARGS[:-4] + ["--n-levels", "6", "--sigma-max", "3.0", "--steps", "5", "--out", out])


def test_mnist_needs_a_path():
    with pytest.raises(SystemExit):
        main(["train", "ncsn", "--steps", "1", "--out", "x"])


def test_sample_from_a_checkpoint(tmp_path):
    import torch

    out = str(tmp_path / "run")
    main(ARGS + ["--steps", "2", "--out", out])
    png = tmp_path / "s.png"
    main(["sample", str(tmp_path / "run" / "checkpoint.pt"), "--n", "4", "--n-steps-each", "2", "--out", str(png)])
    x = torch.load(tmp_path / "s.pt", weights_only=True)
    assert png.is_file() and x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()
