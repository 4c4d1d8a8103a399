"""SGMA: Semantic-Guided Modality-Aware segmentation (Wen, Liao, Xiao, Wang, arXiv 2603.02505).

The method under study, with its ablation rows as registered variants:

- ``sgma``: Semantic-Guided Fusion (SGF) + Modality-Aware Sampling (MAS);
- ``sgma-sgf``: SGF only (no MAS branch);
- ``sgma-mas``: plain masked-mean fusion + MAS, the robustness that drives MAS coming from the
  same SGF scoring (run beside the plain fusion, see :class:`SGMASamplingOnly`);
- ``muss`` (``baselines/muss.py``) is the "neither" row.

SGF at each encoder scale ``i`` (``features: float[B, M, C_i, h, w]``, ``available: bool[B, M]``):

1. MP, one per modality: three parallel depthwise-separable convs (11x11, 7x7, 3x3), summed,
   then a 1x1 conv -> ``f_m`` in a shared semantic space of ``C_i`` channels.
2. CSF, one 1x1 conv shared by all modalities: ``C_i -> K`` class responses ``c_m``.
3. Global prototypes per image and class: ``p_k = sum_{m,x} softmax_{m,x}(c_{m,k}) f_m(x)``,
   the softmax running over every pixel ``x`` of every AVAILABLE modality ``m``.
4. SP: multi-head attention, queries = the K prototypes, keys/values = the M modality features
   at each pixel; the K outputs are averaged -> semantic reference ``f_se: float[B, C_i, h, w]``.
5. RP: multi-head attention, query = ``f_se``, keys/values = the M modality features at each
   pixel -> fused feature ``f_SGF``; its attention weights (softmax over modalities, averaged
   over heads) are the robustness maps ``r: float[B, M, h, w]``.

Missing modalities are removed by the mask everywhere (their logits are ``-inf`` before every
softmax, pooling included, so they get weight exactly 0), so their robustness is exactly 0 and
their (finite) features never reach an output; the encoder never reads a missing input at all.
Steps 1 and the keys/values of 4-5 depend on one modality each (:meth:`SemanticGuidedFusion.tokens`,
the method's ``encode``); the rest (:meth:`SemanticGuidedFusion.fuse`) runs per subset.

MAS (training only) turns the robustness into a sampling distribution over each sample's
available modalities (:func:`mas_probabilities`), draws ONE
modality per sample and reruns SGF's cross-modal part + decoder on it alone (the ``encode``
output is reused: encoder features, MP outputs, keys and values depend on one modality each,
so they are the same). Loss:
``lambda_sgf * CE(S_SGF) + lambda_mas * CE(S_MAS)``; inference uses the SGF branch only.

What it sees under each training protocol (docs/protocol.md): SGF fuses the modalities the
protocol hands it, and MAS draws its single modality among them (seeded by the trainer through
torch's global generator). Under ``complete``, the paper's protocol, MAS is the only source of
missing modalities; under ``uniform`` it draws within an already random subset.

Every choice the paper leaves open is listed in ``docs/sgma.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.methods.base import SegmentationMethod, check_param, input_size, masked_mean, restrict_features
from benchmark.methods.registry import register_method

MP_KERNELS = (11, 7, 3)
ROBUSTNESS_FLOOR = 1e-6  # r is clamped to this before inversion in MAS


class ModalityProjector(nn.Module):
    """MP of one modality, ``float[N, C, h, w]`` -> same shape: parallel ``k x k`` depthwise convs
    (``k`` in ``MP_KERNELS``), summed, then a 1x1 conv (together: a multi-kernel depthwise-separable conv).

    With ``branch_pointwise`` every depthwise conv gets its own 1x1 pointwise conv before the sum
    (each branch a full depthwise-separable conv); docs/sgma.md explains the default.
    :class:`SemanticGuidedFusion` runs the MPs of all modalities at once as grouped convs
    (:func:`grouped_projection`); ``forward`` is the same map for one modality, written plainly.
    """

    def __init__(self, channels: int, branch_pointwise: bool = False) -> None:
        super().__init__()
        self.depthwise = nn.ModuleList(
            nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels) for k in MP_KERNELS
        )
        self.pointwise = (
            nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in MP_KERNELS) if branch_pointwise else None
        )
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [conv(x) for conv in self.depthwise]
        if self.pointwise is not None:
            branches = [conv(b) for conv, b in zip(self.pointwise, branches)]
        return self.project(sum(branches))


def _stacked_conv(x: torch.Tensor, convs: Sequence[nn.Conv2d], groups: int) -> torch.Tensor:
    """Apply ``convs[g]`` to channel group ``g`` of ``x`` in one grouped conv call (zero padding ``k // 2``).

    Kernel taps that can only ever meet padding (beyond ``2h - 1`` x ``2w - 1`` on a small map)
    are cropped away, which leaves the output and every gradient unchanged but spares CPU time
    on the coarse scales (an 11x11 kernel on a 2x2 map).
    """
    weight = torch.cat([c.weight for c in convs])
    bias = torch.cat([c.bias for c in convs])
    kh, kw = weight.shape[-2:]
    h, w = x.shape[-2:]
    ch, cw = min(kh, 2 * h - 1), min(kw, 2 * w - 1)
    weight = weight[..., (kh - ch) // 2 : (kh - ch) // 2 + ch, (kw - cw) // 2 : (kw - cw) // 2 + cw]
    return F.conv2d(x, weight, bias, padding=(ch // 2, cw // 2), groups=groups)


def grouped_projection(projectors: Sequence[ModalityProjector], features: torch.Tensor) -> torch.Tensor:
    """``projectors[m]`` applied to ``features[:, m]`` for all ``m``: ``float[B, M, C, h, w]`` -> same shape.

    Equal to stacking ``projectors[m](features[:, m])``, with one grouped conv call per layer
    instead of one per layer and modality; the depthwise convs run channels-last (several times
    faster on CPU).
    """
    b, m, c, h, w = features.shape
    x = features.reshape(b, m * c, h, w).contiguous(memory_format=torch.channels_last)
    total = 0
    for k in range(len(MP_KERNELS)):
        y = _stacked_conv(x, [p.depthwise[k] for p in projectors], groups=m * c)
        if projectors[0].pointwise is not None:
            y = _stacked_conv(y, [p.pointwise[k] for p in projectors], groups=m)
        total = total + y
    projected = _stacked_conv(total, [p.project for p in projectors], groups=m)
    return projected.contiguous().view(b, m, c, h, w)


def _heads(x: torch.Tensor, heads: int, dim: int) -> torch.Tensor:
    """Split channel axis ``dim`` of size ``C`` into ``(heads, C // heads)``."""
    return x.unflatten(dim, (heads, x.shape[dim] // heads))


def masked_modality_softmax(logits: torch.Tensor, available: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over the modality axis ``dim`` of ``logits`` with missing modalities at exactly 0.

    ``available: bool[B, M]`` is broadcast to ``logits`` (batch first, modality axis ``dim``).
    Every sample must have at least one available modality.
    """
    shape = [1] * logits.dim()
    shape[0], shape[dim] = available.shape
    mask = available.view(shape)
    return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=dim)


def channel_norm(norm: nn.LayerNorm | None, x: torch.Tensor, dim: int) -> torch.Tensor:
    """LayerNorm ``norm`` over the channel axis ``dim`` of ``x`` (per pixel, as in a transformer
    block); ``x`` itself when ``norm`` is None."""
    return x if norm is None else norm(x.movedim(dim, -1)).movedim(-1, dim)


class SemanticGuidedFusion(nn.Module):
    """SGF at one scale: ``(float[B, M, C, h, w], bool[B, M]) -> (fused float[B, C, h, w], r float[B, M, h, w])``.

    Args:
        modalities: modality names in the data set's order (one MP each).
        channels: ``C`` of this scale.
        num_classes: ``K`` (CSF output channels, number of prototypes).
        head_dim: channels per attention head; ``heads = max(1, C // head_dim)`` (must divide C).
        branch_pointwise: give each MP branch its own pointwise conv (see :class:`ModalityProjector`).
        residual: pre-norm residual blocks: LayerNorm on the queries (prototypes, ``f_se``) and on the
            keys' and values' input, and a residual stream that starts at the masked mean of the MP
            features, ``f_se = mean_m f_m + SP(...)``, ``f_SGF = f_se + RP(...)``. False: ``f_SGF`` is
            the RP output projection alone (the reading of the first release).
        zero_init: zero the SP and RP output projections, so SGF starts as its residual stream
            (needs ``residual``).
        prototype_temperature: ``T`` of the prototype pooling softmax, ``softmax(c / T)`` (1: plain).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        channels: int,
        num_classes: int,
        head_dim: int = 64,
        branch_pointwise: bool = False,
        *,
        residual: bool = True,
        zero_init: bool = True,
        prototype_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if zero_init and not residual:
            raise ValueError("SGF: zero_init needs residual (zero output projections without a residual fuse to 0)")
        if not prototype_temperature > 0:
            raise ValueError(f"SGF: prototype_temperature {prototype_temperature!r} must be > 0")
        self.modalities = list(modalities)
        self.heads = max(1, channels // head_dim)
        if channels % self.heads:
            raise ValueError(f"SGF: {channels} channels do not split into {self.heads} heads of {head_dim}")
        self.scale = 1.0 / math.sqrt(channels // self.heads)
        self.residual, self.temperature = residual, float(prototype_temperature)
        self.projectors = nn.ModuleDict({m: ModalityProjector(channels, branch_pointwise) for m in self.modalities})
        self.semantic_filter = nn.Conv2d(channels, num_classes, 1)
        # The keys and values of both perceptrons come from the projected modality features:
        # one 1x1 conv computes all four (SP key, SP value, RP key, RP value), C channels each.
        self.key_value = nn.Conv2d(channels, 4 * channels, 1)
        self.sp_query = nn.Linear(channels, channels)  # Spatial Perceptron: prototypes -> queries
        self.sp_out = nn.Conv2d(channels, channels, 1)
        self.rp_query = nn.Conv2d(channels, channels, 1)  # Robustness Perceptron: f_se -> queries
        self.rp_out = nn.Conv2d(channels, channels, 1)
        # pre-norms of the keys' and values' input, the SP queries (prototypes) and the RP queries (f_se)
        norms = [nn.LayerNorm(channels) for _ in range(3)] if residual else [None] * 3
        self.token_norm, self.sp_norm, self.rp_norm = norms
        if zero_init:
            for out in (self.sp_out, self.rp_out):
                nn.init.zeros_(out.weight)
                nn.init.zeros_(out.bias)

    def project(self, features: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """MP per modality: ``float[B, M, C, h, w]`` -> same shape, missing pairs exactly 0."""
        projected = grouped_projection([self.projectors[m] for m in self.modalities], features)
        return torch.where(available.view(*available.shape, 1, 1, 1), projected, 0.0)

    def class_responses(self, semantic: torch.Tensor) -> torch.Tensor:
        """CSF per modality: ``float[B, M, C, h, w]`` -> class responses ``c: float[B, M, K, h, w]``."""
        b, m, _, h, w = semantic.shape
        return self.semantic_filter(semantic.flatten(0, 1)).view(b, m, -1, h, w)

    def pooling_weights(self, responses: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """Prototype pooling weights ``float[B, K, M*h*w]``: per image and class, ``softmax(c / T)``
        over every pixel of every available modality (a missing modality's weight is exactly 0)."""
        b, m = responses.shape[:2]
        logits = (responses / self.temperature).masked_fill(~available.view(b, m, 1, 1, 1), float("-inf"))
        return torch.softmax(logits.permute(0, 2, 1, 3, 4).flatten(2), dim=-1)

    def prototypes(
        self, semantic: torch.Tensor, available: torch.Tensor, responses: torch.Tensor | None = None
    ) -> torch.Tensor:
        """CSF + response-weighted pooling over all pixels of all available modalities -> ``float[B, K, C]``."""
        b, m, c, h, w = semantic.shape
        weights = self.pooling_weights(self.class_responses(semantic) if responses is None else responses, available)
        return torch.einsum("bkn,bnc->bkc", weights, semantic.permute(0, 1, 3, 4, 2).reshape(b, m * h * w, c))

    def _aggregate(self, weights: torch.Tensor, values: torch.Tensor, out: nn.Conv2d) -> torch.Tensor:
        """``sum_m weights[b, H, m] * values[b, m, H]`` then the output projection -> ``float[B, C, h, w]``."""
        mixed = torch.einsum("bgmxy,bmgdxy->bgdxy", weights, values)
        return out(mixed.flatten(1, 2))

    def tokens(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-modality part of SGF: ``float[B, M, C, h, w]`` -> (MP output ``semantic: float[B, M, C, h, w]``,
        the keys and values of SP and RP ``float[B, M, 4C, h, w]``); entry ``[b, m]`` depends on ``features[b, m]``
        only, so the subsets of one batch share them (nothing is masked here)."""
        semantic = grouped_projection([self.projectors[m] for m in self.modalities], features)
        b, m = semantic.shape[:2]
        normed = channel_norm(self.token_norm, semantic.flatten(0, 1), dim=1)
        return semantic, self.key_value(normed).unflatten(0, (b, m))

    def forward(self, features: torch.Tensor, available: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SGF on its own (the method runs :meth:`tokens` in ``encode`` and :meth:`fuse` per subset); the
        missing pairs' tokens are zeroed here, so even a NaN there cannot reach an output."""
        fused, robustness, _ = self.fuse(*restrict_features(self.tokens(features), available), available)
        return fused, robustness

    def fuse(
        self, semantic: torch.Tensor, keys_values: torch.Tensor, available: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The cross-modal part of SGF on :meth:`tokens`' output: prototypes, SP, RP -> (fused, robustness,
        class responses ``float[B, M, K, h, w]``, exactly 0 for a missing pair). A missing pair gets weight
        exactly 0 everywhere; its (finite) tokens do not matter."""
        responses = self.class_responses(semantic)
        prototypes = self.prototypes(semantic, available, responses)  # [B, K, C]
        sp_key, sp_value, rp_key, rp_value = (_heads(t, self.heads, 2) for t in keys_values.chunk(4, dim=2))
        stream = masked_mean(semantic, available) if self.residual else 0.0  # the residual stream

        # SP. Averaging the K attention outputs equals aggregating the values with the
        # class-averaged attention weights (the output projection is linear), which avoids
        # materialising a [B, K, C, h, w] tensor.
        query = _heads(self.sp_query(channel_norm(self.sp_norm, prototypes, dim=-1)), self.heads, 2)  # [B, K, H, d]
        logits = torch.einsum("bkgd,bmgdxy->bgkmxy", query, sp_key) * self.scale
        weights = masked_modality_softmax(logits, available, dim=3)  # [B, H, K, M, h, w]
        reference = stream + self._aggregate(weights.mean(dim=2), sp_value, self.sp_out)

        # RP: one query per pixel over the M modality tokens; weights = robustness.
        query = _heads(self.rp_query(channel_norm(self.rp_norm, reference, dim=1)), self.heads, 1)  # [B, H, d, h, w]
        logits = torch.einsum("bgdxy,bmgdxy->bmgxy", query, rp_key) * self.scale
        weights = masked_modality_softmax(logits, available, dim=1).transpose(1, 2)  # [B, H, M, h, w]
        fused = (reference if self.residual else 0.0) + self._aggregate(weights, rp_value, self.rp_out)
        present = available.view(*available.shape, 1, 1, 1)
        return fused, weights.mean(dim=1), torch.where(present, responses, 0.0)


def mas_probabilities(robustness: Sequence[torch.Tensor], available: torch.Tensor) -> torch.Tensor:
    """MAS sampling distribution ``float[B, M]`` from robustness maps ``[float[B, M, h_i, w_i]]``.

    Per scale and pixel, the inverse robustness of the available modalities is normalised to sum
    to 1 (``r_hat_m = (1 / r_m) / sum_m' (1 / r_m')``, ``r`` clamped at ``ROBUSTNESS_FLOOR``);
    it is averaged over the pixels of each scale, then over the scales. Missing modalities get
    exactly 0. No gradient flows through it.
    """
    mask = available.view(*available.shape, 1, 1)
    per_scale = []
    for r in robustness:
        inverse = torch.where(mask, 1.0 / r.detach().float().clamp_min(ROBUSTNESS_FLOOR), 0.0)
        per_scale.append((inverse / inverse.sum(dim=1, keepdim=True)).mean(dim=(2, 3)))
    return torch.stack(per_scale).mean(dim=0)


class _SGMABase(SegmentationMethod):
    """Shared encoder -> SGF (or plain fusion) per scale -> all-MLP decoder, with optional MAS.

    Extra args (params.yaml ``method_params.<name>``; docs/sgma.md gives the reasons and the ablation):
        lambda_sgf: weight of the fused branch's CE (paper: 2).
        lambda_mas: weight of the MAS branch's CE (paper: 1).
        head_dim: channels per attention head in SP and RP.
        branch_pointwise: a 1x1 conv after each MP depthwise branch (default: one after the sum).
        residual: pre-norm residual SP and RP blocks (see :class:`SemanticGuidedFusion`; default true).
        zero_init: zero-initialised SP and RP output projections (default true; needs ``residual``).
        lambda_csf: weight of an auxiliary CE on CSF's class responses (OCRNet's soft-region
            supervision; default 0: the paper's loss has the two CE terms only).
        prototype_temperature: ``T`` of the prototype pooling softmax (default 1).
    ``residual: false, zero_init: false`` is the first release's reading (its numbers).
    """

    family = "sgma"
    use_mas = True  # add the MAS branch in training
    parameter_groups = {  # components of python -m benchmark.diagnose (fnmatch patterns of parameter names)
        "encoder": ("encoder.*",),
        "MP": ("sgf.*.projectors.*",),
        "CSF": ("sgf.*.semantic_filter.*",),
        "keys/values": ("sgf.*.key_value.*", "sgf.*.token_norm.*"),
        "SP query": ("sgf.*.sp_query.*", "sgf.*.sp_norm.*"),
        "SP out": ("sgf.*.sp_out.*",),
        "RP query": ("sgf.*.rp_query.*", "sgf.*.rp_norm.*"),
        "RP out": ("sgf.*.rp_out.*",),
        "scorer heads": ("score_heads.*",),
        "decoder": ("decoder.*",),
    }

    def __init__(
        self,
        modalities: Mapping[str, int],
        num_classes: int,
        *,
        lambda_sgf: float = 2.0,
        lambda_mas: float = 1.0,
        head_dim: int = 64,
        branch_pointwise: bool = False,
        residual: bool = True,
        zero_init: bool = True,
        lambda_csf: float = 0.0,
        prototype_temperature: float = 1.0,
        **common,
    ) -> None:
        check_param("zero_init", zero_init, residual or not zero_init, "false when residual is false")
        check_param("lambda_csf", lambda_csf, lambda_csf >= 0, ">= 0")
        check_param("prototype_temperature", prototype_temperature, prototype_temperature > 0, "> 0")
        super().__init__(modalities, num_classes, **common)
        self.lambda_sgf, self.lambda_mas = float(lambda_sgf), float(lambda_mas)
        self.lambda_csf = float(lambda_csf)
        options = {"residual": residual, "zero_init": zero_init, "prototype_temperature": prototype_temperature}
        self.sgf = nn.ModuleList(
            SemanticGuidedFusion(self.modalities, c, num_classes, head_dim, branch_pointwise, **options)
            for c in self.encoder.channels
        )

    def sgf_tokens(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """SGF's per-modality part at every scale (:meth:`SemanticGuidedFusion.tokens`): the 4 MP outputs, then
        the 4 key/value tensors, each ``float[B, M, ...]`` (missing pairs are masked out in :meth:`fuse`)."""
        semantic, keys_values = zip(*(sgf.tokens(f) for sgf, f in zip(self.sgf, features)))
        return [*semantic, *keys_values]

    def encode(self, inputs: Mapping[str, torch.Tensor], available: torch.Tensor) -> list[torch.Tensor]:
        """Encoder, then SGF's per-modality part (MP, keys, values): see :meth:`sgf_tokens`."""
        return self.sgf_tokens(self.encoder(inputs, available))

    def fuse(
        self, tokens: Sequence[torch.Tensor], available: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """SGF's cross-modal part per scale on :meth:`sgf_tokens`' output: fused ``float[B, C_i, h, w]``,
        robustness ``float[B, M, h, w]`` and class responses ``float[B, M, K, h, w]``."""
        scales = len(self.sgf)
        parts = [sgf.fuse(s, kv, available) for sgf, s, kv in zip(self.sgf, tokens[:scales], tokens[scales:])]
        fused, robustness, responses = (list(p) for p in zip(*parts))
        return fused, robustness, responses

    def decode(
        self, tokens: Sequence[torch.Tensor], available: torch.Tensor, size: tuple[int, int]
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """SGF + decoder on :meth:`encode`'s output -> ``{"logits", "robustness", "class_responses"}``."""
        fused, robustness, responses = self.fuse(tokens, available)
        return {"logits": self.decoder(fused, size), "robustness": robustness, "class_responses": responses}

    def loss(self, output: Mapping, target: torch.Tensor, available: torch.Tensor) -> tuple[torch.Tensor, dict]:
        ce = self.cross_entropy(output["logits"], target)
        total, parts = self.lambda_sgf * ce, {"ce_sgf": float(ce.detach())}
        if self.lambda_csf:
            ce_csf = self.class_response_loss(output["class_responses"], target, available)
            total, parts["ce_csf"] = total + self.lambda_csf * ce_csf, float(ce_csf.detach())
        return total, parts

    def class_response_loss(
        self, responses: Sequence[torch.Tensor], target: torch.Tensor, available: torch.Tensor
    ) -> torch.Tensor:
        """Auxiliary CE of CSF's class responses (``[float[B, M, K, h_i, w_i]]``, upsampled to the target
        ``int64[B, H, W]``), over every available (sample, modality) pair, averaged over the scales."""
        rows, modality = available.nonzero(as_tuple=True)
        size = target.shape[-2:]
        return torch.stack(
            [
                self.cross_entropy(
                    F.interpolate(r[rows, modality], size=size, mode="bilinear", align_corners=False), target[rows]
                )
                for r in responses
            ]
        ).mean()

    def training_step(
        self, inputs: Mapping[str, torch.Tensor], target: torch.Tensor, available: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        size = input_size(inputs)
        features = self.encode(inputs, available)
        output = self.decode(features, available, size)
        total, parts = self.loss(output, target, available)
        if self.use_mas:
            probabilities = self.sampling_probabilities(output, available)
            chosen = torch.multinomial(probabilities, 1).squeeze(1)  # global RNG: seeded, checkpointed
            single = F.one_hot(chosen, len(self.modalities)).bool()
            ce_mas = self.cross_entropy(self.decode_single(features, single, size), target)
            total = total + self.lambda_mas * ce_mas
            parts["ce_mas"] = float(ce_mas.detach())
        return total, parts

    def sampling_probabilities(self, output: Mapping, available: torch.Tensor) -> torch.Tensor | None:
        """MAS's distribution ``float[B, M]`` over each sample's available modalities (None without MAS)."""
        return mas_probabilities(output["robustness"], available) if self.use_mas else None

    def decode_single(
        self, features: Sequence[torch.Tensor], single: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        """Logits of the MAS branch: fusion + decoder on one modality per sample (``single: bool[B, M]``),
        from the same :meth:`encode` output as the fused branch."""
        return self.decode(features, single, size)["logits"]


@register_method("sgma")
class SGMA(_SGMABase):
    """SGMA: SGF fusion + MAS branch (loss ``2 CE(S_SGF) + 1 CE(S_MAS)`` by default)."""


@register_method("sgma-sgf")
class SGMAFusionOnly(_SGMABase):
    """Ablation: SGF fusion only, no MAS branch (loss ``lambda_sgf * CE(S_SGF)``)."""

    use_mas = False


@register_method("sgma-mas")
class SGMASamplingOnly(_SGMABase):
    """Ablation: plain masked-mean fusion + MAS, robustness from an SGF scorer beside the fusion.

    The prediction path is MuSS's (masked mean per scale -> decoder). The SGF modules run on
    DETACHED encoder features only to score modalities: their fused output goes through a
    per-scale 1x1 classifier trained by its own CE (weight ``lambda_score``), which trains the
    scorer without letting it shape the encoder or the fusion. Loss:
    ``lambda_sgf * CE(plain) + lambda_score * mean_i CE(scorer_i) + lambda_mas * CE(MAS, plain fusion)``.
    """

    def __init__(self, modalities: Mapping[str, int], num_classes: int, *, lambda_score: float = 1.0, **kwargs) -> None:
        super().__init__(modalities, num_classes, **kwargs)
        self.lambda_score = float(lambda_score)
        self.score_heads = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in self.encoder.channels)

    def encode(self, inputs: Mapping[str, torch.Tensor], available: torch.Tensor) -> list[torch.Tensor]:
        """The 4 encoder scales, then the scorer's SGF tokens of the DETACHED features (:meth:`sgf_tokens`)."""
        features = self.encoder(inputs, available)
        return [*features, *self.sgf_tokens([f.detach() for f in features])]

    def decode(
        self, encoded: Sequence[torch.Tensor], available: torch.Tensor, size: tuple[int, int]
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """``{"logits"`` (plain fusion), ``"robustness"``, ``"class_responses"``, ``"scored"`` (the scorer's
        fused features)``}``."""
        features, tokens = encoded[: len(self.sgf)], encoded[len(self.sgf) :]
        scored, robustness, responses = self.fuse(tokens, available)
        fused = [masked_mean(f, available) for f in features]
        return {
            "logits": self.decoder(fused, size),
            "robustness": robustness,
            "class_responses": responses,
            "scored": scored,
        }

    def decode_single(
        self, encoded: Sequence[torch.Tensor], single: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        return self.decoder([masked_mean(f, single) for f in encoded[: len(self.sgf)]], size)

    def score_loss(self, scored: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Mean over scales of the CE of each scale's 1x1 scorer head, upsampled to the target."""
        size = target.shape[-2:]
        return torch.stack(
            [
                self.cross_entropy(F.interpolate(head(x), size=size, mode="bilinear", align_corners=False), target)
                for head, x in zip(self.score_heads, scored)
            ]
        ).mean()

    def loss(self, output: Mapping, target: torch.Tensor, available: torch.Tensor) -> tuple[torch.Tensor, dict]:
        total, parts = super().loss(output, target, available)
        ce_score = self.score_loss(output["scored"], target)
        parts["ce_score"] = float(ce_score.detach())
        return total + self.lambda_score * ce_score, parts
