"""Command line: training, sampling and evaluation recipes.

    python -m companion train ncsn --data mnist --data-path PATH --holdout 1000 --ngf 32 --steps N --out DIR
    python -m companion sample DIR/checkpoint.pt --n 64 --out samples.png
    python -m companion evaluate DIR/checkpoint.pt --data-path PATH --holdout 1000 --n 1000 --out DIR/eval
    python -m companion evaluate DIR/checkpoint.pt ... --n 100 --from-level 36 --out DIR/eval36
    python -m companion losses DIR/checkpoint.pt --data-path PATH --holdout 1000 --levels 37,41,45
    python -m companion classifier --data-path PATH --holdout 1000 --out classifier.pt

Training resumes from DIR/checkpoint.pt when it exists, provided the recipe is the same;
`--init CKPT` starts a new run from the EMA weights of another run of the same network and noise
levels (a warm start, e.g. at a lower learning rate), with a fresh optimiser; under
`torchrun --nproc_per_node K -m companion train ...` it runs data-parallel on K processes.
Sampling uses the EMA weights and annealed Langevin dynamics with NCSNv2's step-size rule.
`--from-level i` starts the chains from held-out digits noised to σ_i instead of from noise: the
confident share it gives, level by level, shows at which noise levels a model stops restoring digits.
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
from .pretrained import build_model, model_from_checkpoint, sha256
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


def start_processes(args):
    """Join the process group torchrun describes in the environment, if any; returns (rank, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and args.device in (None, "cuda")
    if world == 1:
        return 0, torch.device(args.device or ("cuda" if cuda else "cpu"))
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:  # before the group exists: NCCL's collectives use the current device of each process
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), torch.device(f"cuda:{local}" if cuda else "cpu")


def ncsn_recipe(args, images, levels):
    """The noise levels of the recipe: NCSNv2's rules unless given explicitly."""
    x = images[:, None].to(torch.float64) / (levels - 1)
    sigma_max = args.sigma_max or schedules.max_pairwise_distance(x, generator=torch.Generator().manual_seed(args.seed))
    n_levels = args.n_levels or schedules.ncsnv2_num_scales(sigma_max, args.sigma_min, x[0].numel())
    return schedules.geometric(sigma_max, args.sigma_min, n_levels)


# What a warm start must share with the run it starts from: the network and the noise levels.
SAME_NETWORK = ("model", "data", "holdout", "ngf", "image_size", "sigmas", "divide_by_sigma", "grey_levels")


def differs(a, b, keys):
    """The keys, sorted, whose values differ between the configs a and b."""
    return sorted(k for k in keys if a.get(k) != b.get(k))


def warm_start(path, config):
    """The EMA weights of the checkpoint at `path` and the record of them for the new run's config.
    Raises ValueError when that run trained another network or on other noise levels."""
    state = load_checkpoint(path)
    saved = state["config"]
    changed = differs(saved, config, SAME_NETWORK)
    if changed:
        raise ValueError(f"--init {path} was trained with another network or noise levels (differs in {changed}); "
                         f"warm-start only from a run of the same --arch, --ngf, data and levels")
    record = {"checkpoint": path, "sha256": sha256(path), "step": int(state["step"]), "lr": saved.get("lr"),
              **({"init": saved["init"]} if "init" in saved else {})}
    return state["ema"]["shadow"], record


