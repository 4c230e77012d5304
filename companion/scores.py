"""Scores from unnormalised log-densities, by automatic differentiation (Chapter 2).

For an energy-based model p(x) = exp(-E(x)) / Z the score is -grad E(x): the normalising
constant Z does not depend on x, so it drops out of the gradient.
"""

import torch


def autograd_score(log_density_fn):
    """Return x -> grad_x log_density_fn(x), for a log-density known up to a constant.

    `log_density_fn` maps [batch, ...] to [batch]; for an energy E pass `lambda x: -E(x)`.
    The returned function enables gradients itself and returns a detached tensor, so it can be
    used inside samplers that run under torch.no_grad() without building a graph across steps.
    """

    def score(x):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(log_density_fn(x).sum(), x)
        return grad

    return score
