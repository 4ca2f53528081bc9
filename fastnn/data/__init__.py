"""Data sets: MNIST and Fashion-MNIST from IDX files (found, verified, downloaded if absent)."""
from .idx import parse_idx, read_idx, write_idx
from .mnist import DATASETS, FILES, download, find, load_mnist, search_dirs

__all__ = ["DATASETS", "FILES", "download", "find", "load_mnist", "parse_idx", "read_idx", "search_dirs",
           "write_idx"]
