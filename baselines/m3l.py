"""M3L: Multi-modal Teacher for Masked Modality Learning.

Maheshwari, Liu, Kira, "Missing Modality Robustness in Semi-Supervised Multi-Modal Semantic
Segmentation", WACV 2024, arXiv 2304.10756 (official code: github.com/harshm121/M3L).

Key mechanism: a multi-modal *student* and a mean *teacher* (an exponential moving average of
the student, never trained by gradients). The teacher sees the complete input; the student sees
a copy in which, per sample, one randomly chosen modality (or none) has its patch embeddings
replaced by a learned mask token. The student is trained with the supervised cross-entropy plus a
cross-entropy towards the teacher's hard pseudo labels (argmax of its softmax), so it learns to
predict from an incomplete input what the teacher predicts from the complete one. The network is
"Linear Fusion": two modality branches mixed inside the encoder with a fixed ratio, whose
per-branch decoder outputs are ensembled with a learned softmax weight ``alpha``.

Here (``m3l``), at each of the 4 encoder scales ``i``, with ``features: float[B, M, C_i, h, w]``:

- a missing (sample, modality) feature map is replaced by the learned mask token
  ``mask_tokens[i][m]: float[C_i]`` broadcast over ``h x w`` (the encoder zeroes a missing pair
  and its input is never read, so garbage in a missing input cannot leak);
- ``fused_i = sum_m softmax(alpha_i)_m * feature_m`` (``alpha_i: float[M]``, init 0; the softmax
  runs over all ``M`` modalities, a masked slot contributing its mask token), then the shared
  all-MLP decoder -> logits.

Training: the first ``supervised_warmup`` steps are plain supervised CE on the available
modalities (no mask, no teacher), as the paper's supervised phase; then the teacher starts as a
copy of the student. Each later step: the teacher (own encoder, fusion, decoder; ``torch.no_grad``) predicts on every
available modality -> pseudo labels ``argmax``. The student draws, per sample, uniformly one of
{mask nothing} plus each available modality (only when >= 2 are available, so a sample keeps at
least one), and predicts on ``available & ~masked``. Loss:
``CE(student, target) + lambda_consistency * CE(student, pseudo labels)`` (pseudo labels on every
pixel). After each optimiser step: ``a = min(1 - 1 / (n + 1), ema_decay)``,
``teacher = a * teacher + (1 - a) * student`` (``n`` counts updates from the end of the warm-up,
so the first one copies the student), buffers copied. Inference (``forward``/``predict``) is the student.

Simplified for the shared setting
---------------------------------
- Fully supervised, not semi-supervised: the paper's consistency term runs on unlabelled
  images (and the labelled ones); our benchmark has labels for every training image, so the
  pseudo-label term runs on the labelled batch and acts as self-distillation from the teacher.
  The paper's supervised phase (``n_sup_epochs``, then the student is copied to the teacher) is
  ``supervised_warmup`` steps (default 100 of the default 300) inside the same step budget as
  every method. Without it the teacher, lagging a student that is still learning fast, hands
  out poor pseudo labels at full weight: the default 300 steps gave Avg 33.3 +- 6.4 mIoU
  without the warm-up and 41.3 +- 0.4 with it (2 seeds; MuSS 42.6).
- Network: the shared per-modality encoder (one weight-tied backbone run on each modality
  separately) and the shared all-MLP decoder replace the paper's two-branch MiT (SegFormer)
  with in-encoder linear mixing (``ratio`` 0.8 per attention block) and per-branch decoders.
  Linear Fusion therefore becomes a learned softmax-weighted sum of the modalities' features at
  the 4 encoder outputs feeding ONE decoder, instead of a fixed-ratio exchange inside every block
  plus an ``alpha``-weighted ensemble of per-branch predictions (whose per-branch losses we also
  drop). Weights are learned per scale.
- Masking: the paper replaces all patch embeddings of the masked branch (``masking_ratio`` 1.0)
  at every stage with one token per stage shared by the two branches; we replace the masked
  modality's encoder output at each of the 4 scales with a token per scale AND modality
  (M may exceed 2 here). The same tokens stand in for modalities missing from the data, which
  the paper (always complete inputs at training time) never sees.
- Mask distribution: the paper draws uniformly from {mask modality 0, mask modality 1, none};
  with ``M`` modalities and any training protocol we draw uniformly from {none} plus each AVAILABLE
  modality, and never mask a sample's only modality.
- One student pass per batch: the paper duplicates the labelled batch (one unmasked and one
  masked copy, supervised CE on both); we run the masked copy only (probability of masking
  nothing is 1 / (1 + #available)), which keeps the step cost near the other methods'.
- Teacher pseudo labels from the teacher's fused prediction (the paper: its ensemble output),
  computed in eval mode (the paper's code runs the teacher in train mode): with a BatchNorm or
  dropout backbone the targets then do not depend on the rest of the batch; with the default
  GroupNorm backbone both are the same.
- Evaluation: the paper's code evaluates both student and teacher; we evaluate the student
  (our choice: it is the model trained for masked inputs, and the teacher is a training device),
  so the teacher is a ``training_only_modules`` entry and is left out of the parameter count.
- Same training budget, optimiser and schedule as every method.

What it sees under each training protocol (docs/protocol.md): the protocol hands it ``available``;
the teacher predicts on all of it and the student draws its own masked modality among it (seeded
by the trainer through torch's global generator). Under ``complete`` the student's mask is the only
source of missing modalities (one at a time, as in the paper); under ``uniform`` it masks one more
of an already random subset.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.methods import SegmentationMethod, check_param, input_size, register_method

MASK_TOKEN_STD = 0.02  # normal init of the mask tokens


class LinearFusion(nn.Module):
    """Softmax-weighted sum over modalities per scale, missing modalities replaced by mask tokens.

    ``forward(features, available)``: 4 tensors ``float[B, M, C_i, h_i, w_i]`` and ``bool[B, M]``
    -> 4 tensors ``float[B, C_i, h_i, w_i]``.

    Args:
        num_modalities: ``M``.
        channels: ``C_i`` of the 4 scales.
    """

    def __init__(self, num_modalities: int, channels: Sequence[int]) -> None:
        super().__init__()
        self.alpha = nn.ParameterList(nn.Parameter(torch.zeros(num_modalities)) for _ in channels)
        self.mask_tokens = nn.ParameterList(
            nn.Parameter(torch.randn(num_modalities, c) * MASK_TOKEN_STD) for c in channels
        )

    def fill(self, features: torch.Tensor, available: torch.Tensor, scale: int) -> torch.Tensor:
        """Replace missing pairs by scale ``scale``'s mask token: ``float[B, M, C, h, w]`` -> same shape."""
        tokens = self.mask_tokens[scale].to(features.dtype)[None, :, :, None, None]  # [1, M, C, 1, 1]
        return torch.where(available[:, :, None, None, None], features, tokens)

    def weights(self, scale: int) -> torch.Tensor:
        """Fusion weights ``softmax(alpha_i): float[M]``."""
        return torch.softmax(self.alpha[scale], dim=0)

    def forward(self, features: Sequence[torch.Tensor], available: torch.Tensor) -> list[torch.Tensor]:
        fused = []
        for i, f in enumerate(features):
            weights = self.weights(i).to(f.dtype)
            fused.append(torch.einsum("m,bmchw->bchw", weights, self.fill(f, available, i)))
        return fused


