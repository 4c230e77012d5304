"""Score models from ``train ncsn`` checkpoints, and the model shipped with companion (Chapter 7).

The shipped model, NCSNv2's network at 16 base channels over 95 noise levels, was trained on the
first 9,000 of 10,000 MNIST digits (the last 1,000 are held out for its evaluation). Its card,
weights/ncsn_mnist.json, records the exact training command, the checkpoints it was warm-started
from, the configuration, the step count, the SHA-256 of the weights and the evaluation.
"""

import hashlib
import json
from pathlib import Path

import torch

from .nets import LevelConditioned
from .refinenet import NCSNv2, CondRefineNetDilated
from .train import load_checkpoint, save_checkpoint

WEIGHTS = Path(__file__).with_name("weights")
SHIPPED_NCSN = WEIGHTS / "ncsn_mnist.pt"


def build_model(config):
    """The score model s(x, σ) that a training config describes, and its noise levels (float64)
    (Chapter 7): an ``NCSNv2`` if ``config['model']`` is ``'NCSNv2'``, else a
    ``CondRefineNetDilated`` wrapped in ``LevelConditioned``.

    Returns:
        A pair ``(model, sigmas)``.
    """
    sigmas = torch.tensor(config["sigmas"], dtype=torch.float64)
    if config["model"] == "NCSNv2":
        return NCSNv2(channels=1, ngf=config["ngf"], image_size=config["image_size"]), sigmas
    net = CondRefineNetDilated(channels=1, ngf=config["ngf"], n_levels=len(sigmas), image_size=config["image_size"])
    return LevelConditioned(net, sigmas, divide_by_sigma=config["divide_by_sigma"]), sigmas


def model_from_checkpoint(path, device="cpu", weights="ema"):
    """Rebuild the score model of a ``train ncsn`` checkpoint (or of an exported one) with its EMA
    (``weights='ema'``) or raw (``'raw'``) weights (Chapter 7).

    Returns:
        A triple ``(model, sigmas, config)``, the model in eval mode on ``device``.
    """
    state = load_checkpoint(path, device)
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw'; got {weights!r}")
    if weights == "raw" and "model" not in state:
        raise ValueError(f"{path} holds only the EMA weights (an exported checkpoint); use weights='ema'")
    model, sigmas = build_model(state["config"])
    model.load_state_dict(state["ema"]["shadow"] if weights == "ema" else state["model"])
    return model.to(device).eval(), sigmas, state["config"]


def sha256(path):
    """The SHA-256 hex digest of the file at ``path``, as recorded in a model card (Chapter 7)."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def export(checkpoint, out):
    """Write the EMA weights, config and step of a training checkpoint to ``out`` (no optimiser, no
    raw weights: what sampling needs) and return its SHA-256 (Chapter 7).
    """
    state = load_checkpoint(checkpoint)
    save_checkpoint({"ema": state["ema"], "config": state["config"], "step": state["step"]}, out)
    return sha256(out)


def warm_starts(config):
    """The warm starts behind a training config, oldest first: the records (checkpoint, sha256, step,
    lr) that ``train ncsn --init`` nests one inside another under ``config['init']`` (Chapter 7)."""
    chain = []
    while "init" in config:
        config = config["init"]
        chain.insert(0, config)
    return chain


def training_history(card):
    """The runs that made the model of a card, oldest first, each as a dict with its learning rate
    ``'lr'``, its number of ``'steps'`` and its ``'log'`` of [step, loss, seconds per step] counted
    from its own start (Chapter 7, Training on MNIST). A warm start's log is empty unless the card
    was exported with ``--init-log``."""
    starts = warm_starts(card["config"])
    logs = card.get("init_training_logs") or [[] for _ in starts]
    runs = [{"lr": start["lr"], "steps": start["step"], "log": log} for start, log in zip(starts, logs)]
    return runs + [{"lr": card["config"]["lr"], "steps": card["step"], "log": card["training_log"]}]


def ncsn_mnist(device="cpu"):
    """The shipped MNIST score model (Chapter 7, Training on MNIST). The weights are checked against the
    SHA-256 of the card before they are loaded.

    Returns:
        A triple ``(model, sigmas, card)``, the model in eval mode and its card as a dict.

    Raises:
        ValueError: if the weights do not match their card.
    """
    card = json.loads(SHIPPED_NCSN.with_suffix(".json").read_text())
    digest = sha256(SHIPPED_NCSN)
    if digest != card["sha256"]:
        raise ValueError(f"{SHIPPED_NCSN} has SHA-256 {digest}, not the {card['sha256']} of its card; "
                         f"reinstall companion")
    model, sigmas, _ = model_from_checkpoint(SHIPPED_NCSN, device)
    return model, sigmas, card
