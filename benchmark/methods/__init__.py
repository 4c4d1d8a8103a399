"""Method contract and registry (every built-in method: :mod:`benchmark.methods.catalog`)."""

from benchmark.methods.base import (
    SegmentationMethod,
    check_param,
    input_size,
    is_training_only,
    masked_mean,
    replace_modality,
    restrict_features,
)
from benchmark.methods.registry import (
    accepted_params,
    build_method,
    import_method_modules,
    register_method,
    registered_class,
)

__all__ = [
    "SegmentationMethod",
    "accepted_params",
    "build_method",
    "check_param",
    "import_method_modules",
    "input_size",
    "is_training_only",
    "masked_mean",
    "register_method",
    "registered_class",
    "replace_modality",
    "restrict_features",
]
