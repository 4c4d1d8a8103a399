"""IMSS benchmark: incomplete multimodal semantic segmentation in remote sensing.

The data take one path: data set -> batch ``{modality: tensor}`` + ``available`` mask
(:mod:`benchmark.protocol`) -> method (:mod:`benchmark.methods`) -> logits -> confusion matrix
-> metrics JSON (:mod:`benchmark.metrics`, :mod:`benchmark.evaluate`) -> tables and plots
(:mod:`benchmark.report`).
"""

__version__ = "0.1.0"
