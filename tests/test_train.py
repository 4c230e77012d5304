"""The training loop: checkpoints, exact resumption after a kill, EMA."""

import pickle

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from companion.losses import dsm_loss
from companion.nets import EMA, ScoreMLP
from companion.train import load_checkpoint, save_checkpoint, train

DATA = torch.randn(512, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 0.5])


def loss_fn(model, batch, generator):
    return dsm_loss(model, batch, 0.3, generator=generator)


def fresh_model():
    torch.manual_seed(1)
    return ScoreMLP(2, hidden=16, depth=1)


class Killed(Exception):
    pass


class Arbitrary:
    pass


def test_resuming_after_a_kill_reproduces_the_uninterrupted_run(tmp_path):
    whole = fresh_model()
    ema_whole, _ = train(loss_fn, whole, DATA, n_steps=10, out_dir=tmp_path / "a", checkpoint_every=3, lr=1e-2)

    def kill_at_8(info):
        if info["step"] == 8:
            raise Killed

    interrupted = fresh_model()
    with pytest.raises(Killed):
        train(loss_fn, interrupted, DATA, n_steps=10, out_dir=tmp_path / "b", checkpoint_every=3, lr=1e-2, callback=kill_at_8)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 6  # steps 7 and 8 are lost, no more
    resumed = fresh_model()  # a new process: nothing but the checkpoint survives
    ema_resumed, losses = train(loss_fn, resumed, DATA, n_steps=10, out_dir=tmp_path / "b", checkpoint_every=3, lr=1e-2)
    assert losses.shape == (4,)
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for k in ema_whole.shadow:
        torch.testing.assert_close(ema_whole.shadow[k], ema_resumed.shadow[k], rtol=0, atol=0)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 10


def test_a_warm_start_begins_from_the_given_weights_with_a_fresh_optimiser(tmp_path):
    trained = fresh_model()
    train(loss_fn, trained, DATA, n_steps=20, lr=1e-2)
    init = {k: v.clone() for k, v in trained.state_dict().items()}
    model = fresh_model()
    ema, _ = train(loss_fn, model, DATA, n_steps=1, lr=1e-3, init=init, ema_decay=0.9)
    for k, v in model.state_dict().items():
        # Adam's first step from a fresh state moves every parameter by lr·g/(|g| + eps) ≈ ±lr
        moved = (v - init[k]).abs()
        torch.testing.assert_close(moved, torch.full_like(moved, 1e-3), rtol=1e-3, atol=0)
        torch.testing.assert_close(ema.shadow[k], 0.9 * init[k] + 0.1 * v)
    # A run that has a checkpoint resumes from it; the warm start only begins a run.
    whole = fresh_model()
    train(loss_fn, whole, DATA, n_steps=4, out_dir=tmp_path / "a", checkpoint_every=2, lr=1e-2)
    train(loss_fn, fresh_model(), DATA, n_steps=2, out_dir=tmp_path / "b", checkpoint_every=2, lr=1e-2)
    resumed = fresh_model()
    train(loss_fn, resumed, DATA, n_steps=4, out_dir=tmp_path / "b", checkpoint_every=2, lr=1e-2, init=init)
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_checkpoints_are_written_atomically_and_load_weights_only(tmp_path):
    path = tmp_path / "c" / "checkpoint.pt"
    save_checkpoint({"step": 3, "w": torch.ones(2)}, path)
    assert path.is_file() and not path.with_name("checkpoint.pt.tmp").exists()
    torch.testing.assert_close(load_checkpoint(path)["w"], torch.ones(2))
    torch.save({"x": Arbitrary()}, tmp_path / "arbitrary.pt")
    with pytest.raises(pickle.UnpicklingError):  # weights_only refuses to unpickle arbitrary objects
        load_checkpoint(tmp_path / "arbitrary.pt")


def test_ema_is_the_exponential_average():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.9)
    for value in (1.0, 1.0, 1.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
    assert ema.shadow["weight"].item() == pytest.approx(1 - 0.9**3)
    ema.copy_to(model)
    assert model.weight.item() == pytest.approx(1 - 0.9**3)
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)


