"""Data sets: source classes (:mod:`.source`), the prepared format (:mod:`.prepared`)."""

from benchmark.data.prepared import PreparedDataset, read_meta, write_prepared
from benchmark.data.source import (
    RAW_DIR,
    DatasetSource,
    build_source,
    get_dataset,
    list_datasets,
    register_dataset,
)

__all__ = [
    "RAW_DIR",
    "DatasetSource",
    "build_source",
    "PreparedDataset",
    "get_dataset",
    "list_datasets",
    "read_meta",
    "register_dataset",
    "write_prepared",
]
