"""Input validation shared by the public functions: each check raises a ValueError that names
the argument and says how to fix it."""

import inspect
import math

import torch


def as_float_tensor(value, name, *, dtype=None, device=None):
    """Convert `value` to a floating-point tensor (the default dtype unless it already is one)."""
    try:
        t = torch.as_tensor(value, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a number, a sequence of numbers or a tensor; got {type(value).__name__}") from err
    if dtype is not None:
        t = t.to(dtype)
    elif not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values; pass finite numbers")
    return t


def positive_number(value, name):
    """A strictly positive finite float or 0-d tensor (returned unchanged)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive number; got {value!r}")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a single number; got a tensor of shape {tuple(value.shape)}")
        ok = bool(torch.isfinite(value).all() and (value > 0).all())
    else:
        try:
            ok = math.isfinite(float(value)) and float(value) > 0
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a positive number; got {value!r}") from None
    if not ok:
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return value


def non_negative_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
    return value


def positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return value


def last_dim(x, dim, name="x"):
    """Check that `x` is a tensor of shape [..., dim]."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [..., {dim}]; got {type(x).__name__}")
    if x.ndim == 0 or x.shape[-1] != dim:
        raise ValueError(
            f"{name} must have shape [..., {dim}] (points along the last dimension); got {tuple(x.shape)}"
        )
    return x


def batch(x, name="x"):
    """Check that `x` is a floating tensor with a leading batch dimension."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor of shape [batch, ...]")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a leading batch dimension; got a 0-d tensor (use x.reshape(1, -1))")
    return x


def time_score(score_fn, name="score_fn"):
    """Check that a score of a score SDE can be called as score_fn(x, t) (Chapter 9)."""
    if not callable(score_fn):
        raise ValueError(f"{name} must be a callable s(x, t); got {type(score_fn).__name__}")
    try:
        signature = inspect.signature(score_fn)
    except (TypeError, ValueError):  # a builtin or an extension type: nothing to inspect
        return score_fn
    try:
        signature.bind(None, None)
    except TypeError:
        raise ValueError(
            f"{name} must take (x, t), the state and a [batch] tensor of times; got a callable with "
            f"signature {signature}. For a noise-conditional model s(x, sigma) use "
            "companion.nets.TimeConditioned; for a score of x alone there is no time to condition on"
        ) from None
    return score_fn


def finite_result(x, what, hint):
    """Raise if a sampler produced NaN or infinite values (one host sync, after the loop)."""
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} produced NaN or infinite values: {hint}")
    return x
