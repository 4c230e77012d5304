"""Scores from unnormalised log-densities, by automatic differentiation (Chapter 2).

For an energy-based model p(x) = exp(−E(x)) / Z the score is −∇E(x): the normalising
constant Z does not depend on x, so it drops out of the gradient (Chapter 2, Energy-based models
and the normalising constant).
"""

import torch


def autograd_score(log_density_fn):
    """Return the score x -> ∇ₓ log_density_fn(x) of a log-density known up to a constant (Chapter 2).

    The returned function enables gradients itself and returns a tensor that carries no graph, so
    it can be used inside samplers that run under ``torch.no_grad()`` without building a graph
    across steps.

    Args:
        log_density_fn: maps [batch, ...] to [batch]; for an energy E pass ``lambda x: -E(x)``.

    Returns:
        A callable x -> ∇ₓ log_density_fn(x), same shape as x.
    """

    def score(x):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(log_density_fn(x).sum(), x)
        return grad

    return score