def test_training_closes_most_of_the_gap_to_the_exact_score():
    """DATA is N(0, diag(1, 1/4)), so the perturbed score -x/(v + σ²) gives the loss's floor."""
    variance = torch.tensor([1.0, 0.25]) + 0.3**2

    def loss_on_fixed_noise(score):
        return loss_fn(score, DATA, torch.Generator().manual_seed(5)).item()

    model = fresh_model()
    before = loss_on_fixed_noise(model)
    train(loss_fn, model, DATA, n_steps=300, lr=1e-2, batch_size=128)
    floor = loss_on_fixed_noise(lambda x: -x / variance)
    with torch.no_grad():
        assert loss_on_fixed_noise(model) - floor < 0.2 * (before - floor)


def gradient_norms_seen_by_adam(grad_clip):
    """The total gradient norm at every optimiser step of a loss scaled so that its gradients exceed 1."""
    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    handle = register_optimizer_step_pre_hook(record)
    try:
        train(lambda m, b, g: 100.0 * loss_fn(m, b, g), fresh_model(), DATA, n_steps=20, lr=1e-2,
              grad_clip=grad_clip, batch_size=128)
    finally:
        handle.remove()
    return torch.tensor(norms)


def test_gradients_are_clipped_to_grad_clip():
    unclipped, clipped = gradient_norms_seen_by_adam(None), gradient_norms_seen_by_adam(1.0)
    assert len(clipped) == 20 and unclipped.min() > 2.0  # the bound binds at every step ...
    assert clipped.max() <= 1.0 + 1e-5  # ... and Adam sees the clipped norm
    assert clipped.min() > 1.0 - 1e-5  # scaled down to the bound, not below it


def fixed_noise_loss(model, batch, generator):
    """Denoising score matching whose noise is a fixed function of the example, so that any split
    of a batch across processes sees the same noise as the whole batch in one process."""
    z = torch.sin(97.0 * batch.sum(-1, keepdim=True) + torch.arange(batch.shape[-1]))
    sigma = 0.3
    return 0.5 * ((model(batch + sigma * z) + z / sigma) ** 2).sum(-1).mean()


def test_a_data_parallel_step_equals_one_process_on_the_whole_batch(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).with_name("ddp_worker.py")
    out = tmp_path / "ddp"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(worker), str(out)], check=True, capture_output=True, timeout=300)
    rank0, rank1 = torch.load(out / "parameters.pt", weights_only=True)
    single = fresh_model()
    train(fixed_noise_loss, single, DATA, n_steps=3, batch_size=16, lr=1e-2)
    for a, b, c in zip(rank0, rank1, single.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the processes agree exactly
        torch.testing.assert_close(a, c.detach(), rtol=1e-5, atol=1e-6)  # and with one process
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 3 and len(state["noise_generators"]) == 2
    assert not torch.equal(state["noise_generators"][0], state["noise_generators"][1])


def test_half_the_batch_is_not_the_whole_batch():
    """The comparison above can fail: one process on half the batch ends elsewhere."""
    half, whole = fresh_model(), fresh_model()
    train(fixed_noise_loss, half, DATA, n_steps=3, batch_size=8, lr=1e-2)
    train(fixed_noise_loss, whole, DATA, n_steps=3, batch_size=16, lr=1e-2)
    assert not all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(half.parameters(), whole.parameters()))


def test_batch_must_split_evenly_across_processes(monkeypatch):
    import companion.train as module

    monkeypatch.setattr(module, "_process_group", lambda: (0, 3))
    with pytest.raises(ValueError, match="batch_size 16 .* 3 processes"):
        train(fixed_noise_loss, fresh_model(), DATA, n_steps=1, batch_size=16)


def test_compiled_training_takes_the_same_steps(tmp_path):
    eager, compiled = fresh_model(), fresh_model()
    train(loss_fn, eager, DATA, n_steps=3, lr=1e-2)
    train(loss_fn, compiled, DATA, n_steps=3, lr=1e-2, compile=True, out_dir=tmp_path)
    for a, b in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    saved = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    assert set(saved) == set(eager.state_dict())  # the plain model's names, not the compiled wrapper's


@pytest.mark.parametrize("options, match", [({"grad_clip": -1.0}, "grad_clip"), ({"grad_clip": 0.0}, "grad_clip"),
                                            ({"batch_size": 0}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
                                            ({"checkpoint_every": 0}, "checkpoint_every")])
def test_bad_training_options_raise(options, match):
    # A negative clipping bound would reverse every gradient and zero would erase them, silently.
    with pytest.raises(ValueError, match=match):
        train(loss_fn, fresh_model(), DATA, n_steps=1, **options)
