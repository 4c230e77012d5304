"""Score networks (Chapters 3 to 7 and 9).

Toy-data models: ``ScoreMLP``, s_θ(x) (Chapter 3), and ``NoiseConditionalMLP``, s_θ(x, σ)
(Chapters 4 to 6). Both use SiLU activations, which are smooth, so the Jacobian ∇ₓs_θ that
implicit and sliced score matching differentiate is defined everywhere and itself
differentiable. ``EMA`` averages weights (Chapter 6); ``LevelConditioned`` and ``TimeConditioned``
adapt networks to the book's score signatures (Chapters 7 and 9). The image networks,
``CondRefineNetDilated`` and ``NCSNv2``, live in ``companion.refinenet`` (Chapter 7) and are
importable from here too.
"""

import math

import torch
from torch import nn

from .refinenet import NCSNv2, CondRefineNetDilated  # noqa: F401  (re-exported)


def _mlp(d_in, d_out, hidden, depth):
    layers, d = [], d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.SiLU()]
        d = hidden
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


class ScoreMLP(nn.Module):
    """s_θ(x) for points in R^D: an MLP with ``depth`` hidden layers of width ``hidden`` and SiLU
    activations (Chapter 3, Learning a score with each objective).
    """

    def __init__(self, dim, hidden=128, depth=3):
        super().__init__()
        self.dim = dim
        self.net = _mlp(dim, dim, hidden, depth)

    def forward(self, x):
        """s_θ(x) for x of shape [batch, D] (Chapter 3)."""
        return self.net(x)


class NoiseConditionalMLP(nn.Module):
    """s_θ(x, σ) = MLP([x, Fourier features of log σ]) / σ (Chapter 4, Many noise levels; Chapter 5).

    The network sees log σ rather than σ, so that levels a factor apart are equally far apart
    for it, and its output is divided by σ, because the target −z/σ of denoising score matching has
    a typical size of √D / σ, as has the score of p_σ at small σ for data near a low-dimensional set
    (Song & Ermon 2020, technique 3). σ is a positive number or a [batch] tensor.
    """

    def __init__(self, dim, hidden=128, depth=3, n_freqs=8):
        super().__init__()
        self.dim = dim
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freqs) * math.pi / 8, persistent=False)
        self.net = _mlp(dim + 2 * n_freqs, dim, hidden, depth)

    def forward(self, x, sigma):
        """s_θ(x, σ) for x of shape [batch, D] and ``sigma`` a positive number or a [batch] tensor
        (Chapter 4).
        """
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0]).reshape(-1, 1)
        angles = sigma.log() * self.freqs
        h = torch.cat([x, angles.sin(), angles.cos()], dim=-1)
        return self.net(h) / sigma


class EMA:
    """Exponential moving average of a model's weights, θ̄ ← d·θ̄ + (1 − d)·θ after every step
    (Song & Ermon 2020, technique 5; Chapter 6). Sampling with θ̄ instead of θ removes much of the
    step-to-step noise of the training iterates. Non-floating-point buffers are copied, not averaged.
    """

    def __init__(self, model, decay=0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1); got {decay}")
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        """One averaging step θ̄ ← d·θ̄ + (1 − d)·θ from the current weights of ``model`` (Chapter 6)."""
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v, 1 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model):
        """Load the averaged weights into ``model`` (Chapter 6)."""
        model.load_state_dict(self.shadow)

    def state_dict(self):
        """The decay and the averaged weights, for a checkpoint (Chapter 7)."""
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state):
        """Restore the decay and the averaged weights from ``state_dict()``'s output (Chapter 7)."""
        self.decay = float(state["decay"])
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}


class LevelConditioned(nn.Module):
    """Adapts a network conditioned on the index of a noise level, net(x, level), to the book's
    score signature s(x, σ) (Chapter 7): σ (a [batch] tensor) is mapped to the nearest of
    ``sigmas`` in log scale. Pass only σ's that are levels of the schedule; others are not
    interpolated.

    With ``divide_by_sigma=True`` the output is net(x, level)/σ, NCSNv2's technique 3 (Song & Ermon
    2020): the score of p_σ has size about √D/σ, so the network itself only has to produce outputs
    of unit size at every level.
    """

    def __init__(self, net, sigmas, divide_by_sigma=False):
        super().__init__()
        self.net = net
        self.divide_by_sigma = divide_by_sigma
        self.register_buffer("log_sigmas", torch.as_tensor(sigmas, dtype=torch.float32).log())

    def forward(self, x, sigma):
        """s(x, σ) = net(x, level of σ), divided by σ if ``divide_by_sigma`` (Chapter 7)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        level = (sigma.log().float()[:, None] - self.log_sigmas).abs().argmin(dim=1)
        out = self.net(x, level)
        return out / sigma.view(-1, *([1] * (x.ndim - 1))) if self.divide_by_sigma else out


class TimeConditioned(nn.Module):
    """Adapts a noise-conditional network s(x, σ) to the signature s(x, t) of score SDEs:
    s(x, t) = net(x, σ(t)), with σ(t) the std of the SDE's perturbation kernel (``sde.marginal``).
    Since σ(t) is increasing in t, it identifies t; and a network that divides by its σ, such as
    ``NoiseConditionalMLP``, then outputs scores of the right size √D/σ(t) at every time (Chapter 9).
    The SDE is only asked for marginal(t) -> (α, σ).
    """

    def __init__(self, net, sde):
        super().__init__()
        self.net, self.sde = net, sde

    def forward(self, x, t):
        """s(x, t) = net(x, σ(t)) for ``t`` a number or a [batch] tensor (Chapter 9)."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.net(x, self.sde.marginal(t)[1])
