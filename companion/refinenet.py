"""The image score networks of NCSN (Song & Ermon 2019, Appendix B.1) and NCSNv2 (Song & Ermon
2020): RefineNets (Lin et al. 2017) with dilated convolutions (Yu & Koltun 2016) (Chapter 7, The
network, block by block).

Layout at 28×28 (channels in brackets, ngf = base width)::

    x ↦ 2x − 1 ↦ conv3×3 [ngf]
    res1: 2 residual blocks                      [ngf]     28×28
    res2: 2 blocks, the first halves the size   [2 ngf]   14×14
    res3: 2 dilated blocks (dilation 2)          [2 ngf]   14×14   ("down" blocks keep the size)
    res4: 2 dilated blocks (dilation 4)          [2 ngf]   14×14
    refine1(res4) → refine2(res3, ·) → refine3(res2, ·) [ngf] → refine4(res1, ·) [ngf]
    norm → ELU → conv3×3 [channels]

``CondRefineNetDilated`` (NCSN) conditions every normalisation layer on the noise level through
CondInstanceNorm++, one (γ, α, β) triple per level, so it is called with the index of the level,
``net(x, level)``; ``companion.nets.LevelConditioned`` adapts it to the book's score signature
s(x, σ).

``NCSNv2`` is the same layout with NCSNv2's changes: the network does not see the level at all
(unconditional InstanceNorm++ in the residual blocks and at the end, no normalisation in the
RefineNet blocks, max pooling in chained residual pooling), and its output is divided by σ,
s(x, σ) = net(x)/σ (technique 3). It is called as ``net(x, sigma)`` directly.
"""

import torch
import torch.nn.functional as F
from torch import nn


def _standardised_means(x):
    """The channel means of x, standardised across channels: [batch, channels]."""
    means = x.mean(dim=(2, 3))
    return (means - means.mean(-1, keepdim=True)) / (means.var(-1, keepdim=True) + 1e-5).sqrt()


class CondInstanceNormPlus(nn.Module):
    """CondInstanceNorm++ (Song & Ermon 2019; Chapter 7): instance normalisation (Ulyanov et al. 2016)
    made conditional on the noise level as in conditional instance normalisation (Dumoulin et al.
    2017), and extended so that it keeps the information it removes.

    z = γ[l] ⊙ (IN(x) + α[l] ⊙ μ̃) + β[l], where μ̃ is the vector of channel means standardised
    across channels and l the noise level. Plain instance norm would erase each channel's mean,
    i.e. the colour and brightness of an image; the α term puts it back.

    Args:
        channels: the number of channels C.
        n_levels: the number of noise levels L (one row of (γ, α, β) each).
    """

    def __init__(self, channels, n_levels):
        super().__init__()
        self.channels = channels
        self.embed = nn.Embedding(n_levels, 3 * channels)
        with torch.no_grad():
            self.embed.weight[:, : 2 * channels].normal_(1.0, 0.02)  # γ and α start near 1
            self.embed.weight[:, 2 * channels :].zero_()  # β starts at 0

    def forward(self, x, level):
        """z = γ[l] ⊙ (IN(x) + α[l] ⊙ μ̃) + β[l] for x of shape [batch, C, H, W] and ``level`` a [batch]
        tensor of level indices (Song & Ermon 2019; Chapter 7).
        """
        gamma, alpha, beta = self.embed(level)[..., None, None].chunk(3, dim=1)
        return gamma * (F.instance_norm(x, eps=1e-5) + alpha * _standardised_means(x)[..., None, None]) + beta


class InstanceNormPlus(nn.Module):
    """InstanceNorm++ (Song & Ermon 2020; Chapter 7): z = γ ⊙ (IN(x) + α ⊙ μ̃) + β with one (γ, α, β)
    for all levels. ``level`` is accepted and ignored, so that every block calls its normalisations
    alike.
    """

    def __init__(self, channels):
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(channels).normal_(1.0, 0.02))
        self.alpha = nn.Parameter(torch.empty(channels).normal_(1.0, 0.02))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x, level=None):
        """z = γ ⊙ (IN(x) + α ⊙ μ̃) + β for x of shape [batch, C, H, W]; ``level`` is ignored (Song & Ermon
        2020; Chapter 7).
        """
        gamma, alpha, beta = (p[:, None, None] for p in (self.gamma, self.alpha, self.beta))
        return gamma * (F.instance_norm(x, eps=1e-5) + alpha * _standardised_means(x)[..., None, None]) + beta


class NoNorm(nn.Module):
    """The identity, standing where NCSNv2 removed a normalisation, in its RefineNet blocks (Song &
    Ermon 2020; Chapter 7).
    """

    def forward(self, x, level=None):
        """Return x unchanged; ``level`` is ignored (Song & Ermon 2020; Chapter 7)."""
        return x


def _conv3x3(c_in, c_out, dilation=1, bias=True):
    return nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=bias)


