"""Training loops.

`fit` is the small loop the toy chapters use: Adam on minibatches drawn from a fixed data tensor,
with an explicit generator so that a chapter trains the same model on every run.
"""

import torch
from tqdm.auto import trange

from . import _checks


def fit(loss_fn, model, data, *, n_steps, batch_size=256, lr=1e-3, generator=None, callback=None, progress=False):
    """Minimise loss_fn(model, batch) with Adam; returns the per-step losses as a [n_steps] tensor.

    Args:
        loss_fn: callable (model, batch) -> scalar tensor, e.g.
            `lambda net, x: dsm_loss(net, x, 0.1, generator=g)`.
        model: a torch.nn.Module (trained in place).
        data: [N, ...] training points; each step draws `batch_size` of them with replacement.
        callback: called as callback({'i', 'loss', 'model'}) after every step.
    """
    _checks.batch(data, "data")
    _checks.non_negative_int(n_steps, "n_steps")
    _checks.positive_number(lr, "lr")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
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
