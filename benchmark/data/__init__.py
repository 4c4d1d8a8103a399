"""Data sets: source classes (:mod:`.source`), the prepared format (:mod:`.prepared`)."""

from benchmark.data.prepared import PreparedDataset, read_meta, write_prepared
from benchmark.data.source import DatasetSource, get_dataset, register_dataset

__all__ = ["DatasetSource", "PreparedDataset", "get_dataset", "read_meta", "register_dataset", "write_prepared"]