class ConvMeanPool(nn.Module):
    """A convolution followed by 2×2 average pooling, the downsampling of the residual blocks of the
    NCSN reference code (Song & Ermon 2019; Chapter 7).
    """

    def __init__(self, c_in, c_out, kernel_size):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2)

    def forward(self, x):
        """avg_pool2d(conv(x), 2): [batch, c_in, H, W] to [batch, c_out, H/2, W/2] (Song & Ermon 2019;
        Chapter 7).
        """
        return F.avg_pool2d(self.conv(x), 2)


class ResBlock(nn.Module):
    """The residual block of NCSN (Song & Ermon 2019, Appendix B.1; Chapter 7): norm → ELU → conv →
    norm → ELU → conv, plus a shortcut.

    ``down=True`` changes the channel count in the second convolution and, without dilation, halves
    the resolution (mean pooling); with dilation > 1 (Yu & Koltun 2016) the "down" block keeps the
    resolution and widens the receptive field instead. ``norm(c)`` makes a normalisation layer for c
    channels.
    """

    def __init__(self, c_in, c_out, norm, *, down=False, dilation=1):
        super().__init__()
        self.norm1 = norm(c_in)
        mid = c_in if down else c_out
        if down and dilation == 1:
            self.conv1 = _conv3x3(c_in, mid)
            self.conv2 = ConvMeanPool(mid, c_out, 3)
            self.shortcut = ConvMeanPool(c_in, c_out, 1)
        else:
            self.conv1 = _conv3x3(c_in, mid, dilation)
            self.conv2 = _conv3x3(mid, c_out, dilation)
            self.shortcut = _conv3x3(c_in, c_out, dilation) if (down or c_in != c_out) else None
        self.norm2 = norm(mid)
        self.act = nn.ELU()

    def forward(self, x, level):
        """The block's output for x of shape [batch, c_in, H, W] at the noise level ``level`` (passed to the
        normalisations) (Song & Ermon 2019; Chapter 7).
        """
        h = self.conv1(self.act(self.norm1(x, level)))
        h = self.conv2(self.act(self.norm2(h, level)))
        return h + (x if self.shortcut is None else self.shortcut(x))


class RCU(nn.Module):
    """Residual conv units of RefineNet (Lin et al. 2017; Chapter 7): n_blocks × (n_stages × (norm →
    ELU → conv)) with a skip per block.
    """

    def __init__(self, channels, norm, n_blocks, n_stages=2):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleList(nn.ModuleList([norm(channels), _conv3x3(channels, channels, bias=False)]) for _ in range(n_stages))
            for _ in range(n_blocks)
        )
        self.act = nn.ELU()

    def forward(self, x, level):
        """Apply the residual conv units to x at the noise level ``level`` (Lin et al. 2017; Chapter 7)."""
        for block in self.blocks:
            h = x
            for norm, conv in block:
                h = conv(self.act(norm(h, level)))
            x = x + h
        return x


class MSF(nn.Module):
    """Multi-resolution fusion of RefineNet (Lin et al. 2017; Chapter 7): norm → conv each input,
    resize bilinearly to the output size, sum.
    """

    def __init__(self, in_channels, channels, norm):
        super().__init__()
        self.norms = nn.ModuleList(norm(c) for c in in_channels)
        self.convs = nn.ModuleList(_conv3x3(c, channels) for c in in_channels)

    def forward(self, xs, level, size):
        """Fuse the list of feature maps ``xs`` into one map of spatial size ``size`` (Lin et al. 2017;
        Chapter 7).
        """
        out = 0
        for x, norm, conv in zip(xs, self.norms, self.convs):
            out = out + F.interpolate(conv(norm(x, level)), size=size, mode="bilinear", align_corners=True)
        return out


class CRP(nn.Module):
    """Chained residual pooling of RefineNet (Lin et al. 2017; Chapter 7), 5×5 windows with stride 1:
    a chain of norm → pool → conv whose every stage is added to the input. NCSN pools by averaging
    (Song & Ermon 2019), NCSNv2 by the maximum (Song & Ermon 2020).
    """

    def __init__(self, channels, norm, pool, n_stages=2):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max'; got {pool!r}")
        self.pool = F.avg_pool2d if pool == "avg" else F.max_pool2d
        self.norms = nn.ModuleList(norm(channels) for _ in range(n_stages))
        self.convs = nn.ModuleList(_conv3x3(channels, channels, bias=False) for _ in range(n_stages))
        self.act = nn.ELU()

    def forward(self, x, level):
        """ELU, then the chain of pooled stages added to x (Lin et al. 2017; Chapter 7)."""
        x = self.act(x)
        path = x
        for norm, conv in zip(self.norms, self.convs):
            path = conv(self.pool(norm(path, level), 5, stride=1, padding=2))
            x = x + path
        return x


