"""Throughput of the image NCSN at the MNIST configuration (ngf = 64, L = 10, 1×28×28).

    python benchmarks/ncsn_throughput.py        # writes benchmarks/results/ncsn_throughput.md

Training: images per second of one step of the NCSN objective (forward, backward, Adam) at
batch 64. Sampling: score evaluations per second at batch 16, and the overhead of the annealed
Langevin loop over its bare score calls. Each variant is reported as a ratio to the plain setting
measured in the same run (Chapter 7); the absolute figures describe only the machine that ran it.
"""

import argparse
import platform
import time
from pathlib import Path

import torch
from torch.utils import benchmark

from companion import schedules
from companion.losses import ncsn_loss
from companion.nets import LevelConditioned
from companion.refinenet import CondRefineNetDilated
from companion.samplers import annealed_langevin

SIGMAS = schedules.geometric(1.0, 0.01, 10)


def model(channels_last=False):
    torch.manual_seed(0)
    net = LevelConditioned(CondRefineNetDilated(channels=1, ngf=64, n_levels=10), SIGMAS, divide_by_sigma=True)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def images(batch, channels_last=False):
    x = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def median_seconds(fn, threads, min_run_time):
    fn()  # warm up (and compile, for torch.compile)
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median


def train_step(net, x):
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    sigmas = SIGMAS.float()
    g = torch.Generator().manual_seed(2)

    def step():
        opt.zero_grad(set_to_none=True)
        ncsn_loss(net, x, sigmas, generator=g).backward()
        opt.step()

    return step


def score_call(net, x, mode):
    sigma = torch.full((x.shape[0],), 0.1)
    context = torch.inference_mode if mode == "inference_mode" else torch.no_grad

    def call():
        with context():
            net(x, sigma)

    return call


def compiled(net):
    return torch.compile(net)


def measure(threads, min_run_time):
    rows_train, rows_sample = {}, {}
    variants_train = {
        "plain": lambda: (model(), images(64)),
        "channels_last": lambda: (model(True), images(64, True)),
        "torch.compile": lambda: (compiled(model()), images(64)),
    }
    for name, make in variants_train.items():
        try:
            net, x = make()
            rows_train[name] = 64 / median_seconds(train_step(net, x), threads, min_run_time)
        except Exception as err:  # torch.compile needs a working C++ toolchain; report, don't hide
            rows_train[name] = f"failed: {type(err).__name__}"
        print("train", name, rows_train[name], flush=True)
    variants_sample = {
        "no_grad": lambda: score_call(model(), images(16), "no_grad"),
        "inference_mode": lambda: score_call(model(), images(16), "inference_mode"),
        "inference_mode + channels_last": lambda: score_call(model(True), images(16, True), "inference_mode"),
        "inference_mode + torch.compile": lambda: score_call(compiled(model()), images(16), "inference_mode"),
    }
    for name, make in variants_sample.items():
        try:
            rows_sample[name] = 16 / median_seconds(make(), threads, min_run_time)
        except Exception as err:
            rows_sample[name] = f"failed: {type(err).__name__}"
        print("sample", name, rows_sample[name], flush=True)
    return rows_train, rows_sample


def sampler_overhead(threads, n_steps_each=3):
    """Wall time of annealed_langevin over n_levels × n_steps_each bare score calls (1.00 = none)."""
    torch.set_num_threads(threads)
    net, x = model(), images(16)
    call = score_call(net, x, "inference_mode")
    n_calls = len(SIGMAS) * n_steps_each
    call()
    ratios = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n_calls):
            call()
        bare = time.perf_counter() - start
        start = time.perf_counter()
        with torch.inference_mode():
            annealed_langevin(net, x, SIGMAS, step_lr=1e-5, n_steps_each=n_steps_each,
                              generator=torch.Generator().manual_seed(3))
        ratios.append((time.perf_counter() - start) / bare)
    return sorted(ratios)[1]


def table(rows, unit, baseline):
    lines = [f"| setting | {unit} | ratio to {baseline} |", "|---|---:|---:|"]
    for name, value in rows.items():
        if isinstance(value, str):
            lines.append(f"| {name} | {value} | – |")
        else:
            lines.append(f"| {name} | {value:.1f} | {value / rows[baseline]:.2f}× |")
    return "\n".join(lines)


def main(out, threads, min_run_time):
    rows_train, rows_sample = measure(threads, min_run_time)
    overhead = sampler_overhead(threads)
    text = "\n\n".join([
        "# Throughput of the image NCSN (MNIST configuration: ngf = 64, L = 10)",
        f"Measured by `benchmarks/ncsn_throughput.py` with {threads} thread(s) on {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}. Medians of repeated runs; ratios are to the first row, measured in the same run.",
        "## Training step, batch 64 (forward, backward, Adam)",
        table(rows_train, "images/s", "plain"),
        "## Score evaluations, batch 16",
        table(rows_sample, "evaluations/s", "no_grad"),
        "## Sampler overhead",
        f"annealed_langevin (10 levels × 3 steps, batch 16) takes {overhead:.3f}× the time of its 30 bare score calls.",
    ]) + "\n"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-run-time", type=float, default=10.0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ncsn_throughput.md"))
    args = parser.parse_args()
    main(args.out, args.threads, args.min_run_time)
