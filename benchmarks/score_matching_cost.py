"""Cost of one training step of each score-matching loss against the data dimension D.

    python benchmarks/score_matching_cost.py            # writes benchmarks/results/score_matching_cost.md

One step = the loss and its gradient with respect to the parameters, for the same MLP
(companion.nets.ScoreMLP, 2 hidden layers of 256 SiLU units) on a batch of 64 points in R^D.
Times are medians of repeated runs on one CPU thread, reported as ratios to denoising score
matching measured in the same run, so that the table compares methods, not machines (Chapter 3).
"""

import argparse
import platform
from pathlib import Path

import torch
from torch.utils import benchmark

from companion.losses import dsm_loss, ism_loss, ssm_loss
from companion.nets import ScoreMLP

DIMS = (2, 16, 64, 256, 784)
BATCH = 64
METHODS = {
    "ISM, exact trace (loop)": lambda net, x: ism_loss(net, x, trace="loop"),
    "ISM, exact trace (vectorised)": lambda net, x: ism_loss(net, x, trace="exact"),
    "ISM, Hutchinson (1 probe)": lambda net, x: ism_loss(net, x, trace="hutchinson"),
    "SSM (1 projection)": lambda net, x: ssm_loss(net, x),
    "SSM-VR (1 projection)": lambda net, x: ssm_loss(net, x, variance_reduction=True),
    "DSM": lambda net, x: dsm_loss(net, x, 0.1),
}


def step_seconds(loss_fn, net, x, min_run_time):
    def step():
        net.zero_grad(set_to_none=True)
        loss_fn(net, x).backward()

    timer = benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=1)
    return timer.blocked_autorange(min_run_time=min_run_time).median


def main(out, min_run_time):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    seconds = {}
    for d in DIMS:
        net = ScoreMLP(d, hidden=256, depth=2)
        x = torch.randn(BATCH, d)
        for name, fn in METHODS.items():
            seconds[name, d] = step_seconds(fn, net, x, min_run_time)
        print(f"D = {d}: " + ", ".join(f"{k}: {seconds[k, d] * 1e3:.2f} ms" for k in METHODS))
    header = "| method | " + " | ".join(f"D = {d}" for d in DIMS) + " |"
    rows = [header, "|---|" + "---:|" * len(DIMS)]
    for name in METHODS:
        rows.append(f"| {name} | " + " | ".join(f"{seconds[name, d] / seconds['DSM', d]:.1f}×" for d in DIMS) + " |")
    # The exact trace at D = 784 across batch sizes: where the loop is latency-bound.
    batch_rows = ["| batch | loop | vectorised | speed-up |", "|---:|---:|---:|---:|"]
    net = ScoreMLP(784, hidden=256, depth=2)
    for b in (1, 4, 16, 64):
        x = torch.randn(b, 784)
        loop, vec = (step_seconds(METHODS[f"ISM, exact trace ({k})"], net, x, min_run_time) for k in ("loop", "vectorised"))
        batch_rows.append(f"| {b} | {loop * 1e3:.0f} ms | {vec * 1e3:.0f} ms | {loop / vec:.1f}× |")
    dsm_ms = " | ".join(f"{seconds['DSM', d] * 1e3:.2f} ms" for d in DIMS)
    speedup = seconds["ISM, exact trace (loop)", 784] / seconds["ISM, exact trace (vectorised)", 784]
    text = "\n".join(rows) + f"\n| *DSM, absolute* | {dsm_ms} |\n"
    text += (f"\nCost of one training step (loss and parameter gradient) relative to DSM; batch {BATCH}, "
             f"MLP 2×256, one CPU thread ({platform.machine()}, torch {torch.__version__}). "
             f"At D = 784 and batch {BATCH} the vectorised exact trace is {speedup:.1f}× faster than the loop.\n")
    text += ("\nBoth exact variants compute the same D Jacobian-vector products per sample, so at batch 64 "
             "the step is bound by arithmetic, which batching cannot remove on one CPU thread. Batching pays "
             "where the loop is bound by the latency of its D small backward passes, i.e. at small batches "
             "(and on GPUs). The exact trace at D = 784 with one CPU thread:\n\n" + "\n".join(batch_rows) + "\n")
    Path(out).write_text(text)
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Path(__file__).parent / "results" / "score_matching_cost.md")
    parser.add_argument("--min-run-time", type=float, default=1.0)
    args = parser.parse_args()
    main(args.out, args.min_run_time)