def train_ncsn(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, device = start_processes(args)
    images, levels = load_images(args)
    sigmas = ncsn_recipe(args, images, levels)
    config = {
        "model": {"ncsn": "CondRefineNetDilated", "ncsnv2": "NCSNv2"}[args.arch], "data": args.data,
        "holdout": args.holdout, "train_images": len(images),
        "ngf": args.ngf, "image_size": images.shape[-1], "sigmas": [round(s, 10) for s in sigmas.tolist()],
        "divide_by_sigma": not args.no_divide_by_sigma, "batch_size": args.batch_size, "lr": args.lr,
        "ema_decay": args.ema_decay, "seed": args.seed, "grey_levels": levels,
    }
    init = None
    if args.init:
        init, config["init"] = warm_start(args.init, config)
    checkpoint = os.path.join(args.out, "checkpoint.pt")
    if os.path.isfile(checkpoint):
        saved = load_checkpoint(checkpoint)["config"]
        if saved != config:
            changed = differs(saved, config, set(saved) | set(config))
            raise ValueError(f"{checkpoint} was trained with another recipe (differs in {changed}); "
                             f"use a new --out or the same options")
    if args.arch == "ncsnv2" and args.no_divide_by_sigma:
        raise ValueError("--no-divide-by-sigma does not apply to --arch ncsnv2, whose output is always divided by sigma")
    torch.manual_seed(args.seed)
    model, _ = build_model(config)
    model = model.to(device)
    sigmas_dev = sigmas.to(device=device, dtype=torch.float32)
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"{len(images)} training images, {len(sigmas)} levels from {sigmas[0]:.3g} to {sigmas[-1]:.3g}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, device {device}", flush=True)

    if rank == 0:  # the recipe is known before the first step: a run killed early still has it
        os.makedirs(args.out, exist_ok=True)
        write_json({"command": " ".join(["python -m companion"] + args.argv), **config},
                   os.path.join(args.out, "recipe.json"))
    started, last = time.perf_counter(), [0, time.perf_counter()]

    def report(info):
        step = info["step"]
        if step % args.log_every == 0:
            now = time.perf_counter()
            per_step = (now - last[1]) / max(step - last[0], 1)
            say(f"step {step}: loss {info['loss'].item():.4f}, {per_step:.2f} s/step", flush=True)
            last[:] = [step, now]

    train(
        lambda m, batch, g: ncsn_loss(m, batch, sigmas_dev, generator=g),
        model, images, n_steps=args.steps, out_dir=args.out, batch_size=args.batch_size, lr=args.lr,
        ema_decay=args.ema_decay, checkpoint_every=args.checkpoint_every, seed=args.seed,
        transform=lambda batch, g: datasets.dequantize(batch, levels, generator=g), config=config,
        compile=args.compile, progress=args.progress, callback=report, init=init,
    )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if rank > 0:
        return
    print(f"done: {args.steps} steps in {args.out} ({(time.perf_counter() - started) / 60:.1f} min this run)")


def ladder_step_lr(sigmas, n_steps_each):
    """NCSNv2's step size for a geometric ladder and n_steps_each steps per level (Chapter 6)."""
    gamma = (sigmas[0] / sigmas[1]).item() if len(sigmas) > 1 else 1.5
    return schedules.ncsnv2_step_size(sigmas[-1].item(), gamma, n_steps_each)


def draw_samples(model, sigmas, n, *, n_steps_each, step_lr=None, denoise=True, seed=0, batch_size=None,
                 image_size=28, device="cpu", compile=False, progress=False, start=None):
    """n images by annealed Langevin dynamics from uniform noise, in batches of `batch_size`, with
    NCSNv2's step size for n_steps_each unless step_lr is given. Returns (samples on the CPU, step_lr).

    With ``start`` (n images, on the CPU), the chains start from ``start`` + σ₁ z instead of uniform
    noise and anneal over the ladder ``sigmas`` as given: with ``sigmas`` a tail of the model's
    ladder, this asks how much of the image the levels of that tail can restore."""
    from .samplers import annealed_langevin

    if compile:
        model = torch.compile(model)

    step_lr = step_lr or ladder_step_lr(sigmas, n_steps_each)
    if start is not None and len(start) != n:
        raise ValueError(f"start holds {len(start)} images; give one for each of the n = {n} samples")
    g = torch.Generator(device=device).manual_seed(seed)
    batch_size = batch_size or n
    out = []
    with torch.inference_mode():
        for first in range(0, n, batch_size):
            size = min(batch_size, n - first)
            if start is None:
                x0 = torch.rand(size, 1, image_size, image_size, generator=g, device=device)
            else:
                x0 = start[first : first + size].to(device)
                x0 = x0 + sigmas[0].item() * torch.randn(x0.shape, generator=g, device=device)
            out.append(annealed_langevin(model, x0, sigmas.to(device), step_lr=step_lr, n_steps_each=n_steps_each,
                                         denoise=denoise, generator=g, progress=progress).cpu())
    return torch.cat(out), step_lr


