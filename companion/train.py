"""Training loops (Chapters 3 to 7 and 9).

``fit`` is the small loop the toy chapters use: Adam on minibatches drawn from a fixed data
tensor, with an explicit generator so that a chapter trains the same model on every run.
``train`` is the loop of the image NCSN (Chapter 7): EMA, checkpoints, resumption and data
parallelism.
"""

import torch
import torch.distributed as dist
from tqdm.auto import trange

from . import _checks


def fit(loss_fn, model, data, *, n_steps, batch_size=256, lr=1e-3, generator=None, callback=None, progress=False):
    """Minimise loss_fn(model, batch) with Adam (Chapters 3 to 5 and 9); returns the per-step losses
    as an [n_steps] tensor.

    Args:
        loss_fn: callable (model, batch) -> scalar tensor, e.g.
            ``lambda net, x: dsm_loss(net, x, 0.1, generator=g)``.
        model: a torch.nn.Module (trained in place).
        data: [N, ...] training points; each step draws ``batch_size`` of them with replacement.
        n_steps: the number of steps.
        batch_size: the minibatch size.
        lr: Adam's learning rate.
        generator: the torch.Generator of the minibatch indices.
        callback: called as ``callback({'i': i, 'loss': loss, 'model': model})`` after every step.
        progress: show a progress bar.
    """
    _checks.batch(data, "data")
    _checks.non_negative_int(n_steps, "n_steps")
    _checks.positive_number(lr, "lr")
    _checks.positive_int(batch_size, "batch_size")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = torch.empty(n_steps, device=data.device)
    for i in trange(n_steps, disable=not progress, desc="training"):
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=generator, device=data.device)
        loss = loss_fn(model, data[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[i] = loss.detach()
        if callback is not None:
            callback({"i": i, "loss": loss.detach(), "model": model})
    return losses


def save_checkpoint(state, path):
    """``torch.save`` to a temporary file beside ``path``, then rename: a kill never leaves a torn file
    (Chapter 7, Training on MNIST).
    """
    import os
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, device=None):
    """Load a checkpoint saved by ``train``, with ``weights_only=True`` (no code is unpickled)
    (Chapter 7).
    """
    return torch.load(path, map_location=device, weights_only=True)


def _process_group():
    """(rank, world size) of the torch.distributed group this process belongs to, or (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(loss_fn, model, data, *, n_steps, out_dir=None, batch_size=64, lr=1e-3, ema_decay=0.999, grad_clip=None,
          checkpoint_every=500, seed=0, transform=None, config=None, compile=False, progress=False, callback=None,
          init=None):
    """The training loop for any score-matching loss: Adam, EMA of the weights, optional gradient
    clipping, atomic checkpoints, resumption, and data-parallel training (Chapter 7, Training on
    MNIST).

    Args:
        loss_fn: callable (model, batch, generator) -> scalar tensor, the mean over the batch.
        model: the network, already on its device; ``data`` is moved there once.
        data: [N, ...] training examples; each step draws ``batch_size`` of them with replacement.
        n_steps: the total number of steps, counting those of a resumed run.
        out_dir: where ``checkpoint.pt`` is written every ``checkpoint_every`` steps and at the end.
            If it already holds one, training resumes from it: weights, EMA, optimiser, step and
            random state, so that an interrupted run continues exactly as an uninterrupted one
            would and loses at most the steps since the last checkpoint.
        batch_size: the global batch size.
        lr: Adam's learning rate.
        ema_decay: the decay of the ``EMA``.
        grad_clip: the maximum gradient norm, or None.
        checkpoint_every: steps between checkpoints.
        seed: the seed of the random streams.
        transform: callable (batch, generator) -> batch applied to every draw (e.g. dequantisation).
        config: a dict of plain values stored in the checkpoint (the recipe that made it).
        compile: run the model through torch.compile (1.6× the images per second of the NCSN at
            the MNIST configuration on a CPU, benchmarks/ncsn_throughput.py, after a compilation
            of a minute or two); the checkpoints hold the plain model's weights either way.
        progress: show a progress bar (process 0 only).
        callback: called as ``callback({'step': step, 'loss': loss, 'model': model, 'ema': ema})``
            after every step.
        init: a warm start, a state dict of the model's weights that both the model and its EMA
            start from, with a fresh optimiser, at step 0 (e.g. another run's EMA weights, to go on
            at a lower learning rate). Ignored when ``out_dir`` already holds a checkpoint: a
            resumed run continues from that.

    Returns:
        A pair ``(ema, losses)``, the EMA helper (its weights are the ones to sample with) and the
        losses of the steps run in this call, a tensor on the model's device.

    Data parallel: called in every process of an initialised torch.distributed group (as
    ``torchrun`` starts them), the model is wrapped in DistributedDataParallel (Li et al. 2020) and
    ``batch_size`` is the global batch. Every process draws the same global batch indices from a
    shared generator and trains on its own slice of them, with its own stream for the noise; the
    gradients are averaged, so a step equals one step of a single process on the whole batch.
    Process 0 writes the checkpoints, which hold every process's noise stream.
    """
    from pathlib import Path

    from .nets import EMA

    _checks.non_negative_int(n_steps, "n_steps")
    _checks.positive_number(lr, "lr")
    _checks.positive_int(batch_size, "batch_size")
    if grad_clip is not None:  # a negative bound would flip every gradient, zero would erase them
        _checks.positive_number(grad_clip, "grad_clip")
    _checks.positive_int(checkpoint_every, "checkpoint_every")
    rank, world = _process_group()
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} (the global batch) must be divisible by the {world} processes")
    device = next(model.parameters()).device
    data = data.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    # One process uses one stream for everything; several share `generator` for the batch
    # indices only and draw their noise from a stream of their own.
    noise = generator if world == 1 else torch.Generator(device=device).manual_seed(seed + 1 + rank)
    if init is not None:  # a warm start; a checkpoint of this run, if there is one, overrides it below
        model.load_state_dict(init)
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile:
        net = torch.compile(net)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    ema = EMA(model, ema_decay)
    start = 0
    path = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    if path is not None and path.is_file():
        state = load_checkpoint(path, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        generator.set_state(state["generator"].cpu())
        streams = state.get("noise_generators", [])
        if world > 1:
            if len(streams) != world:
                raise ValueError(f"{path} was written by {len(streams) or 1} process(es); resume it with as many, not {world}")
            noise.set_state(streams[rank].cpu())
        elif streams:
            raise ValueError(f"{path} was written by {len(streams)} processes; resume it with as many, not 1")
        start = int(state["step"])

    def checkpoint(step):
        streams = []
        if world > 1:
            streams = [None] * world
            dist.all_gather_object(streams, noise.get_state())
        if rank == 0:
            save_checkpoint({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                             "generator": generator.get_state(), "noise_generators": streams, "step": step,
                             "config": config or {}}, path)
        if world > 1:
            dist.barrier()  # nobody runs ahead of a checkpoint that may be read back

    local = slice(rank * batch_size // world, (rank + 1) * batch_size // world)
    losses = torch.empty(max(n_steps - start, 0), device=device)
    model.train()
    for step in trange(start, n_steps, initial=start, total=n_steps, disable=not progress or rank > 0, desc="training"):
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=generator, device=device)[local]
        batch = data[idx] if transform is None else transform(data[idx], noise)
        loss = loss_fn(net, batch, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        ema.update(model)
        losses[step - start] = loss.detach()
        if path is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == n_steps):
            checkpoint(step + 1)
        if callback is not None:
            callback({"step": step + 1, "loss": loss.detach(), "model": model, "ema": ema})
    return ema, losses
