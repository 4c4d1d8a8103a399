"""IMLT: incomplete multimodal learning with fusion tokens, masked attention, contrastive and reconstruction losses.

Yuxing Chen, Maofan Zhao, Lorenzo Bruzzone, "A Novel Approach to Incomplete Multimodal Learning for
Remote Sensing Data Fusion", IEEE Transactions on Geoscience and Remote Sensing 62, 2024 (preprint:
"Incomplete Multimodal Learning for Remote Sensing Data Fusion", arXiv 2304.11381).

Key mechanism: a multimodal Transformer whose per-modality tokens are joined by a few learned
**fusion tokens**; self-attention is **masked** so that tokens of missing modalities take no part,
and the fusion tokens (a bottleneck through which the modalities meet) carry the fused signal to the
task head. The network is trained on random modality combinations, with a cross-modal
**contrastive** loss (InfoNCE between different modalities' embeddings of the same location) and a
masked **reconstruction** loss (predict a hidden modality from the others) that shape the fusion
in pre-training.

What this module does, at each of the 4 encoder scales ``i`` (``C = C_i`` channels):

- Fusion (:class:`ModalityFusionBlock`), at every pixel independently: tokens = the ``M`` modality
  features + a learned modality embedding ``float[M, C]``, and ``F`` learned fusion tokens
  ``float[F, C]``. One pre-norm Transformer block: ``x = q + MHA(LN(q), LN(kv), LN(kv))``,
  ``x = x + MLP(LN(x))`` (MLP ratio 2, GELU), keys/values = [modality tokens, fusion tokens] with
  missing modalities masked out of the keys. Only the fusion tokens' outputs are read, so only they
  are computed as queries: with one block this equals full self-attention over the ``M + F``
  tokens with the modality tokens' outputs discarded. ``fused = mean of the F fusion outputs``
  -> ``float[B, C, h, w]`` -> the shared decoder.
- Masked reconstruction (training only): each sample with >= 2 available modalities hides one of
  them, drawn uniformly (:func:`choose_hidden`). The block runs again with the hidden modality also
  masked out of the keys and ONE query per pixel, a learned mask token + the hidden modality's
  embedding; a per-scale ``Linear(C, C)`` maps its output to the predicted feature. Target: the
  hidden modality's real encoder feature, detached and layer-normalised over ``C`` without affine
  (MAE's normalised targets). Loss: MSE over the hidden (sample, pixel) positions and channels,
  averaged over the 4 scales.
- Cross-modal contrastive loss (training only), at scale ``contrastive_scale`` (default 2, stride
  16, like the paper's 16-pixel ViT patches): a shared projector ``Linear -> GELU -> Linear`` maps
  each available modality's feature at each location to an L2-normalised embedding; for each pair
  of modalities, the locations where both are available (at most ``max_tokens``, drawn at random)
  form a symmetric InfoNCE (:func:`info_nce`): a location's other modality is its positive, every
  other location in the batch (same image or another) a negative.

Loss: ``CE + lambda_contrastive * contrastive + lambda_reconstruction * reconstruction``; the
encoder runs once per step and its features feed all three terms. Inference uses the fusion pass only.

Simplified for the shared setting:

- Encoder: the shared per-modality CNN encoder (4 scales) replaces the paper's ViT with
  modality-specific patch tokenizers; the fusion Transformer becomes one fusion block per scale on
  the encoder's feature maps, and the shared all-MLP decoder replaces the paper's task heads.
- Attention across modalities at each pixel, not across all locations: the encoder already gives
  spatial context, and global attention over ``M * h * w`` tokens at stride 4 would cost time
  quadratic in the number of pixels on a 2-core CPU. The paper's modality-attention step that
  pools the fusion tokens becomes a plain mean of the ``F`` fusion outputs.
- One block per scale (the paper stacks several Transformer layers).
- The contrastive and reconstruction objectives are pre-training losses in the paper (on ViT
  patch tokens, reconstruction in pixel/patch space); here they are auxiliary losses trained
  jointly with the CE, under the same training budget as every method, and they act on encoder
  features (reconstruction predicts the hidden modality's normalised encoder feature, not its pixels).

What it sees under each training protocol (docs/protocol.md): the protocol hands it ``available``;
the encoder, the contrastive loss and the reconstruction (its own hidden modality) use all of it,
and the supervised fusion pass runs on a random non-empty combination of it that IMLT draws itself
per sample (:func:`benchmark.protocol.random_combination`, uniform over the non-empty subsets;
``random_combinations: false`` turns this off). Under ``complete`` that combination is the only
source of missing modalities in the CE; under ``uniform`` it thins an already random subset.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.methods import SegmentationMethod, check_param, input_size, register_method
from benchmark.protocol import random_combination


def num_heads(channels: int, head_dim: int) -> int:
    """The largest divisor of ``channels`` not above ``channels // head_dim`` (at least 1)."""
    limit = max(1, channels // head_dim)
    return max(h for h in range(1, limit + 1) if channels % h == 0)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between paired embeddings ``a, b: float[N, D]`` (L2-normalised): scalar.

    ``logits = a @ b.T / temperature``; row ``i``'s positive is column ``i``;
    ``(CE(logits, arange) + CE(logits.T, arange)) / 2``.
    """
    logits = a @ b.t() / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def choose_hidden(available: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The modality each sample hides for reconstruction, drawn uniformly among its available ones.

    ``available: bool[B, M]`` (every row has >= 1 True) -> ``(hidden int64[B], takes_part bool[B])``;
    ``takes_part`` is True where a sample has >= 2 available modalities (a sample with one keeps it
    and ``hidden`` is meaningless there). Uses torch's global generator.
    """
    hidden = torch.multinomial(available.float(), 1).squeeze(1)
    return hidden, available.sum(dim=1) >= 2


class ModalityFusionBlock(nn.Module):
    """Masked fusion-token attention across modalities at each pixel of one scale.

    ``forward``: ``(features float[B, M, C, h, w], available bool[B, M]) -> fused float[B, C, h, w]``.
    ``reconstruct``: the masked-reconstruction query (see the module docstring).

    Args:
        channels: ``C`` of this scale.
        num_modalities: ``M``.
        num_fusion_tokens: ``F``, learned fusion tokens.
        head_dim: channels per attention head; ``heads`` = :func:`num_heads`.
        mlp_ratio: hidden width of the MLP as a multiple of ``C``.
    """

    def __init__(
        self, channels: int, num_modalities: int, num_fusion_tokens: int = 2, head_dim: int = 32, mlp_ratio: int = 2
    ) -> None:
        super().__init__()
        self.heads = num_heads(channels, head_dim)
        self.scale = (channels // self.heads) ** -0.5
        self.modality_embed = nn.Parameter(torch.randn(num_modalities, channels) * 0.02)
        self.fusion_tokens = nn.Parameter(torch.randn(num_fusion_tokens, channels) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(channels) * 0.02)
        self.norm1 = nn.LayerNorm(channels)
        self.query = nn.Linear(channels, channels)
        self.key_value = nn.Linear(channels, 2 * channels)
        self.out = nn.Linear(channels, channels)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels, mlp_ratio * channels), nn.GELU(), nn.Linear(mlp_ratio * channels, channels)
        )
        self.reconstruction_head = nn.Linear(channels, channels)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """``float[..., L, C]`` -> ``float[..., H, L, C / H]``."""
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    def attend(self, queries: torch.Tensor, features: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The pre-norm block for ``queries`` over [modality tokens, fusion tokens] at every pixel.

        Args:
            queries: query tokens broadcastable to ``float[B, P, Q, C]`` (the fusion tokens ``float[F, C]``,
                or one reconstruction query per sample ``float[B, 1, 1, C]``).
            features: ``float[B, P, M, C]`` modality features at ``P`` pixels.
            keep: ``bool[B, M]``, modalities that are keys (the others are masked out); the fusion
                tokens are always keys, so a row may be all False.
        Returns:
            ``float[B, P, Q, C]``, the block's outputs for the queries.
        """
        b, p, m, c = features.shape
        tokens = features + self.modality_embed
        k_m, v_m = map(self._split, self.key_value(self.norm1(tokens)).chunk(2, dim=-1))  # [B, P, H, M, d]
        k_f, v_f = map(self._split, self.key_value(self.norm1(self.fusion_tokens)).chunk(2, dim=-1))  # [H, F, d]
        q = self._split(self.query(self.norm1(queries))) * self.scale  # [b, p, H, Q, d]
        logits_m = (q @ k_m.transpose(-1, -2)).masked_fill(~keep.view(b, 1, 1, 1, m), float("-inf"))
        logits_f = q @ k_f.transpose(-1, -2)  # [b, p, H, Q, F]
        logits_f = logits_f.expand(*logits_m.shape[:-1], logits_f.shape[-1])
        weights = torch.softmax(torch.cat([logits_m, logits_f], dim=-1), dim=-1)
        mixed = weights[..., :m] @ v_m + weights[..., m:] @ v_f  # [B, P, H, Q, d]
        x = queries + self.out(mixed.transpose(-3, -2).flatten(-2))
        return x + self.mlp(self.norm2(x))

    @staticmethod
    def _tokens(features: torch.Tensor) -> torch.Tensor:
        """``float[B, M, C, h, w]`` -> ``float[B, h * w, M, C]``."""
        return features.permute(0, 3, 4, 1, 2).flatten(1, 2)

    def forward(self, features: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        b, _, c, h, w = features.shape
        fused = self.attend(self.fusion_tokens, self._tokens(features), available).mean(dim=2)  # [B, P, C]
        return fused.transpose(1, 2).reshape(b, c, h, w)

    def reconstruct(self, features: torch.Tensor, keep: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Predicted feature of modality ``hidden[b]`` from the modalities in ``keep`` (which must exclude it).

        ``features: float[B, M, C, h, w]``, ``keep: bool[B, M]``, ``hidden: int64[B]`` -> ``float[B, C, h, w]``.
        """
        b, _, c, h, w = features.shape
        query = (self.mask_token + self.modality_embed[hidden]).view(b, 1, 1, c)
        out = self.attend(query, self._tokens(features), keep).squeeze(2)  # [B, P, C]
        return self.reconstruction_head(out).transpose(1, 2).reshape(b, c, h, w)


@register_method("imlt")
class IMLT(SegmentationMethod):
    """Shared encoder -> masked fusion-token attention per scale -> decoder, + contrastive and reconstruction losses.

    Extra args (params.yaml ``method_params.imlt``):
        num_fusion_tokens: learned fusion tokens per scale (default 2).
        head_dim: channels per attention head (default 32; heads = :func:`num_heads`).
        lambda_contrastive: weight of the cross-modal InfoNCE (default 0.1).
        lambda_reconstruction: weight of the masked reconstruction MSE (default 0.5).
        contrastive_scale: encoder scale index of the contrastive loss (default 2, stride 16).
        proj_dim: width of the contrastive projector and its embeddings (default 64).
        temperature: InfoNCE temperature (default 0.1).
        max_tokens: at most this many locations per modality pair in the InfoNCE (default 256).
        random_combinations: train the fusion pass (the CE) on a random combination of each
            sample's available modalities, drawn by the method itself (default True, the paper's
            "trained on random modality combinations"); False: on what the protocol hands it.
    """

    family = "contrastive"

    def __init__(
        self,
        modalities: Mapping[str, int],
        num_classes: int,
        *,
        num_fusion_tokens: int = 2,
        head_dim: int = 32,
        lambda_contrastive: float = 0.1,
        lambda_reconstruction: float = 0.5,
        contrastive_scale: int = 2,
        proj_dim: int = 64,
        temperature: float = 0.1,
        max_tokens: int = 256,
        random_combinations: bool = True,
        **common,
    ) -> None:
        check_param("num_fusion_tokens", num_fusion_tokens, num_fusion_tokens >= 1, ">= 1")
        check_param("head_dim", head_dim, head_dim >= 1, ">= 1")
        check_param("lambda_contrastive", lambda_contrastive, lambda_contrastive >= 0, ">= 0")
        check_param("lambda_reconstruction", lambda_reconstruction, lambda_reconstruction >= 0, ">= 0")
        check_param("contrastive_scale", contrastive_scale, contrastive_scale in range(4), "an encoder scale: 0..3")
        check_param("proj_dim", proj_dim, proj_dim >= 1, ">= 1")
        check_param("temperature", temperature, temperature > 0, "> 0")
        check_param("max_tokens", max_tokens, max_tokens >= 2, ">= 2 (InfoNCE needs negatives)")
        super().__init__(modalities, num_classes, **common)
        self.lambda_contrastive = float(lambda_contrastive)
        self.lambda_reconstruction = float(lambda_reconstruction)
        self.contrastive_scale = int(contrastive_scale)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.random_combinations = bool(random_combinations)
        m = len(self.modalities)
        self.fusion = nn.ModuleList(
            ModalityFusionBlock(c, m, num_fusion_tokens, head_dim) for c in self.encoder.channels
        )
        c = self.encoder.channels[self.contrastive_scale]
        self.projector = nn.Sequential(nn.Linear(c, proj_dim), nn.GELU(), nn.Linear(proj_dim, proj_dim))

    def decode(
        self, features: Sequence[torch.Tensor], available: torch.Tensor, size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """Fusion per scale + decoder -> ``{"logits": float[B, K, H, W]}``."""
        return {"logits": self.decoder([block(f, available) for block, f in zip(self.fusion, features)], size)}

    def contrastive_loss(self, features: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """Mean symmetric InfoNCE over modality pairs at one scale (``features: float[B, M, C, h, w]``).

        Pairs with fewer than 2 shared locations are skipped; 0 (with a graph) if none qualifies.
        """
        z = F.normalize(self.projector(features.permute(0, 1, 3, 4, 2)), dim=-1)  # [B, M, h, w, D]
        losses = []
        for m, n in itertools.combinations(range(len(self.modalities)), 2):
            both = available[:, m] & available[:, n]
            a, b = z[both, m].flatten(0, 2), z[both, n].flatten(0, 2)  # [N, D]
            if a.shape[0] < 2:
                continue
            if a.shape[0] > self.max_tokens:
                chosen = torch.randperm(a.shape[0], device=a.device)[: self.max_tokens]
                a, b = a[chosen], b[chosen]
            losses.append(info_nce(a, b, self.temperature))
        return torch.stack(losses).mean() if losses else z.sum() * 0.0

    def reconstruction_loss(
        self, features: Sequence[torch.Tensor], available: torch.Tensor, hidden: torch.Tensor, takes_part: torch.Tensor
    ) -> torch.Tensor:
        """Masked-reconstruction MSE averaged over the scales (see the module docstring).

        ``features``: the 4 encoder outputs ``float[B, M, C_i, h_i, w_i]``; ``hidden, takes_part``
        from :func:`choose_hidden`. 0 (with a graph) if no sample takes part.
        """
        if not bool(takes_part.any()):
            return sum(block.mask_token.sum() for block in self.fusion) * 0.0
        index = takes_part.nonzero().squeeze(1)
        hidden = hidden[index]
        keep = available[index] & ~F.one_hot(hidden, len(self.modalities)).bool()
        rows = torch.arange(index.numel(), device=index.device)
        losses = []
        for block, f in zip(self.fusion, features):
            f = f[index]
            predicted = block.reconstruct(f, keep, hidden)  # [B', C, h, w]
            target = F.layer_norm(f[rows, hidden].detach().movedim(1, -1), f.shape[2:3]).movedim(-1, 1)
            losses.append(F.mse_loss(predicted, target))
        return torch.stack(losses).mean()

    def training_step(
        self, inputs: Mapping[str, torch.Tensor], target: torch.Tensor, available: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        features = self.encode(inputs, available)
        fused = random_combination(available) if self.random_combinations else available
        ce = self.cross_entropy(self.decode(features, fused, input_size(inputs))["logits"], target)
        contrastive = self.contrastive_loss(features[self.contrastive_scale], available)
        hidden, takes_part = choose_hidden(available)
        reconstruction = self.reconstruction_loss(features, available, hidden, takes_part)
        total = ce + self.lambda_contrastive * contrastive + self.lambda_reconstruction * reconstruction
        parts = {
            "ce": float(ce.detach()),
            "contrastive": float(contrastive.detach()),
            "reconstruction": float(reconstruction.detach()),
        }
        return total, parts