def save_grid(x, path, n=None):
    import matplotlib

    matplotlib.use("Agg")
    from .plotting import image_grid

    x = x[:n] if n else x
    ax = image_grid(x, ncol=math.ceil(math.sqrt(len(x))))  # clips to [0, 1] for display only
    ax.figure.savefig(path, dpi=150, bbox_inches="tight")


def sample_ncsn(args):
    device = machine(args)
    model, sigmas, config = model_from_checkpoint(args.checkpoint, device, args.weights)
    x, step_lr = draw_samples(model, sigmas, args.n, n_steps_each=args.n_steps_each, step_lr=args.step_lr,
                              denoise=not args.no_denoise, seed=args.seed, image_size=config["image_size"],
                              device=device, compile=args.compile, progress=args.progress)
    torch.save(x, os.path.splitext(args.out)[0] + ".pt")  # raw samples; only the picture is clipped to [0, 1]
    save_grid(x, args.out)
    print(f"{args.n} samples ({len(sigmas)} levels × {args.n_steps_each} steps, step_lr {step_lr:.3g}) -> {args.out}")


def split_mnist(args):
    """MNIST as ((train images, labels), (held-out images, labels)): the last --holdout digits are
    the split that training never sees."""
    images, labels = datasets.load_mnist(args.data_path)
    if not 0 < args.holdout < len(images):
        raise ValueError(f"--holdout must be between 1 and {len(images) - 1}; got {args.holdout}")
    cut = len(images) - args.holdout
    return (images[:cut], labels[:cut]), (images[cut:], labels[cut:])