@register_method("m3l")
class M3L(SegmentationMethod):
    """Student (shared encoder -> linear fusion with mask tokens -> decoder) + EMA teacher.

    Extra args (params.yaml ``method_params.m3l``):
        ema_decay: upper bound of the teacher's EMA coefficient (paper: ``ema_alpha`` 0.99).
        supervised_warmup: optimiser steps of plain supervised training (no mask, no teacher)
            before the mean-teacher phase; the teacher starts as a copy of the student then
            (paper: ``n_sup_epochs`` of supervised training, then the student is copied).
        lambda_consistency: weight of the CE towards the teacher's pseudo labels (paper:
            ``pseudo_loss_coeff`` 1).
    """

    family = "joint"
    training_only_modules = ("teacher",)

    def __init__(
        self,
        modalities: Mapping[str, int],
        num_classes: int,
        *,
        ema_decay: float = 0.99,
        lambda_consistency: float = 1.0,
        supervised_warmup: int = 100,
        **common,
    ) -> None:
        check_param("ema_decay", ema_decay, 0.0 <= ema_decay < 1.0, "in [0, 1)")
        check_param("lambda_consistency", lambda_consistency, lambda_consistency >= 0, ">= 0")
        check_param("supervised_warmup", supervised_warmup, supervised_warmup >= 0, ">= 0 (steps)")
        super().__init__(modalities, num_classes, **common)
        self.supervised_warmup = int(supervised_warmup)
        self.ema_decay = float(ema_decay)
        self.lambda_consistency = float(lambda_consistency)
        self.fusion = LinearFusion(len(self.modalities), self.encoder.channels)
        # number of EMA updates so far (persistent: saved and restored with checkpoints)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.int64))
        self.teacher = nn.ModuleDict(
            {name: copy.deepcopy(getattr(self, name)) for name in ("encoder", "fusion", "decoder")}
        )
        self.teacher.requires_grad_(False)

    def decode(
        self, features: Sequence[torch.Tensor], available: torch.Tensor, size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        return {"logits": self.decoder(self.fusion(features, available), size)}

    def draw_student_mask(self, available: torch.Tensor) -> torch.Tensor:
        """Modalities to mask for the student, ``bool[B, M]``: per sample, uniformly one of
        {nothing} plus each available modality; nothing when a single modality is available.
        Draws from torch's global generator."""
        batch, num_modalities = available.shape
        can_mask = available & (available.sum(dim=1, keepdim=True) >= 2)
        choices = torch.cat([torch.ones_like(available[:, :1]), can_mask], dim=1).float()  # [B, 1 + M]
        chosen = torch.multinomial(choices, 1).squeeze(1)
        return F.one_hot(chosen, num_modalities + 1)[:, 1:].bool()

    @torch.no_grad()
    def pseudo_labels(self, inputs: Mapping[str, torch.Tensor], available: torch.Tensor) -> torch.Tensor:
        """Teacher's hard labels on the unmasked input: ``int64[B, H, W]``."""
        size = input_size(inputs)
        self.teacher.eval()  # no batch statistics or dropout in the targets; train() flips it back, harmlessly
        features = self.teacher["encoder"](inputs, available)
        logits = self.teacher["decoder"](self.teacher["fusion"](features, available), size)
        return logits.argmax(dim=1)  # = argmax of its softmax

    def training_step(
        self, inputs: Mapping[str, torch.Tensor], target: torch.Tensor, available: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if int(self.ema_updates) < self.supervised_warmup:  # supervised phase: no mask, no teacher
            ce = self.cross_entropy(self(inputs, available)["logits"], target)
            return ce, {"ce": float(ce.detach()), "consistency": 0.0}
        student_available = available & ~self.draw_student_mask(available)
        pseudo = self.pseudo_labels(inputs, available)
        # A modality's features do not depend on the others, so encoding only the unmasked pairs
        # gives the same fused features (masked slots get mask tokens) at less cost.
        logits = self(inputs, student_available)["logits"]
        ce = self.cross_entropy(logits, target)
        consistency = F.cross_entropy(logits, pseudo)  # every pixel, no ignore label
        total = ce + self.lambda_consistency * consistency
        return total, {"ce": float(ce.detach()), "consistency": float(consistency.detach())}

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """EMA update of the teacher: ``a = min(1 - 1 / (n + 1), ema_decay)`` with ``n`` the updates
        since the supervised warm-up (``a = 0``, a copy, during and right after it),
        ``teacher = a * teacher + (1 - a) * student``; buffers copied; ``ema_updates += 1``."""
        n = int(self.ema_updates) - self.supervised_warmup
        alpha = 0.0 if n < 0 else min(1.0 - 1.0 / (n + 1), self.ema_decay)
        for name, teacher in self.teacher.items():
            student = getattr(self, name)
            for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
                t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
            for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
                t.copy_(s)
        self.ema_updates += 1
