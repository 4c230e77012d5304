"""The training command line on the bundled 8×8 digits (tiny network, a few steps)."""

import json

import pytest
import torch

from companion.__main__ import main
from companion.pretrained import sha256, training_history, warm_starts
from companion.train import load_checkpoint

ARGS = ["train", "ncsn", "--no-compile", "--data", "digits", "--holdout", "100", "--ngf", "4", "--checkpoint-every", "2",
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


def test_a_warm_start_takes_the_ema_weights_of_a_run_of_the_same_network(tmp_path):
    main(ARGS + ["--steps", "2", "--out", str(tmp_path / "a")])
    first = tmp_path / "a" / "checkpoint.pt"
    main(ARGS + ["--steps", "1", "--lr", "1e-4", "--ema-decay", "0.5", "--init", str(first), "--out", str(tmp_path / "b")])
    a, b = load_checkpoint(first), load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    record = b["config"]["init"]
    assert record["step"] == 2 and record["lr"] == 1e-3 and record["checkpoint"] == str(first)
    assert record["sha256"] == sha256(first) and b["step"] == 1
    for k, v in b["model"].items():  # the EMA after one step is the average of the start and the step
        if v.is_floating_point():
            torch.testing.assert_close(b["ema"]["shadow"][k], 0.5 * a["ema"]["shadow"][k] + 0.5 * v)
    log = tmp_path / "a.log"
    log.write_text("step 1: loss 3.5000, 0.10 s/step\nstep 2: loss 3.0000, 0.10 s/step\nstep 3: loss 2.0000, 0.10 s/step\n")
    card = main(["export", str(tmp_path / "b" / "checkpoint.pt"), "--init-log", str(log), "--out", str(tmp_path / "m.pt")])
    assert card["init_training_logs"] == [[[1, 3.5, 0.1], [2, 3.0, 0.1]]] and card["config"]["init"] == record
    with pytest.raises(ValueError, match="not warm-started"):
        main(["export", str(first), "--init-log", str(log), "--out", str(tmp_path / "n.pt")])
    with pytest.raises(ValueError, match=r"another network or noise levels \(differs in \['sigmas'\]\)"):
        main(ARGS[:-4] + ["--n-levels", "6", "--sigma-max", "3.0", "--steps", "1", "--init", str(first),
                          "--out", str(tmp_path / "c")])


def test_a_chain_of_warm_starts_is_recorded_oldest_first(tmp_path):
    for run, lr, steps, init in [("a", "1e-3", 3, None), ("b", "3e-4", 2, "a"), ("c", "1e-4", 1, "b")]:
        main(ARGS + ["--steps", str(steps), "--lr", lr, "--out", str(tmp_path / run)]
             + (["--init", str(tmp_path / init / "checkpoint.pt")] if init else []))
    logs = []
    for run, steps in [("a", 4), ("b", 3)]:  # each log runs past the step the next run started from
        logs.append(tmp_path / f"{run}.log")
        logs[-1].write_text("".join(f"step {k}: loss {k + 0.5:.4f}, 0.10 s/step\n" for k in range(1, steps + 1)))
    with pytest.raises(ValueError, match=r"2 warm start\(s\) behind it, so give 2 log\(s\), oldest first; got 1"):
        main(["export", str(tmp_path / "c" / "checkpoint.pt"), "--init-log", str(logs[0]), "--out", str(tmp_path / "n.pt")])
    card = main(["export", str(tmp_path / "c" / "checkpoint.pt"), "--init-log", *map(str, logs),
                 "--out", str(tmp_path / "m.pt")])
    history = training_history(card)
    assert [(run["lr"], run["steps"]) for run in history] == [(1e-3, 3), (3e-4, 2), (1e-4, 1)]
    assert [[entry[0] for entry in run["log"]] for run in history[:2]] == [[1, 2, 3], [1, 2]]
    assert [start["checkpoint"] for start in warm_starts(card["config"])] == [
        str(tmp_path / "a" / "checkpoint.pt"), str(tmp_path / "b" / "checkpoint.pt")]


def test_mnist_needs_a_path():
    with pytest.raises(SystemExit):
        main(["train", "ncsn", "--steps", "1", "--out", "x"])


def test_sample_from_a_checkpoint(tmp_path):
    out = str(tmp_path / "run")
    main(ARGS + ["--steps", "2", "--out", out])
    png = tmp_path / "s.png"
    main(["sample", str(tmp_path / "run" / "checkpoint.pt"), "--n", "4", "--n-steps-each", "2", "--out", str(png)])
    x = torch.load(tmp_path / "s.pt", weights_only=True)
    assert png.is_file() and x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()


def fake_mnist(path, n=60):
    """An .npz shaped like MNIST: a bright 3 × 3 block whose place on a 2 × 5 grid (5 pixels apart)
    encodes one of 10 labels, so that the classifier's ±2-pixel training shifts keep classes apart."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.arange(n) % 10
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        row, col = 8 + 10 * (k // 5), 2 + 5 * (k % 5)
        images[i, row : row + 3, col : col + 3] = 230
    np.savez(path, images=images, labels=labels)
    return path


def test_classifier_and_evaluate_commands(tmp_path, capsys):
    data = str(fake_mnist(tmp_path / "m.npz"))
    clf = str(tmp_path / "clf.pt")
    accuracy = main(["classifier", "--data-path", data, "--holdout", "20", "--steps", "30", "--out", clf])
    from companion.metrics import load_digit_classifier

    info = load_digit_classifier(clf).info
    assert info["train_images"] == 40 and info["held_out"] == 20 and info["accuracy"] == accuracy
    assert accuracy >= 0.9  # the blocks' places are told apart: well above chance (0.1)
    run = str(tmp_path / "run")
    main(["train", "ncsn", "--no-compile", "--data-path", data, "--holdout", "20", "--ngf", "4", "--n-levels", "3", "--sigma-max", "2",
          "--steps", "2", "--out", run])
    out = tmp_path / "eval"
    common = [f"{run}/checkpoint.pt", "--no-compile", "--data-path", data, "--n", "6", "--batch-size", "4", "--n-steps-each", "1",
              "--classifier", clf, "--out", str(out)]
    report = main(["evaluate", *common, "--holdout", "20"])
    assert sum(report["class_shares"]) == pytest.approx(1.0) and report["n"] == 6 and report["levels"] == 3
    assert "from_level" not in report
    assert json.loads((out / "report.json").read_text())["frechet"] == report["frechet"]
    import numpy as np

    assert torch.load(out / "samples.pt", weights_only=True).shape == (6, 1, 28, 28)
    with pytest.raises(ValueError, match="--holdout 10 differs"):
        main(["evaluate", *common, "--holdout", "10"])
    # From the last level (sigma_L = 0.01) one step cannot move a held-out digit far: the samples
    # are those digits, not the uniform noise of a start from scratch.
    report = main(["evaluate", *common, "--holdout", "20", "--from-level", "3", "--no-denoise"])
    assert report["levels"] == 1 and report["from_sigma"] == pytest.approx(0.01)
    start = torch.tensor(np.load(data)["images"][-20:][:6, None] / 255, dtype=torch.float32)
    assert (torch.load(out / "samples.pt", weights_only=True) - start).abs().max() < 0.1
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"evaluation": {"n": 1000}}))
    for level in ("2", "1"):
        main(["evaluate", *common, "--holdout", "20", "--from-level", level, "--card", str(card)])
    recorded = json.loads(card.read_text())
    assert recorded["evaluation"] == {"n": 1000} and list(recorded["restoration"]) == ["1", "2"]
    assert recorded["restoration"]["2"]["from_sigma"] == pytest.approx((2 * 0.01) ** 0.5)  # geometric: 2, 0.14, 0.01
    for bad, match in ((["--from-level", "4"], "between 1 and the 3 levels"), (["--from-level", "1", "--n", "21"], "at most 20")):
        with pytest.raises(ValueError, match=match):
            main(["evaluate", *common, "--holdout", "20", *bad])
    # The loss per level on each split: the library's numbers on the same digits and noise.
    from companion.datasets import dequantize
    from companion.losses import ncsn_loss_per_level
    from companion.pretrained import model_from_checkpoint

    table = tmp_path / "losses.json"
    losses = main(["losses", f"{run}/checkpoint.pt", "--data-path", data, "--holdout", "20", "--n", "8",
                   "--levels", "3,1", "--out", str(table)])
    assert list(losses) == ["3", "1"] and json.loads(table.read_text())["levels"] == losses
    model, sigmas, _ = model_from_checkpoint(f"{run}/checkpoint.pt")
    images = torch.tensor(np.load(data)["images"])
    for name, split in (("train", images[:8]), ("held_out", images[-20:][:8])):
        x = dequantize(split, 256, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            expected = ncsn_loss_per_level(model, x, sigmas[[2, 0]].float(), generator=torch.Generator().manual_seed(1))
        assert [losses[i][name] for i in ("3", "1")] == pytest.approx(expected.tolist(), rel=1e-5)
    for bad, match in ((["--levels", "0"], "between 1 and the 3 levels"), (["--n", "21"], "between 1 and 20"),
                       (["--holdout", "10"], "--holdout 10 differs")):
        with pytest.raises(ValueError, match=match):
            main(["losses", f"{run}/checkpoint.pt", "--data-path", data, "--holdout", "20", "--n", "8", *bad])


def test_ncsnv2_architecture_trains_and_samples(tmp_path):
    out = str(tmp_path / "v2")
    main(ARGS + ["--arch", "ncsnv2", "--steps", "2", "--out", out])
    state = load_checkpoint(tmp_path / "v2" / "checkpoint.pt")
    assert state["config"]["model"] == "NCSNv2" and not any("embed" in k for k in state["model"])
    main(["sample", f"{out}/checkpoint.pt", "--n", "3", "--n-steps-each", "1", "--out", str(tmp_path / "v2.png")])
    assert torch.isfinite(torch.load(tmp_path / "v2.pt", weights_only=True)).all()
    with pytest.raises(ValueError, match="does not apply"):
        main(ARGS + ["--arch", "ncsnv2", "--no-divide-by-sigma", "--steps", "1", "--out", str(tmp_path / "x")])


def test_missing_classifier_is_a_clear_error(tmp_path):
    from companion.metrics import load_digit_classifier

    with pytest.raises(ValueError, match="python -m companion classifier"):
        load_digit_classifier(tmp_path / "none.pt")


def test_export_writes_ema_weights_and_a_card(tmp_path):
    from companion.pretrained import model_from_checkpoint, sha256

    run = tmp_path / "run"
    main(ARGS + ["--steps", "2", "--out", str(run)])
    log = tmp_path / "train.log"
    log.write_text("200 training images\nstep 1: loss 3.5000, 0.10 s/step\nstep 2: loss 9.0000, 0.20 s/step\n"
                   "resumed\nstep 2: loss 2.2500, 0.20 s/step\nstep 3: loss 2.0000, 0.20 s/step\n")
    card = main(["export", str(run / "checkpoint.pt"), "--log", str(log), "--out", str(tmp_path / "m.pt")])
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved == card and saved["sha256"] == sha256(tmp_path / "m.pt") and saved["step"] == 2
    assert saved["training_log"] == [[1, 3.5, 0.1], [2, 2.25, 0.2]]
    assert saved["train_command"].startswith("python -m companion train ncsn")
    assert set(torch.load(tmp_path / "m.pt", weights_only=True)) == {"ema", "config", "step"}
    exported, _, _ = model_from_checkpoint(tmp_path / "m.pt")
    full, _, _ = model_from_checkpoint(run / "checkpoint.pt")
    x, s = torch.rand(2, 1, 8, 8), torch.full((2,), 1.0)
    torch.testing.assert_close(exported(x, s), full(x, s))
    with pytest.raises(ValueError, match="only the EMA weights"):
        model_from_checkpoint(tmp_path / "m.pt", weights="raw")


def test_torchrun_trains_data_parallel_from_the_command_line(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "ddp"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "companion", *ARGS, "--steps", "2", "--batch-size", "8", "--out", str(out)],
                         capture_output=True, text=True, timeout=300, check=True)
    assert run.stdout.count("training images") == 1  # only process 0 reports
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 2 and len(state["noise_generators"]) == 2


def test_each_process_binds_its_gpu_before_joining_the_group(monkeypatch):
    # NCCL's collectives (the checkpoint's all_gather_object) run on the current device: without
    # set_device every process would use cuda:0.
    import argparse

    import torch.distributed as dist

    from companion.__main__ import start_processes

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("set_device", i)))
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    rank, device = start_processes(argparse.Namespace(device=None))
    assert calls == [("set_device", 1), ("init", "nccl")]
    assert rank == 1 and device == torch.device("cuda:1")
