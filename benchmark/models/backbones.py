"""Backbones by name: a built-in tiny CNN and any timm ``features_only`` model.

Every backbone maps ``float[N, in_channels, H, W]`` to 4 feature maps at strides 4, 8, 16, 32
(``float[N, channels[i], H / stride[i], W / stride[i]]``).
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.errors import UserError, one_line

STRIDES = (4, 8, 16, 32)


def conv_norm_act(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv -> GroupNorm -> ReLU. GroupNorm keeps samples independent (no batch statistics)."""
    groups = 8 if out_ch % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(groups, out_ch),
        nn.ReLU(inplace=True),
    )


class TinyCNN(nn.Module):
    """A small 4-stage CNN for CPU runs and tests (about 0.2 M parameters at the default widths).

    Stage ``i`` halves the resolution (the first stage twice) and applies two 3x3 conv blocks,
    giving strides 4, 8, 16, 32.
    """

    in_channels = 16

    def __init__(self, widths: tuple[int, int, int, int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        stages = []
        prev = self.in_channels
        for i, width in enumerate(widths):
            down = [conv_norm_act(prev, prev, stride=2)] if i == 0 else []
            stages.append(nn.Sequential(*down, conv_norm_act(prev, width, 2), conv_norm_act(width, width)))
            prev = width
        self.stages = nn.ModuleList(stages)
        self.channels = list(widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class WeightsUnavailableError(UserError, OSError):
    """A pretrained backbone's weights cannot be loaded: no network and none in the cache."""


class TimmBackbone(nn.Module):
    """A timm model created with ``features_only=True``, keeping the levels at strides 4..32.

    ``in_channels`` is 3 so ImageNet weights (``pretrained=True``, needs network access or a
    local timm cache) apply unchanged; each modality's stem maps its channels to these 3.
    """

    in_channels = 3

    def __init__(self, name: str, pretrained: bool = False) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as err:  # pragma: no cover - timm is a dependency
            raise ImportError(f"backbone {name!r} needs timm: pip install timm ({err})") from err
        if name not in timm.list_models(pretrained=False):
            raise ValueError(f"unknown backbone {name!r}: 'tiny' or a timm model name (timm.list_models())")
        probe = timm.create_model(name, pretrained=False, features_only=True)
        reductions = probe.feature_info.reduction()
        indices = [reductions.index(s) for s in STRIDES if s in reductions]
        if len(indices) != len(STRIDES):
            raise ValueError(f"backbone {name!r} has feature strides {reductions}, need {list(STRIDES)}")
        del probe
        try:
            self.model = timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=indices)
        except OSError as err:  # no network and not in the cache (huggingface_hub's errors are OSErrors)
            if not pretrained:
                raise
            raise WeightsUnavailableError(
                f"backbone {name!r}: its ImageNet weights (timm, from the Hugging Face Hub) are neither reachable "
                f"nor cached ({one_line(err)}); fetch them once where there is network, into the cache this "
                f"machine reads (HF_HOME): python -c \"import timm; timm.create_model('{name}', pretrained=True)\", "
                "or set train.pretrained: false"
            ) from err
        self.channels = list(self.model.feature_info.channels())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))


def create_backbone(name: str, pretrained: bool = False) -> nn.Module:
    """``"tiny"`` -> :class:`TinyCNN`; anything else -> :class:`TimmBackbone` (e.g. ``resnet50``, ``pvt_v2_b2``)."""
    if name == "tiny":
        if pretrained:
            raise ValueError("backbone 'tiny' has no pretrained weights; set pretrained: false")
        return TinyCNN()
    return TimmBackbone(name, pretrained=pretrained)
