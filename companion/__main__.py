"""Command line: training and sampling recipes.

    python -m companion train ncsn --data mnist --data-path PATH --holdout 1000 --ngf 32 --steps N --out DIR
    python -m companion sample DIR/checkpoint.pt --n 64 --out samples.png

Training resumes from DIR/checkpoint.pt when it exists, provided the recipe is the same.
Sampling uses the EMA weights and annealed Langevin dynamics with NCSNv2's step-size rule.
"""

import argparse
import json
import math
import os
import sys
import time

import torch

from . import datasets, schedules
from .losses import ncsn_loss
from .nets import LevelConditioned
from .refinenet import CondRefineNetDilated
from .train import load_checkpoint, train


def load_images(args):
    """uint8 images [N, H, W] and the number of grey levels, without the held-out tail."""
    if args.data == "mnist":
        images, _ = datasets.load_mnist(args.data_path)
        levels = 256
    else:
        images, _ = datasets.sklearn_digits()
        levels = 17
    if args.holdout:
        if args.holdout >= len(images):
            raise ValueError(f"--holdout {args.holdout} leaves no training images out of {len(images)}")
        images = images[: -args.holdout]
    return images, levels


def ncsn_recipe(args, images, levels):
    """The noise levels of the recipe: NCSNv2's rules unless given explicitly."""
    x = images[:, None].to(torch.float64) / (levels - 1)
    sigma_max = args.sigma_max or schedules.max_pairwise_distance(x, generator=torch.Generator().manual_seed(args.seed))
    n_levels = args.n_levels or schedules.ncsnv2_num_scales(sigma_max, args.sigma_min, x[0].numel())
    return schedules.geometric(sigma_max, args.sigma_min, n_levels)


