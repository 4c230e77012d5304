"""The NCSN RefineNet (Song & Ermon 2019, Appendix B.1)."""

import pytest
import torch

from companion.refinenet import CondInstanceNormPlus, CondRefineNetDilated, InstanceNormPlus, NCSNv2


def conv(c_in, c_out, k=3, bias=True):
    return c_in * c_out * k * k + (c_out if bias else 0)


def layout_parameter_count(ngf, n_levels, channels=1, v2=False):
    """Parameters of the NCSN layout, counted layer by layer from the paper's description:
    every CondInstanceNorm++ holds 3 × channels × levels numbers; RCU and CRP convolutions have no
    bias; MSF, residual and the outer convolutions do. NCSNv2 (v2=True): every InstanceNorm++ of
    the residual blocks and the output holds 3 × channels numbers, the RefineNet blocks none."""
    w, L = 2 * ngf, n_levels

    def norm(c):
        return 3 * c * (1 if v2 else L)

    def refine_norm(c):
        return 0 if v2 else norm(c)

    def res(c_in, c_out, down=False, dilated=False):
        if down and not dilated:  # conv, then conv + mean pool; 1x1 conv + mean pool shortcut
            return norm(c_in) + conv(c_in, c_in) + norm(c_in) + conv(c_in, c_out) + conv(c_in, c_out, 1)
        if down:  # dilated "down" block: same size, 3x3 dilated shortcut
            return norm(c_in) + conv(c_in, c_in) + norm(c_in) + conv(c_in, c_out) + conv(c_in, c_out)
        return norm(c_in) + conv(c_in, c_out) + norm(c_out) + conv(c_out, c_out)

    def rcu(c, blocks):
        return blocks * 2 * (refine_norm(c) + conv(c, c, bias=False))

    def refine(ins, c, end=False):
        total = sum(rcu(i, 2) for i in ins) + 2 * (refine_norm(c) + conv(c, c, bias=False)) + rcu(c, 3 if end else 1)
        if len(ins) > 1:
            total += sum(refine_norm(i) + conv(i, c) for i in ins)
        return total

    return (
        conv(channels, ngf)
        + 2 * res(ngf, ngf) + res(ngf, w, down=True) + res(w, w)
        + res(w, w, down=True, dilated=True) + res(w, w, dilated=True)
        + res(w, w, down=True, dilated=True) + res(w, w, dilated=True)
        + refine([w], w) + refine([w, w], w) + refine([w, w], ngf) + refine([ngf, ngf], ngf, end=True)
        + norm(ngf) + conv(ngf, channels)
    )


@pytest.mark.parametrize("ngf,levels,channels", [(64, 10, 1), (32, 10, 1), (16, 5, 3)])
def test_parameter_count_matches_the_layout(ngf, levels, channels):
    net = CondRefineNetDilated(channels=channels, ngf=ngf, n_levels=levels)
    assert sum(p.numel() for p in net.parameters()) == layout_parameter_count(ngf, levels, channels)


@pytest.mark.parametrize("ngf,channels", [(64, 1), (16, 3)])
def test_ncsnv2_parameter_count_matches_the_layout(ngf, channels):
    net = NCSNv2(channels=channels, ngf=ngf)
    assert sum(p.numel() for p in net.parameters()) == layout_parameter_count(ngf, 1, channels, v2=True)


def test_ncsnv2_divides_by_sigma_and_sees_nothing_else_of_it():
    torch.manual_seed(3)
    net = NCSNv2(ngf=8)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        a, b = net(x, torch.tensor([1.0, 0.5, 0.1])), net(x, 1.0)
    torch.testing.assert_close(a * torch.tensor([1.0, 0.5, 0.1]).view(-1, 1, 1, 1), b)


def test_ncsnv2_pools_by_maximum_and_ncsn_by_average():
    v1, v2 = CondRefineNetDilated(ngf=8, n_levels=2), NCSNv2(ngf=8)
    x = torch.tensor([[[[0.0] * 4 + [8.0]] * 5]])  # one bright column in a 5 × 5 window
    assert v1.refine1.crp.pool(x, 5, stride=1, padding=2)[0, 0, 2, 2] == 8.0 / 5
    assert v2.refine1.crp.pool(x, 5, stride=1, padding=2)[0, 0, 2, 2] == 8.0


def test_instance_norm_plus_is_cond_instance_norm_plus_with_one_level():
    torch.manual_seed(4)
    plain, cond = InstanceNormPlus(4), CondInstanceNormPlus(4, n_levels=1)
    with torch.no_grad():
        cond.embed.weight[0] = torch.cat([plain.gamma, plain.alpha, plain.beta + 0.3])
        plain.beta += 0.3
    x = torch.randn(2, 4, 5, 5) + torch.arange(4.0)[:, None, None]
    torch.testing.assert_close(plain(x), cond(x, torch.tensor([0, 0])))


def test_mnist_configuration_matches_the_reference_implementation():
    """7,638,657 parameters: the count of the reference implementation of Song & Ermon (2019)
    (ermongroup/ncsn, CondRefineNetDilated with ngf = 64, 10 levels, 1 channel), obtained by
    building that network."""
    net = CondRefineNetDilated(channels=1, ngf=64, n_levels=10)
    assert sum(p.numel() for p in net.parameters()) == 7_638_657


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3)])
def test_output_has_the_shape_of_the_input(size, channels):
    torch.manual_seed(0)
    net = CondRefineNetDilated(channels=channels, ngf=8, n_levels=4, image_size=size)
    x = torch.rand(2, channels, size, size)
    out = net(x, torch.tensor([0, 3]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_the_level_changes_the_output_and_samples_are_independent():
    torch.manual_seed(1)
    net = CondRefineNetDilated(ngf=8, n_levels=4)
    with torch.no_grad():
        net.norm.embed.weight[1] += 0.5  # distinct per-level parameters
        x = torch.rand(3, 1, 28, 28)
        a, b = net(x, torch.tensor([0, 0, 0])), net(x, torch.tensor([0, 1, 0]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert not torch.allclose(a[1], b[1])


def test_cond_instance_norm_plus_keeps_channel_means():
    torch.manual_seed(2)
    norm = CondInstanceNormPlus(4, n_levels=2)
    with torch.no_grad():
        gamma, alpha, beta = norm.embed.weight.view(2, 3, 4).unbind(1)
        gamma.fill_(1), beta.zero_()
        alpha[0].zero_(), alpha[1].fill_(1)
    x = torch.randn(2, 4, 5, 5) + torch.tensor([0.0, 1.0, 2.0, 3.0])[:, None, None]
    plain, plus = norm(x, torch.tensor([0, 0])), norm(x, torch.tensor([1, 1]))
    assert plain.mean(dim=(2, 3)).abs().max() < 1e-5  # instance norm alone erases the means
    kept = plus.mean(dim=(2, 3))
    assert (kept.diff(dim=1) > 0).all()  # the alpha term restores their order across channels


def test_odd_image_size_is_rejected():
    with pytest.raises(ValueError, match="image_size"):
        CondRefineNetDilated(image_size=27)


def test_level_conditioned_adapter_maps_sigma_to_its_level():
    from companion.nets import LevelConditioned

    seen = []

    def net(x, level):
        seen.append(level)
        return x

    sigmas = torch.tensor([1.0, 0.3, 0.1, 0.03, 0.01])
    score = LevelConditioned(net, sigmas)
    score(torch.zeros(5, 1), sigmas.flip(0))
    score(torch.zeros(2, 1), 0.1)
    assert seen[0].tolist() == [4, 3, 2, 1, 0] and seen[1].tolist() == [2, 2]