class RefineBlock(nn.Module):
    """RefineNet block (Lin et al. 2017; Chapter 7): RCU on each input → multi-resolution fusion → CRP
    → output RCU (three output units in the last block, ``end=True``).
    """

    def __init__(self, in_channels, channels, norm, pool, *, end=False):
        super().__init__()
        self.adapt = nn.ModuleList(RCU(c, norm, n_blocks=2) for c in in_channels)
        self.msf = MSF(in_channels, channels, norm) if len(in_channels) > 1 else None
        self.crp = CRP(channels, norm, pool)
        self.out = RCU(channels, norm, n_blocks=3 if end else 1)

    def forward(self, xs, level, size):
        """Refine the list of feature maps ``xs`` into one map of spatial size ``size`` at the noise level
        ``level`` (Lin et al. 2017; Chapter 7).
        """
        hs = [adapt(x, level) for adapt, x in zip(self.adapt, xs)]
        h = self.msf(hs, level, size) if self.msf is not None else hs[0]
        return self.out(self.crp(h, level), level)


class _DilatedRefineNet(nn.Module):
    """The layout shared by NCSN and NCSNv2: `norm(c)` makes the normalisations of the residual
    blocks and of the output, `refine_norm(c)` those of the RefineNet blocks."""

    def __init__(self, channels, ngf, image_size, norm, refine_norm, pool):
        super().__init__()
        if image_size % 2:
            raise ValueError(f"image_size must be even (the network halves it once); got {image_size}")
        self.channels, self.ngf, self.image_size = channels, ngf, image_size
        w = 2 * ngf
        self.begin = nn.Conv2d(channels, ngf, 3, padding=1)
        self.res1 = nn.ModuleList([ResBlock(ngf, ngf, norm), ResBlock(ngf, ngf, norm)])
        self.res2 = nn.ModuleList([ResBlock(ngf, w, norm, down=True), ResBlock(w, w, norm)])
        self.res3 = nn.ModuleList([ResBlock(w, w, norm, down=True, dilation=2), ResBlock(w, w, norm, dilation=2)])
        self.res4 = nn.ModuleList([ResBlock(w, w, norm, down=True, dilation=4), ResBlock(w, w, norm, dilation=4)])
        self.refine1 = RefineBlock([w], w, refine_norm, pool)
        self.refine2 = RefineBlock([w, w], w, refine_norm, pool)
        self.refine3 = RefineBlock([w, w], ngf, refine_norm, pool)
        self.refine4 = RefineBlock([ngf, ngf], ngf, refine_norm, pool, end=True)
        self.norm = norm(ngf)
        self.end = nn.Conv2d(ngf, channels, 3, padding=1)
        self.act = nn.ELU()

    def _net(self, x, level):
        h = self.begin(2 * x - 1)
        features = []
        for stage in (self.res1, self.res2, self.res3, self.res4):
            for block in stage:
                h = block(h, level)
            features.append(h)
        l1, l2, l3, l4 = features
        h = self.refine1([l4], level, l4.shape[2:])
        h = self.refine2([l3, h], level, l3.shape[2:])
        h = self.refine3([l2, h], level, l2.shape[2:])
        h = self.refine4([l1, h], level, l1.shape[2:])
        return self.end(self.act(self.norm(h, level)))


class CondRefineNetDilated(_DilatedRefineNet):
    """The NCSN score network s_θ(x, l) for images of shape [channels, size, size] (Song & Ermon 2019,
    Appendix B.1; Chapter 7).

    Inputs are images in [0, 1], mapped to [−1, 1] inside; ``level`` is a [batch] tensor of level
    indices in [0, n_levels).

    Args:
        channels: image channels (1 for MNIST).
        ngf: base width; the MNIST configuration of the paper uses 64.
        n_levels: number of noise levels L (one CondInstanceNorm++ embedding row each).
        image_size: 28 or 32 (any even size works; the layout is the same).
    """

    def __init__(self, channels=1, ngf=64, n_levels=10, image_size=28):
        def norm(c):
            return CondInstanceNormPlus(c, n_levels)

        super().__init__(channels, ngf, image_size, norm, norm, "avg")
        self.n_levels = n_levels

    def forward(self, x, level):
        """s_θ(x, l) for images x of shape [batch, channels, size, size] in [0, 1] and ``level`` a [batch]
        tensor of level indices (Song & Ermon 2019; Chapter 7).
        """
        return self._net(x, level)


class NCSNv2(_DilatedRefineNet):
    """The NCSNv2 score network s_θ(x, σ) = net(x)/σ (Song & Ermon 2020, Section 4 and Appendix B;
    Chapter 7): the NCSN layout without noise conditioning inside the network. The division by σ is
    the only way σ enters, because the score of p_σ has size about √D/σ.

    Args:
        channels: image channels (1 for MNIST).
        ngf: base width.
        image_size: any even size.
    """

    def __init__(self, channels=1, ngf=64, image_size=28):
        super().__init__(channels, ngf, image_size, InstanceNormPlus, lambda c: NoNorm(), "max")

    def forward(self, x, sigma):
        """s_θ(x, σ) = net(x)/σ for images x of shape [batch, channels, size, size] in [0, 1], ``sigma`` a
        number or a [batch] tensor (Song & Ermon 2020, technique 3; Chapter 7).
        """
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self._net(x, None) / sigma.view(-1, *([1] * (x.ndim - 1)))
