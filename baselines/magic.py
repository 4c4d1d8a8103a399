"""MAGIC: modality-agnostic segmentation by aggregation and arbitrary-modal selection.

Xu Zheng, Yuanhuiyi Lyu, Jiazhou Zhou, Lin Wang, "Centering the Value of Every Modality: Towards
Efficient and Resilient Modality-agnostic Semantic Segmentation", ECCV 2024, arXiv 2407.11344.

Key mechanism: a multi-modal aggregation module (MAM) fuses the features of all available modalities
into one aggregated feature. An arbitrary-modal selection module (ASM) takes that aggregated feature as
the benchmark, ranks the modality features by their cosine similarity to it and splits them into robust
(most similar) and fragile ones; the predictions from the aggregated features and from the selected
features are optimised jointly, so the model does not hinge on any single modality (RGB included).
Our reading: ASM acts during training only; inference decodes the aggregated features of whatever
modalities are available.

Here, per encoder scale ``i`` (``C = C_i``), ``features: float[B, M, C, h, w]``, a set mask
``members: bool[B, M]`` (each row has >= 1 True):

- MAM (:class:`MultiModalAggregation`): ``mean`` = masked mean over the set, ``mx`` = max over the
  set (non-members set to ``-inf`` before the max), ``aggregated = mean + proj(cat[mean, mx])`` with
  ``proj`` = 1x1 conv ``2C -> C`` -> depthwise 3x3 conv -> GELU -> 1x1 conv ``C -> C``.
- ASM (:func:`modality_similarity`, :func:`split_robust_fragile`): per sample and modality, the
  cosine similarity of the flattened modality feature with the flattened aggregated feature
  (over ``C*h*w``), averaged over the 4 scales, without gradient; robust = the top
  ``k = ceil(robust_fraction * n)`` of the ``n`` available modalities (``k >= 1``, ties broken by
  modality order), fragile = the other available ones (possibly none).
- Loss: ``CE(P_agg) + lambda_robust * CE(P_rob) + lambda_fragile * CE(P_frag)`` (the last over the
  samples that have fragile modalities) ``+ lambda_consistency * KL(softmax(P_agg).detach() ||
  softmax(P_rob))`` (pixel mean, temperature 1), where ``P_s = decoder(MAM(features, s))``.

Simplified for the shared setting
---------------------------------
- Encoder: the benchmark's shared per-modality encoder (tiny or timm backbone, run on each modality
  separately) replaces the paper's SegFormer/MiT backbone fed with the modalities as one batch; the
  features are the same kind (one per modality and scale), so MAM and ASM apply unchanged.
- Decoder: the benchmark's shared all-MLP decoder (one for every branch: aggregated, robust, fragile)
  instead of the paper's SegFormer head.
- MAM: a light masked mean + max descriptor with a residual conv projection, written for a variable
  set of modalities (mask, not zero padding, decides who is fused); the paper's MAM (as we read it,
  a heavier module of parallel convolution/pooling/MLP branches over the modality batch) is reduced
  to this to stay within the shared CPU budget and to be defined for any subset.
- ASM selection: the split ratio (``robust_fraction``) and the per-sample rule for arbitrary subsets
  are ours; the similarity is averaged over the 4 scales so that one ranking serves all scales, and
  it is detached (the selection is a discrete choice).
- Losses: the exact weighting and the form of the consistency term (KL from the detached aggregated
  prediction to the robust one) are our choice; all branches share the decoder.
- Training: same budget and optimiser as every method; ASM ranks only the modalities the
  training protocol left available. Under ``complete`` (docs/protocol.md) every sample has all of
  them and the robust and fragile sets are MAGIC's only exposure to incomplete inputs; under
  ``uniform`` they split an already random subset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.methods import SegmentationMethod, check_param, masked_mean, register_method


class MultiModalAggregation(nn.Module):
    """MAM of one scale: ``features float[B, M, C, h, w]``, ``members bool[B, M]`` -> ``float[B, C, h, w]``.

    ``aggregated = mean + proj(cat[mean, mx])`` where ``mean`` / ``mx`` are the mean / max over the member
    modalities only, and ``proj`` = 1x1 conv (2C -> C) -> depthwise 3x3 conv -> GELU -> 1x1 conv (C -> C).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(2 * channels, channels, 1)
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.expand = nn.Conv2d(channels, channels, 1)

    def proj(self, x: torch.Tensor) -> torch.Tensor:
        """``float[B, 2C, h, w]`` -> ``float[B, C, h, w]``."""
        return self.expand(F.gelu(self.depthwise(self.reduce(x))))

    def forward(self, features: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        mean = masked_mean(features, members)
        excluded = ~members.view(*members.shape, 1, 1, 1)
        mx = features.masked_fill(excluded, float("-inf")).amax(dim=1)
        return mean + self.proj(torch.cat([mean, mx], dim=1))


@torch.no_grad()
def modality_similarity(
    features: Sequence[torch.Tensor], aggregated: Sequence[torch.Tensor], available: torch.Tensor
) -> torch.Tensor:
    """ASM ranking score: ``float[B, M]``, no gradient.

    Args:
        features: per scale ``float[B, M, C_i, h_i, w_i]``.
        aggregated: per scale ``float[B, C_i, h_i, w_i]`` (the benchmark).
        available: ``bool[B, M]``.

    Returns:
        Per sample and modality, the cosine similarity (in [-1, 1]) between the modality feature and
        the aggregated feature, each flattened over ``C_i*h_i*w_i``, averaged over the scales;
        ``-inf`` for missing modalities.
    """
    scores = []
    for f, a in zip(features, aggregated):
        b, m = f.shape[:2]
        scores.append(F.cosine_similarity(f.reshape(b, m, -1), a.reshape(b, 1, -1), dim=-1, eps=1e-8))
    similarity = torch.stack(scores).mean(dim=0)
    return similarity.masked_fill(~available, float("-inf"))


def split_robust_fragile(
    similarity: torch.Tensor, available: torch.Tensor, robust_fraction: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split each sample's available modalities by similarity rank.

    Args:
        similarity: ``float[B, M]`` (higher = more robust); values of missing modalities are ignored.
        available: ``bool[B, M]``, each row with >= 1 True.
        robust_fraction: share of a sample's ``n`` available modalities called robust:
            ``k = ceil(robust_fraction * n)``, clamped to ``[1, n]``.

    Returns:
        ``(robust, fragile)``, both ``bool[B, M]``: robust = the top ``k`` available modalities
        (ties broken by modality order), fragile = the remaining available ones (possibly none).
    """
    scores = similarity.masked_fill(~available, float("-inf"))
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    n = available.sum(dim=1, keepdim=True)
    # the 1e-9 keeps a product such as 0.3 * 10 = 3.0000000000000004 from rounding up to 4
    k = torch.minimum(torch.ceil(n.to(torch.float64) * robust_fraction - 1e-9).long().clamp_min(1), n)
    robust = (rank < k) & available
    return robust, available & ~robust


@register_method("magic")
class MAGIC(SegmentationMethod):
    """Shared encoder -> MAM per scale -> decoder; ASM robust/fragile branches during training.

    Args:
        robust_fraction: share of each sample's available modalities selected as robust (default 0.5).
        lambda_robust: weight of the CE of the robust-set prediction (default 1.0).
        lambda_fragile: weight of the CE of the fragile-set prediction (default 0.5).
        lambda_consistency: weight of ``KL(softmax(P_agg).detach() || softmax(P_rob))`` (default 0.5).
    """

    family = "joint"

    def __init__(
        self,
        modalities: Mapping[str, int],
        num_classes: int,
        *,
        robust_fraction: float = 0.5,
        lambda_robust: float = 1.0,
        lambda_fragile: float = 0.5,
        lambda_consistency: float = 0.5,
        **common,
    ) -> None:
        check_param("robust_fraction", robust_fraction, 0.0 < robust_fraction <= 1.0, "in (0, 1]")
        for name, value in (("lambda_robust", lambda_robust), ("lambda_fragile", lambda_fragile),
                            ("lambda_consistency", lambda_consistency)):  # fmt: skip
            check_param(name, value, value >= 0, ">= 0")
        super().__init__(modalities, num_classes, **common)
        self.robust_fraction = robust_fraction
        self.lambda_robust = lambda_robust
        self.lambda_fragile = lambda_fragile
        self.lambda_consistency = lambda_consistency
        self.aggregation = nn.ModuleList(MultiModalAggregation(c) for c in self.encoder.channels)

    def aggregate(self, features: Sequence[torch.Tensor], members: torch.Tensor) -> list[torch.Tensor]:
        """MAM at every scale: 4 ``float[B, M, C_i, h_i, w_i]`` + ``bool[B, M]`` -> 4 ``float[B, C_i, h_i, w_i]``."""
        return [mam(f, members) for mam, f in zip(self.aggregation, features)]

    def decode(
        self, features: Sequence[torch.Tensor], available: torch.Tensor, size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        return {"logits": self.decoder(self.aggregate(features, available), size)}

    def training_step(
        self, inputs: Mapping[str, torch.Tensor], target: torch.Tensor, available: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        features = self.encode(inputs, available)
        size = target.shape[-2:]
        aggregated = self.aggregate(features, available)
        robust, fragile = split_robust_fragile(
            modality_similarity(features, aggregated, available), available, self.robust_fraction
        )
        has_fragile = fragile.any(dim=1)
        # separate decoder passes (measured faster on CPU than one pass over a concatenated batch);
        # the fragile branch runs only on the samples that have fragile modalities
        logits_agg = self.decoder(aggregated, size)
        logits_rob = self.decoder(self.aggregate(features, robust), size)
        ce = self.cross_entropy(logits_agg, target)
        ce_robust = self.cross_entropy(logits_rob, target)
        if bool(has_fragile.any()):
            subset = [f[has_fragile] for f in features]
            logits_frag = self.decoder(self.aggregate(subset, fragile[has_fragile]), size)
            ce_fragile = self.cross_entropy(logits_frag, target[has_fragile])
        else:
            ce_fragile = logits_rob.sum() * 0.0
        consistency = (
            F.kl_div(
                F.log_softmax(logits_rob, dim=1),
                F.log_softmax(logits_agg, dim=1).detach(),
                reduction="none",
                log_target=True,
            )
            .sum(dim=1)
            .mean()
        )
        total = (
            ce
            + self.lambda_robust * ce_robust
            + self.lambda_fragile * ce_fragile
            + self.lambda_consistency * consistency
        )
        parts = {
            "ce": float(ce.detach()),
            "ce_robust": float(ce_robust.detach()),
            "ce_fragile": float(ce_fragile.detach()),
            "consistency": float(consistency.detach()),
        }
        return total, parts
