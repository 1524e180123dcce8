"""Frame-level backbones: ``(B, C, T) -> (B, out_dim, T')``.

Every entry of ``BACKBONES`` is called as ``BACKBONES.build(name, in_dim=C, channels=None,
dropout=0.0)``; ``channels=None`` picks that backbone's own default width. Each backbone also
registers a ``*_tiny`` variant that unit tests loop over and a 2-core CPU demo trains in minutes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from e2espk.errors import ConfigError
from e2espk.registry import Registry


class Backbone(nn.Module):
    """Base class; subclasses set ``out_dim`` (channels of the output sequence)."""

    out_dim: int


BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone")


def _conv_relu_bn(in_dim: int, out_dim: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    """Conv1d (length-preserving) + ReLU + BatchNorm, the TDNN/ECAPA building block."""
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv1d(in_dim, out_dim, kernel, dilation=dilation, padding=padding),
        nn.ReLU(),
        nn.BatchNorm1d(out_dim),
    )


# ---------------------------------------------------------------------------------------------
# ECAPA-TDNN (Desplanques et al., Interspeech 2020)


class SqueezeExcitation(nn.Module):
    """Channel re-weighting from the utterance mean (ECAPA-TDNN SE block)."""

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, bottleneck),
            nn.ReLU(),
            nn.Linear(bottleneck, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.fc(x.mean(dim=-1)).unsqueeze(-1)


class Res2Conv(nn.Module):
    """Res2Net dilated convolution: ``scale`` channel groups, each seeing the previous one."""

    def __init__(self, channels: int, kernel: int, dilation: int, scale: int) -> None:
        super().__init__()
        if channels % scale:
            raise ConfigError(f"ECAPA channels ({channels}) must be divisible by scale ({scale})")
        self.scale = scale
        width = channels // scale
        self.convs = nn.ModuleList(
            _conv_relu_bn(width, width, kernel, dilation) for _ in range(scale - 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        groups = torch.chunk(x, self.scale, dim=1)
        outputs = [groups[0]]  # the first group passes through unchanged
        previous: Tensor | None = None
        for group, conv in zip(groups[1:], self.convs, strict=True):
            previous = conv(group if previous is None else group + previous)
            outputs.append(previous)
        return torch.cat(outputs, dim=1)


class SERes2Block(nn.Module):
    """1x1 conv, Res2 dilated conv, 1x1 conv, SE, with a residual connection."""

    def __init__(self, channels: int, dilation: int, scale: int, se_bottleneck: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_relu_bn(channels, channels),
            Res2Conv(channels, kernel=3, dilation=dilation, scale=scale),
            _conv_relu_bn(channels, channels),
            SqueezeExcitation(channels, se_bottleneck),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class EcapaTdnn(Backbone):
    """ECAPA-TDNN up to (not including) pooling: ``out_dim = 3 * channels``.

    Conv(k=5) + ReLU + BN, three SE-Res2Blocks (k=3, dilations 2, 3, 4), each fed the sum of all
    earlier outputs as in the paper, then multi-layer feature aggregation: the three block
    outputs concatenated and a 1x1 conv + ReLU to ``3 * channels`` (1536 for C=512).

    Args:
        in_dim: input channels.
        channels: C, width of the blocks (512 or 1024 in the paper).
        scale: Res2Net scale (8 in the paper); must divide ``channels``.
        se_bottleneck: SE bottleneck (128 in the paper).
        dropout: dropout on the output.
    """

    def __init__(
        self,
        in_dim: int,
        channels: int = 512,
        scale: int = 8,
        se_bottleneck: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.out_dim = 3 * channels
        self.stem = _conv_relu_bn(in_dim, channels, kernel=5)
        self.blocks = nn.ModuleList(
            SERes2Block(channels, dilation, scale, se_bottleneck) for dilation in (2, 3, 4)
        )
        self.aggregate = nn.Sequential(nn.Conv1d(3 * channels, self.out_dim, 1), nn.ReLU())
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        total = self.stem(x)
        outputs = []
        for block in self.blocks:
            out = block(total)
            outputs.append(out)
            total = total + out  # the next block sees the sum of everything before it
        return self.dropout(self.aggregate(torch.cat(outputs, dim=1)))


@BACKBONES.register("ecapa_tdnn", "ecapa")
def ecapa_tdnn(in_dim: int, channels: int | None = None, dropout: float = 0.0) -> Backbone:
    """ECAPA-TDNN as in the paper (C=512, scale 8, SE bottleneck 128)."""
    return EcapaTdnn(in_dim, channels or 512, scale=8, se_bottleneck=128, dropout=dropout)


@BACKBONES.register("ecapa_tdnn_tiny")
def ecapa_tdnn_tiny(in_dim: int, channels: int | None = None, dropout: float = 0.0) -> Backbone:
    """ECAPA-TDNN with 16 channels, scale 4, SE bottleneck 8: for tests and CPU demos."""
    return EcapaTdnn(in_dim, channels or 16, scale=4, se_bottleneck=8, dropout=dropout)


# ---------------------------------------------------------------------------------------------
# x-vector TDNN (Snyder et al., ICASSP 2018)


class Tdnn(Backbone):
    """The five frame-level layers of the x-vector network: ``out_dim = 3 * channels``.

    Contexts [t-2, t+2], {t-2, t, t+2}, {t-3, t, t+3}, {t}, {t} (kernels 5, 3 dil. 2, 3 dil. 3,
    1, 1); the last layer widens to ~3x (1536 for C=512; the paper uses 1500). Convolutions are
    zero-padded so short crops (and T=1) keep their length.
    """

    def __init__(self, in_dim: int, channels: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        self.out_dim = 3 * channels
        self.layers = nn.Sequential(
            _conv_relu_bn(in_dim, channels, kernel=5),
            _conv_relu_bn(channels, channels, kernel=3, dilation=2),
            _conv_relu_bn(channels, channels, kernel=3, dilation=3),
            _conv_relu_bn(channels, channels),
            _conv_relu_bn(channels, self.out_dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


@BACKBONES.register("tdnn", "xvector")
def tdnn(in_dim: int, channels: int | None = None, dropout: float = 0.0) -> Backbone:
    """x-vector TDNN with 512 channels."""
    return Tdnn(in_dim, channels or 512, dropout=dropout)


@BACKBONES.register("tdnn_tiny")
def tdnn_tiny(in_dim: int, channels: int | None = None, dropout: float = 0.0) -> Backbone:
    """x-vector TDNN with 16 channels: for tests and CPU demos."""
    return Tdnn(in_dim, channels or 16, dropout=dropout)


# ---------------------------------------------------------------------------------------------
# 2-D ResNet (ResNet-34 layout as used for speaker verification, e.g. wespeaker)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a (projected when needed) residual connection."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(),
            nn.Conv2d(planes, planes, 3, padding=1, bias=False),
            nn.BatchNorm2d(planes),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet(Backbone):
    """2-D ResNet over (channels as frequency, time), flattened back to ``(B, C', T')``.

    Four stages of BasicBlocks with widths w, 2w, 4w, 8w; stages 2-4 halve frequency and time.
    ``out_dim = 8w * ceil(in_dim / 8)`` and ``T' = ceil(T / 8)``.

    Args:
        in_dim: input channels, treated as the frequency axis.
        channels: base width w (32 in ResNet-34 speaker models).
        blocks: BasicBlocks per stage ((3, 4, 6, 3) is ResNet-34).
        dropout: dropout on the output.
    """

    def __init__(
        self,
        in_dim: int,
        channels: int = 32,
        blocks: tuple[int, int, int, int] = (3, 4, 6, 3),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        in_planes, freq = channels, in_dim
        for stage, n_blocks in enumerate(blocks):
            planes, stride = channels * 2**stage, 1 if stage == 0 else 2
            for index in range(n_blocks):
                stages.append(BasicBlock(in_planes, planes, stride if index == 0 else 1))
                in_planes = planes
            freq = (freq - 1) // stride + 1  # 3x3 conv, padding 1
        self.stages = nn.Sequential(*stages)
        self.out_dim = in_planes * freq
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        out = self.stages(self.stem(x.unsqueeze(1)))  # (B, 8w, F', T')
        return self.dropout(out.flatten(1, 2))  # (B, 8w * F', T')


@BACKBONES.register("resnet", "resnet34")
def resnet(in_dim: int, channels: int | None = None, dropout: float = 0.0) -> Backbone:
    """ResNet-34 layout (3, 4, 6, 3) with base width 32."""
    return ResNet(in_dim, channels or 32, blocks=(3, 4, 6, 3), dropout=dropout)


@BACKBONES.register("resnet_tiny")
def resnet_tiny(in_dim: int, channels: int | None = None, dropout: float = 0.0) -> Backbone:
    """One BasicBlock per stage, base width 4: for tests and CPU demos."""
    return ResNet(in_dim, channels or 4, blocks=(1, 1, 1, 1), dropout=dropout)


# ---------------------------------------------------------------------------------------------
# Frame-wise MLP (for pooled PTM, where there is no time axis to convolve over)


class PooledMlp(Backbone):
    """An MLP applied to each frame (1x1 convolutions): ``(B, C, T) -> (B, channels, T)``.

    Meant for pooled PTM (T = 1), where temporal modelling is meaningless, but valid for any T.

    Args:
        in_dim: input channels.
        channels: hidden and output width.
        n_layers: Linear + ReLU + BatchNorm layers.
        dropout: dropout after each layer.
    """

    def __init__(
        self, in_dim: int, channels: int = 512, n_layers: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.out_dim = channels
        layers: list[nn.Module] = []
        for index in range(n_layers):
            layers += [_conv_relu_bn(in_dim if index == 0 else channels, channels)]
            layers += [nn.Dropout(dropout)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


@BACKBONES.register("pooled_mlp", "mlp")
def pooled_mlp(in_dim: int, channels: int | None = None, dropout: float = 0.0) -> Backbone:
    """Two-layer frame-wise MLP, 512 wide."""
    return PooledMlp(in_dim, channels or 512, n_layers=2, dropout=dropout)


@BACKBONES.register("pooled_mlp_tiny")
def pooled_mlp_tiny(in_dim: int, channels: int | None = None, dropout: float = 0.0) -> Backbone:
    """Two-layer frame-wise MLP, 16 wide: for tests and CPU demos."""
    return PooledMlp(in_dim, channels or 16, n_layers=2, dropout=dropout)
