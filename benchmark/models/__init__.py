"""Building blocks shared by every method: backbones, the multi-modal encoder, the decoder."""

from benchmark.models.backbones import STRIDES, create_backbone
from benchmark.models.decoder import AllMLPDecoder
from benchmark.models.encoder import MultiModalEncoder

__all__ = ["STRIDES", "AllMLPDecoder", "MultiModalEncoder", "create_backbone"]
