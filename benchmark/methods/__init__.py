"""Method contract and registry."""

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
    create_method,
    get_method_class,
    import_method_modules,
    list_methods,
    register_method,
)

__all__ = [
    "SegmentationMethod",
    "check_param",
    "create_method",
    "get_method_class",
    "import_method_modules",
    "input_size",
    "is_training_only",
    "list_methods",
    "masked_mean",
    "register_method",
    "replace_modality",
    "restrict_features",
]
