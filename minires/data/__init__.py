"""Data: CIFAR-10 (download, md5, safe extraction, binary parsing), a synthetic stand-in,
augmentation (pad-and-crop, flip, normalise) and a DataLoader that feeds batches to a device."""
from .augment import normalize, random_crop, random_flip
from .cifar10 import (CLASSES, MEAN, STD, URL, ChecksumError, DatasetNotFound, Splits,
                      UnsafeArchiveError, default_root, load_cifar10, safe_extract, verify_md5)
from .loader import DataLoader
from .synthetic import synthetic_cifar

__all__ = ["CLASSES", "MEAN", "STD", "URL", "ChecksumError", "DataLoader", "DatasetNotFound",
           "Splits", "UnsafeArchiveError", "default_root", "load_cifar10", "normalize",
           "random_crop", "random_flip", "safe_extract", "synthetic_cifar", "verify_md5"]