def machine(args):
    """Apply --threads and return the device: --device, else CUDA where there is one."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def trained_model_and_splits(args, verb):
    """The checkpoint's model (on --device) and MNIST's two splits, after checking that --holdout is
    the split the model was trained without."""
    device = machine(args)
    model, sigmas, config = model_from_checkpoint(args.checkpoint, device, args.weights)
    if args.holdout != config.get("holdout"):
        raise ValueError(f"--holdout {args.holdout} differs from the {config.get('holdout')} the model was trained "
                         f"without; {verb} the split it never saw")
    return device, model, sigmas, config, split_mnist(args)


def evaluate_ncsn(args):
    """Sample n digits and judge them with the digit classifier against the held-out split."""
    from .metrics import digit_report, load_digit_classifier

    device, model, sigmas, config, ((train_images, _), (real, _)) = trained_model_and_splits(args, "evaluate on")
    baseline = train_images[: args.n]  # real digits, none held out
    classifier = load_digit_classifier(args.classifier)
    start, step_lr = None, args.step_lr
    if args.from_level is not None:
        # Held-out digits noised to level i, then annealed from there: how well do the levels from
        # sigma_i down restore a digit? The step size stays the full ladder's.
        if not 1 <= args.from_level <= len(sigmas):
            raise ValueError(f"--from-level must be between 1 and the {len(sigmas)} levels of the model; "
                             f"got {args.from_level}")
        if args.n > len(real):
            raise ValueError(f"--from-level starts from held-out digits: --n must be at most {len(real)}")
        start = real[: args.n, None].float() / 255
        step_lr = step_lr or ladder_step_lr(sigmas, args.n_steps_each)
        sigmas = sigmas[args.from_level - 1 :]
    started = time.perf_counter()
    x, step_lr = draw_samples(model, sigmas, args.n, n_steps_each=args.n_steps_each, step_lr=step_lr,
                              denoise=not args.no_denoise, seed=args.seed, batch_size=args.batch_size,
                              image_size=config["image_size"], device=device, compile=args.compile,
                              progress=args.progress, start=start)
    seconds = time.perf_counter() - started
    report = digit_report(classifier, x.clamp(0, 1), real[:, None].float() / 255,
                          baseline=baseline[:, None].float() / 255)
    if start is not None:
        report.update({"from_level": args.from_level, "from_sigma": sigmas[0].item()})
    report.update({"n": args.n, "levels": len(sigmas), "n_steps_each": args.n_steps_each, "step_lr": step_lr,
                   "denoise": not args.no_denoise, "seed": args.seed, "weights": args.weights,
                   "sampling_seconds": round(seconds, 1), "classifier_accuracy": classifier.info.get("accuracy"),
                   "checkpoint": args.checkpoint, "command": " ".join(["python -m companion"] + args.argv)})
    os.makedirs(args.out, exist_ok=True)
    torch.save(x, os.path.join(args.out, "samples.pt"))
    save_grid(x, os.path.join(args.out, "samples.png"), n=100)
    write_json(report, os.path.join(args.out, "report.json"))
    if args.card:  # samples from noise are the card's evaluation; restorations are kept by level
        card = json.loads(open(args.card).read())
        if start is None:
            card["evaluation"] = report
        else:
            restoration = card.setdefault("restoration", {})
            restoration[str(args.from_level)] = report
            card["restoration"] = dict(sorted(restoration.items(), key=lambda item: int(item[0])))
        write_json(card, args.card)
    shares = " ".join(f"{s:.1%}" for s in report["class_shares"])
    print(f"{args.n} samples in {seconds / 60:.1f} min: {report['confident_share']:.1%} with p > 0.9; "
          f"classes {shares}; Fréchet {report['frechet']:.2f} (real vs real {report['frechet_real_vs_real']:.2f})")
    return report


def level_losses(args):
    """The objective's term at chosen levels on training and on held-out digits (the same noise):
    alike, no overfitting; held-out higher, overfitting (Chapter 7)."""
    from .losses import ncsn_loss_per_level

    device, model, sigmas, _, ((train_images, _), (held_out, _)) = trained_model_and_splits(args, "compare with")
    if not 1 <= args.n <= min(len(train_images), len(held_out)):
        raise ValueError(f"--n must be between 1 and {min(len(train_images), len(held_out))} (the smaller split); "
                         f"got {args.n}")
    levels = [int(v) for v in args.levels.split(",")] if args.levels else list(range(1, len(sigmas) + 1))
    if not all(1 <= i <= len(sigmas) for i in levels):
        raise ValueError(f"--levels must be between 1 and the {len(sigmas)} levels of the model; got {args.levels}")
    at = sigmas[[i - 1 for i in levels]].to(device=device, dtype=torch.get_default_dtype())
    result = {}
    with torch.inference_mode():
        for name, images in (("train", train_images), ("held_out", held_out)):
            x = datasets.dequantize(images[: args.n].to(device), 256, generator=torch.Generator(device).manual_seed(args.seed))
            losses = ncsn_loss_per_level(model, x, at, generator=torch.Generator(device).manual_seed(args.seed + 1),
                                         batch_size=args.batch_size)
            result[name] = losses.tolist()
    report = {str(i): {"sigma": float(sigmas[i - 1]), "train": a, "held_out": b}
              for i, a, b in zip(levels, result["train"], result["held_out"])}
    for i, r in report.items():
        print(f"level {int(i):3d}  sigma {r['sigma']:7.3f}  train {r['train']:8.3f}  held-out {r['held_out']:8.3f}")
    if args.out:
        write_json({"n": args.n, "seed": args.seed, "weights": args.weights, "levels": report}, args.out)
    return report


def write_json(obj, path):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def parse_log(path, last_step=None):
    """[(step, loss, seconds per step)] from the lines `train ncsn` prints, up to last_step. A step
    logged twice (by a run that was killed after it and resumed before it) keeps its last entry."""
    import re

    pattern = re.compile(r"^step (\d+): loss ([\d.]+), ([\d.]+) s/step")
    entries = {}
    with open(path) as f:
        for m in map(pattern.match, f):
            if m and (last_step is None or int(m[1]) <= last_step):
                entries[int(m[1])] = [int(m[1]), float(m[2]), float(m[3])]
    return [entries[k] for k in sorted(entries)]


def export_checkpoint(args):
    """Export the EMA weights of a training run and write its card beside them."""
    from .pretrained import export, warm_starts

    digest = export(args.checkpoint, args.out)
    state = load_checkpoint(args.out)
    recipe = os.path.join(os.path.dirname(args.checkpoint), "recipe.json")
    card = {
        "file": os.path.basename(args.out), "sha256": digest, "bytes": os.path.getsize(args.out), "step": state["step"],
        "train_command": json.load(open(recipe))["command"] if os.path.isfile(recipe) else None,
        "config": state["config"], "training_log": parse_log(args.log, state["step"]) if args.log else [],
    }
    if args.init_log:  # a warm-started run: the losses of the runs before it, each up to where the next began
        chain = warm_starts(state["config"])
        if not chain:
            raise ValueError(f"--init-log: {args.checkpoint} was not warm-started (trained without --init); drop --init-log")
        if len(args.init_log) != len(chain):
            raise ValueError(f"--init-log: {args.checkpoint} has {len(chain)} warm start(s) behind it, so give "
                             f"{len(chain)} log(s), oldest first; got {len(args.init_log)}")
        card["init_training_logs"] = [parse_log(log, start["step"]) for log, start in zip(args.init_log, chain)]
    write_json(card, os.path.splitext(args.out)[0] + ".json")
    print(f"{args.out}: step {state['step']}, {card['bytes'] / 1e6:.1f} MB, SHA-256 {digest}")
    return card


def train_digit_classifier(args):
    """Train the digit classifier on MNIST without the held-out split and report its accuracy there."""
    from .metrics import accuracy, save_classifier, train_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    (images, labels), (test_images, test_labels) = split_mnist(args)
    torch.manual_seed(args.seed)
    model = train_classifier(images, labels, n_steps=args.steps,
                             generator=torch.Generator().manual_seed(args.seed), progress=args.progress)
    acc = accuracy(model, test_images, test_labels)
    save_classifier(model, args.out, accuracy=acc, held_out=len(test_images), train_images=len(images),
                    steps=args.steps, seed=args.seed, command=" ".join(["python -m companion"] + args.argv))
    print(f"held-out accuracy {acc:.2%} on {len(test_images)} digits -> {args.out}")
    return acc


def _sampling_options(p, compile=False):
    p.add_argument("checkpoint")
    p.add_argument("--n-steps-each", type=int, default=5)
    p.add_argument("--step-lr", type=float, default=None, help="default: NCSNv2's rule for n-steps-each")
    p.add_argument("--no-denoise", action="store_true")
    p.add_argument("--weights", choices=["ema", "raw"], default="ema")
    p.add_argument("--seed", type=int, default=0)
    _machine_options(p, compile)


def _machine_options(p, compile=False):
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=compile,
                   help=f"torch.compile the network (default {'on' if compile else 'off'}; pays off on long runs)")
    _device_options(p)
    p.add_argument("--progress", action="store_true")


def _device_options(p):
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None)


def _split_options(p):
    p.add_argument("--data-path", required=True, help="the MNIST the model was trained on (.npz or IDX folder)")
    p.add_argument("--holdout", type=int, required=True, help="the held-out tail the model was trained without")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m companion", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tr = commands.add_parser("train", help="train a model")
    tr.add_argument("model", choices=["ncsn"])
    tr.add_argument("--arch", choices=["ncsn", "ncsnv2"], default="ncsn",
                    help="CondRefineNetDilated (NCSN) or the unconditional NCSNv2 network")
    tr.add_argument("--data", choices=["mnist", "digits"], default="mnist")
    tr.add_argument("--data-path", help="MNIST: an .npz with images and labels, or a folder of IDX files")
    tr.add_argument("--holdout", type=int, default=0, help="leave out the last N images (held-out split)")
    tr.add_argument("--ngf", type=int, default=32)
    tr.add_argument("--sigma-max", type=float, default=None, help="default: the largest pairwise distance")
    tr.add_argument("--sigma-min", type=float, default=0.01)
    tr.add_argument("--n-levels", type=int, default=None, help="default: NCSNv2's gamma rule")
    tr.add_argument("--no-divide-by-sigma", action="store_true", help="NCSN v1 output (no 1/sigma)")
    tr.add_argument("--steps", type=int, required=True)
    tr.add_argument("--batch-size", type=int, default=64, help="the global batch (over all processes)")
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--ema-decay", type=float, default=0.999)
    tr.add_argument("--init", metavar="CHECKPOINT",
                    help="warm start: begin from the EMA weights of this run's checkpoint (same network and levels)")
    tr.add_argument("--checkpoint-every", type=int, default=250)
    tr.add_argument("--log-every", type=int, default=50)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", required=True)
    _machine_options(tr, compile=True)
    sa = commands.add_parser("sample", help="sample from a trained checkpoint")
    _sampling_options(sa)
    sa.add_argument("--n", type=int, default=64)
    sa.add_argument("--out", default="samples.png")
    ev = commands.add_parser("evaluate", help="sample and judge the samples against held-out digits")
    _sampling_options(ev, compile=True)
    _split_options(ev)
    ev.add_argument("--n", type=int, default=1000)
    ev.add_argument("--batch-size", type=int, default=250)
    ev.add_argument("--classifier", default=None, help="default: the classifier shipped with companion")
    ev.add_argument("--out", required=True, help="a folder for report.json, samples.pt and samples.png")
    ev.add_argument("--card", default=None, help="also record the report in this model card (.json), "
                    "under 'evaluation', or with --from-level under 'restoration'")
    ev.add_argument("--from-level", type=int, default=None,
                    help="start from held-out digits noised to level i (1 = the largest sigma) instead of noise")
    ex = commands.add_parser("export", help="write the EMA weights of a checkpoint and their model card")
    ex.add_argument("checkpoint")
    ex.add_argument("--log", default=None, help="the training log, whose losses go into the card")
    ex.add_argument("--init-log", nargs="+", default=None, metavar="LOG",
                    help="for a warm-started run, the logs of the runs before it, oldest first, one per warm start")
    ex.add_argument("--out", required=True, help="the .pt to write; the card goes beside it as .json")
    lo = commands.add_parser("losses", help="the loss at each level on training and on held-out digits")
    lo.add_argument("checkpoint")
    _split_options(lo)
    lo.add_argument("--n", type=int, default=1000, help="digits from each split")
    lo.add_argument("--levels", default=None, help="comma-separated levels, 1-based (default: all)")
    lo.add_argument("--batch-size", type=int, default=250)
    lo.add_argument("--weights", choices=["ema", "raw"], default="ema")
    lo.add_argument("--seed", type=int, default=0)
    lo.add_argument("--out", default=None, help="a .json for the table")
    _device_options(lo)
    cl = commands.add_parser("classifier", help="train the digit classifier of the evaluation")
    cl.add_argument("--data-path", required=True)
    cl.add_argument("--holdout", type=int, required=True)
    cl.add_argument("--steps", type=int, default=2000)
    cl.add_argument("--seed", type=int, default=0)
    cl.add_argument("--out", required=True)
    cl.add_argument("--threads", type=int, default=None)
    cl.add_argument("--progress", action="store_true")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command == "sample":
        return sample_ncsn(args)
    if args.command == "evaluate":
        return evaluate_ncsn(args)
    if args.command == "losses":
        return level_losses(args)
    if args.command == "classifier":
        return train_digit_classifier(args)
    if args.command == "export":
        return export_checkpoint(args)
    if args.data == "mnist" and not args.data_path:
        parser.error("--data mnist needs --data-path (an .npz or a folder of IDX files)")
    if not math.isfinite(args.lr) or args.lr <= 0:
        parser.error("--lr must be positive")
    train_ncsn(args)


if __name__ == "__main__":
    main()
