"""DataLoader: shuffled mini-batches, augmented and normalised on the CPU, then moved to a device.

The loader owns one random generator (PCG64) for the shuffle order and the augmentation, so a seed
makes a whole run reproducible, and ``state_dict()`` / ``load_state_dict()`` save and restore it as
plain NumPy arrays (storable in an .npz checkpoint, no pickle). Save the state between epochs: the
restored loader then produces exactly the next epoch the original would have.
"""
import math

import numpy as np

from minires import backend
from . import augment
from .cifar10 import MEAN, STD


class DataLoader:
    """Iterate ``(x, y)`` batches over uint8 images ``(N, C, H, W)`` and integer labels ``(N,)``.

    x is float32 ``(B, C, H, W)`` on `device` (default ``backend.default_device()``): with
    `normalize`, ``(pixels / 255 - mean) / std`` per channel, otherwise ``pixels / 255``.
    y is int64 ``(B,)`` on the same device. With `augment`, each image is zero-padded by `padding`,
    randomly cropped back to its size and flipped left-right with probability 1/2 (training only).
    Each pass (``for x, y in loader``) is one epoch with a new permutation when `shuffle` is true.
    ``len(loader)`` is the number of batches per epoch.
    """

    def __init__(self, images, labels, batch_size, shuffle=True, augment=False, normalize=True,
                 drop_last=False, seed=None, device=None, mean=MEAN, std=STD, padding=4):
        _check_inputs(images, labels, batch_size, mean)
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.augment = augment
        self.normalize = normalize
        self.drop_last = drop_last
        self.device = backend.check_device(device or backend.default_device())
        self.mean = mean
        self.std = std
        self.padding = padding
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def __len__(self):
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        order = self.rng.permutation(len(self.images)) if self.shuffle \
            else np.arange(len(self.images))
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]    # (B,)
            yield self._batch(index)

    def _batch(self, index):
        """Gather, augment and normalise one batch on the CPU, then move it to the device."""
        x = self.images[index]                                              # (B, C, H, W) uint8
        if self.augment:
            x = augment.random_crop(x, self.padding, self.rng)
            x = augment.random_flip(x, self.rng)
        if self.normalize:
            x = augment.normalize(x, self.mean, self.std)                   # float32
        else:
            x = x.astype(np.float32) / np.float32(255)
        return backend.to_device(x, self.device), backend.to_device(self.labels[index], self.device)

    def state_dict(self):
        """The generator state as NumPy arrays: 128-bit PCG64 numbers split into two uint64."""
        state = self.rng.bit_generator.state
        return {"rng_state": _split128(state["state"]["state"]),
                "rng_inc": _split128(state["state"]["inc"]),
                "rng_has_uint32": np.array(state["has_uint32"], dtype=np.int64),
                "rng_uinteger": np.array(state["uinteger"], dtype=np.uint64)}

    def load_state_dict(self, state):
        """Restore a state from ``state_dict()`` (also as read back from an .npz file).

        Every entry is checked first (names, dtypes, shapes, ranges): a ValueError names the bad
        one, and the loader is left unchanged.
        """
        _check_state(state)
        self.rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": _join128(state["rng_state"]), "inc": _join128(state["rng_inc"])},
            "has_uint32": int(state["rng_has_uint32"]),
            "uinteger": int(state["rng_uinteger"])}


_STATE_SHAPES = {"rng_state": (2,), "rng_inc": (2,), "rng_has_uint32": (), "rng_uinteger": ()}


def _check_state(state):
    """Raise a ValueError naming the first entry of a loader state that is not as saved."""
    if set(state) != set(_STATE_SHAPES):
        raise ValueError(f"DataLoader.load_state_dict: expected the entries "
                         f"{sorted(_STATE_SHAPES)}, got {sorted(state)}")
    for name, shape in _STATE_SHAPES.items():
        value = np.asarray(state[name])
        if value.dtype.kind not in "iu" or value.shape != shape or (value < 0).any():
            raise ValueError(f"DataLoader.load_state_dict: {name} must be non-negative integers "
                             f"of shape {shape}, got {value.dtype} of shape {value.shape}")
    if int(state["rng_has_uint32"]) not in (0, 1):
        raise ValueError(f"DataLoader.load_state_dict: rng_has_uint32 must be 0 or 1, got "
                         f"{int(state['rng_has_uint32'])}")
    if int(state["rng_uinteger"]) >= 2 ** 32:
        raise ValueError(f"DataLoader.load_state_dict: rng_uinteger must be below 2**32, got "
                         f"{int(state['rng_uinteger'])}")


def _split128(value):
    """A Python int below 2**128 -> uint64 array [high, low] (npz has no 128-bit integers)."""
    return np.array([value >> 64, value & (2 ** 64 - 1)], dtype=np.uint64)


def _join128(words):
    high, low = (int(w) for w in words)
    return (high << 64) | low


def _check_inputs(images, labels, batch_size, mean):
    """Raise errors that name the shapes, before a bad input reaches NumPy's internals."""
    shape = getattr(images, "shape", None)
    channels = len(mean)
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[1] != channels:
        hint = ""
        if shape is not None and len(shape) == 4 and shape[-1] == channels:
            hint = "; it looks channels-last (N, H, W, C): pass images.transpose(0, 3, 1, 2)"
        raise ValueError(f"DataLoader: images must be a NumPy array of shape (N, {channels}, H, W),"
                         f" got shape {shape}{hint}")
    if images.dtype != np.uint8:
        raise TypeError(f"DataLoader: images must be uint8 pixels 0..255, got {images.dtype} "
                        f"(shape {shape}); for floats in [0, 1] pass "
                        "(images * 255).round().astype(np.uint8)")
    labels_shape = np.shape(labels)
    if labels_shape != (len(images),):
        raise ValueError(f"DataLoader: labels must have shape ({len(images)},) to match images "
                         f"{shape}, got {labels_shape}")
    if int(batch_size) < 1:
        raise ValueError(f"DataLoader: batch_size must be at least 1, got {batch_size}")