def train_ncsn(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    images, levels = load_images(args)
    sigmas = ncsn_recipe(args, images, levels)
    config = {
        "model": "CondRefineNetDilated", "data": args.data, "holdout": args.holdout, "train_images": len(images),
        "ngf": args.ngf, "image_size": images.shape[-1], "sigmas": [round(s, 10) for s in sigmas.tolist()],
        "divide_by_sigma": not args.no_divide_by_sigma, "batch_size": args.batch_size, "lr": args.lr,
        "ema_decay": args.ema_decay, "seed": args.seed, "grey_levels": levels,
    }
    checkpoint = os.path.join(args.out, "checkpoint.pt")
    if os.path.isfile(checkpoint):
        saved = load_checkpoint(checkpoint)["config"]
        if saved != config:
            changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
            raise ValueError(f"{checkpoint} was trained with another recipe (differs in {changed}); "
                             f"use a new --out or the same options")
    torch.manual_seed(args.seed)
    net = CondRefineNetDilated(channels=1, ngf=args.ngf, n_levels=len(sigmas), image_size=images.shape[-1])
    model = LevelConditioned(net, sigmas, divide_by_sigma=config["divide_by_sigma"]).to(device)
    sigmas_dev = sigmas.to(device=device, dtype=torch.float32)
    print(f"{len(images)} training images, {len(sigmas)} levels from {sigmas[0]:.3g} to {sigmas[-1]:.3g}, "
          f"{sum(p.numel() for p in net.parameters()):,} parameters, device {device}", flush=True)

    started, last = time.perf_counter(), [0, time.perf_counter()]

    def report(info):
        step = info["step"]
        if step % args.log_every == 0:
            now = time.perf_counter()
            per_step = (now - last[1]) / max(step - last[0], 1)
            print(f"step {step}: loss {info['loss'].item():.4f}, {per_step:.2f} s/step", flush=True)
            last[:] = [step, now]

    train(
        lambda m, batch, g: ncsn_loss(m, batch, sigmas_dev, generator=g),
        model, images, n_steps=args.steps, out_dir=args.out, batch_size=args.batch_size, lr=args.lr,
        ema_decay=args.ema_decay, checkpoint_every=args.checkpoint_every, seed=args.seed,
        transform=lambda batch, g: datasets.dequantize(batch, levels, generator=g), config=config,
        progress=args.progress, callback=report,
    )
    with open(os.path.join(args.out, "recipe.json"), "w") as f:
        json.dump({"command": " ".join(["python -m companion"] + args.argv), **config}, f, indent=1)
    print(f"done: {args.steps} steps in {args.out} ({(time.perf_counter() - started) / 60:.1f} min this run)")


def model_from_checkpoint(path, device="cpu", weights="ema"):
    """Rebuild the score model s(x, σ) of a `train ncsn` checkpoint, with its EMA (or raw) weights."""
    state = load_checkpoint(path, device)
    config = state["config"]
    sigmas = torch.tensor(config["sigmas"], dtype=torch.float64)
    net = CondRefineNetDilated(channels=1, ngf=config["ngf"], n_levels=len(sigmas), image_size=config["image_size"])
    model = LevelConditioned(net, sigmas, divide_by_sigma=config["divide_by_sigma"]).to(device)
    model.load_state_dict(state["ema"]["shadow"] if weights == "ema" else state["model"])
    return model.eval(), sigmas, config


def sample_ncsn(args):
    from .samplers import annealed_langevin

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, sigmas, config = model_from_checkpoint(args.checkpoint, device, args.weights)
    gamma = (sigmas[0] / sigmas[1]).item() if len(sigmas) > 1 else 1.5
    step_lr = args.step_lr or schedules.ncsnv2_step_size(sigmas[-1].item(), gamma, args.n_steps_each)
    g = torch.Generator(device=device).manual_seed(args.seed)
    size = config["image_size"]
    x0 = torch.rand(args.n, 1, size, size, generator=g, device=device)
    with torch.inference_mode():
        x = annealed_langevin(model, x0, sigmas.to(device), step_lr=step_lr, n_steps_each=args.n_steps_each,
                              denoise=not args.no_denoise, generator=g, progress=args.progress)
    x = x.cpu()
    torch.save(x, os.path.splitext(args.out)[0] + ".pt")  # raw samples; only the picture is clipped to [0, 1]
    import matplotlib

    matplotlib.use("Agg")
    from .plotting import image_grid

    ax = image_grid(x, ncol=math.ceil(math.sqrt(args.n)))  # clips to [0, 1] for display only
    ax.figure.savefig(args.out, dpi=150, bbox_inches="tight")
    print(f"{args.n} samples ({len(sigmas)} levels × {args.n_steps_each} steps, step_lr {step_lr:.3g}) -> {args.out}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m companion", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tr = commands.add_parser("train", help="train a model")
    tr.add_argument("model", choices=["ncsn"])
    tr.add_argument("--data", choices=["mnist", "digits"], default="mnist")
    tr.add_argument("--data-path", help="MNIST: an .npz with images and labels, or a folder of IDX files")
    tr.add_argument("--holdout", type=int, default=0, help="leave out the last N images (held-out split)")
    tr.add_argument("--ngf", type=int, default=32)
    tr.add_argument("--sigma-max", type=float, default=None, help="default: the largest pairwise distance")
    tr.add_argument("--sigma-min", type=float, default=0.01)
    tr.add_argument("--n-levels", type=int, default=None, help="default: NCSNv2's gamma rule")
    tr.add_argument("--no-divide-by-sigma", action="store_true", help="NCSN v1 output (no 1/sigma)")
    tr.add_argument("--steps", type=int, required=True)
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--ema-decay", type=float, default=0.999)
    tr.add_argument("--checkpoint-every", type=int, default=250)
    tr.add_argument("--log-every", type=int, default=50)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, default=None)
    tr.add_argument("--device", default=None)
    tr.add_argument("--progress", action="store_true")
    tr.add_argument("--out", required=True)
    sa = commands.add_parser("sample", help="sample from a trained checkpoint")
    sa.add_argument("checkpoint")
    sa.add_argument("--n", type=int, default=64)
    sa.add_argument("--n-steps-each", type=int, default=5)
    sa.add_argument("--step-lr", type=float, default=None, help="default: NCSNv2's rule for n-steps-each")
    sa.add_argument("--no-denoise", action="store_true")
    sa.add_argument("--weights", choices=["ema", "raw"], default="ema")
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--threads", type=int, default=None)
    sa.add_argument("--device", default=None)
    sa.add_argument("--progress", action="store_true")
    sa.add_argument("--out", default="samples.png")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command == "sample":
        return sample_ncsn(args)
    if args.data == "mnist" and not args.data_path:
        parser.error("--data mnist needs --data-path (an .npz or a folder of IDX files)")
    if not math.isfinite(args.lr) or args.lr <= 0:
        parser.error("--lr must be positive")
    train_ncsn(args)


if __name__ == "__main__":
    main()
