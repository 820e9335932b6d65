"""Network architectures: CMU DeepLens, a CPU-sized pre-activation ResNet, and a convolutional
autoencoder. Every classifier maps (n, bands, H, W) to one logit per image (the sigmoid is applied
by the methods) and accepts any H, W >= 8 (global average pooling).

Build them by name with :func:`build_net` (``NETS`` is the table; a config dict travels with
checkpoints).
"""

from __future__ import annotations

import torch
from torch import nn


def bn_elu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ELU(inplace=True))


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck unit (He et al. 2016) as in CMU DeepLens (Lanusse et al. 2018):
    BN-ELU-conv1x1 (-> mid), BN-ELU-conv3x3 (stride), BN-ELU-conv1x1 (-> out), plus a 1x1
    projection shortcut (with the stride) whenever the shape changes."""

    def __init__(self, c_in: int, mid: int, c_out: int, stride: int = 1):
        super().__init__()
        self.pre = bn_elu(c_in)
        self.conv1 = nn.Conv2d(c_in, mid, 1, bias=False)
        self.conv2 = nn.Sequential(bn_elu(mid), nn.Conv2d(mid, mid, 3, stride, 1, bias=False))
        self.conv3 = nn.Sequential(bn_elu(mid), nn.Conv2d(mid, c_out, 1, bias=False))
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride, bias=False)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x):
        pre = self.pre(x)
        out = self.conv3(self.conv2(self.conv1(pre)))
        return out + (self.shortcut(pre) if self.shortcut is not None else x)


class PreActBasic(nn.Module):
    """Pre-activation basic unit: BN-ELU-conv3x3 (stride), BN-ELU-conv3x3, 1x1 projection."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.pre = bn_elu(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.conv2 = nn.Sequential(bn_elu(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False))
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride, bias=False)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x):
        pre = self.pre(x)
        out = self.conv2(self.conv1(pre))
        return out + (self.shortcut(pre) if self.shortcut is not None else x)


class Head(nn.Module):
    """Final BN-ELU, global average pool, a linear map to ``outputs`` values: the logit (1, shape
    (n,)) or, for regression, (n, outputs)."""

    def __init__(self, channels: int, outputs: int = 1):
        super().__init__()
        self.post = bn_elu(channels)
        self.fc = nn.Linear(channels, outputs)

    def forward(self, x):
        out = self.fc(self.post(x).mean(dim=(-2, -1)))
        return out.squeeze(-1) if out.shape[-1] == 1 else out


DEEPLENS_STAGES = ((16, 32), (32, 64), (64, 128), (128, 256), (256, 512))


class DeepLens(nn.Module):
    """CMU DeepLens (Lanusse et al. 2018, MNRAS 473, 3895): 7x7 conv (32) + BN + ELU, 5 stages x
    3 pre-activation bottleneck units (bottleneck/output widths 16/32 ... 256/512), stride 2 in
    the first unit of stages 2-5, global average pool, one sigmoid output (returned as a logit)."""

    def __init__(self, in_channels: int, units_per_stage: int = 3,
                 stages: tuple[tuple[int, int], ...] = DEEPLENS_STAGES):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 32, 7, 1, 3, bias=False),
                                  nn.BatchNorm2d(32), nn.ELU(inplace=True))
        blocks, c_in = [], 32
        for s, (mid, c_out) in enumerate(stages):
            for u in range(units_per_stage):
                stride = 2 if (s > 0 and u == 0) else 1
                blocks.append(PreActBottleneck(c_in, mid, c_out, stride))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = Head(c_in)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class ResNet(nn.Module):
    """A CPU-sized pre-activation ResNet: 3x3 stride-2 stem (``width`` filters), ``stages`` stages
    of ``depth`` basic units with widths width * 2**s (stride 2 at the start of stages >= 2),
    global average pool, one logit (or ``outputs`` values, e.g. regression means and log
    variances). width=16, depth=1, stages=3: ~0.08 M parameters, a receptive field of 47 input
    pixels. For stamps sampled finer than that was sized for (Euclid VIS's 0.1"/px against
    HSC's 0.168") either of two changes doubles it to 95 pixels: ``stem_pool``, a 3x3 stride-2
    max-pool after the stem (as He et al. 2016's ImageNet ResNets: the same weights, a quarter
    of the arithmetic), or ``stages=4`` (a stage of width * 8 at an eighth of the stem's
    resolution: ~0.31 M parameters, a fifth more arithmetic)."""

    def __init__(self, in_channels: int, width: int = 16, depth: int = 1, stages: int = 3,
                 outputs: int = 1, stem_pool: bool = False):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, 2, 1, bias=False)
        self.pool = nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity()  # no weights either way
        blocks, c_in = [], width
        for s in range(stages):
            c_out = width * 2 ** s
            for u in range(depth):
                blocks.append(PreActBasic(c_in, c_out, 2 if (s > 0 and u == 0) else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = Head(c_in, outputs)

    def forward(self, x):
        return self.head(self.blocks(self.pool(self.stem(x))))


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder (after Cheng et al. 2020): three stride-2 conv + ELU layers, an
    adaptive pool to 4x4 and a linear map to ``latent`` features; the decoder mirrors it with
    transposed convolutions to 32x32 and resamples to the input size, so any H, W works."""

    def __init__(self, in_channels: int, width: int = 16, latent: int = 16):
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, 2, 1), nn.ELU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, 2, 1), nn.ELU(inplace=True),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.ELU(inplace=True),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * 4 * w, latent))
        self.expand = nn.Sequential(nn.Linear(latent, 16 * 4 * w), nn.ELU(inplace=True))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.ELU(inplace=True),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ELU(inplace=True),
            nn.ConvTranspose2d(w, in_channels, 4, 2, 1))
        self.width = w

    def encode(self, x):
        return self.encoder(x)

    def forward(self, x):
        z = self.encode(x)
        out = self.decoder(self.expand(z).view(len(z), 4 * self.width, 4, 4))
        return nn.functional.interpolate(out, size=x.shape[-2:], mode="bilinear",
                                         align_corners=False)


NETS = {"deeplens": DeepLens, "resnet": ResNet, "autoencoder": ConvAutoencoder}


def build_net(arch: str, in_channels: int, **kwargs) -> nn.Module:
    """The network ``arch`` (a key of NETS) for ``in_channels`` bands."""
    if arch not in NETS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(NETS)}")
    net = NETS[arch](in_channels, **kwargs)
    # how to build it again: a saved model rebuilds its networks from this (persistence.py)
    net.build_spec = {"builder": "build_net",
                      "kwargs": {"arch": arch, "in_channels": in_channels, **kwargs}}
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def count_units(net: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in net.modules())
