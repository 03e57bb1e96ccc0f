"""Data augmentation for image batches, vectorised over the batch (NumPy, on the CPU).

The standard CIFAR-10 recipe of the ResNet paper: pad 4 pixels of zeros on every side, take a random
32x32 crop, flip horizontally with probability 1/2, then normalise each channel. Each function
takes a whole batch ``(N, C, H, W)`` and a ``numpy.random.Generator``; there is no Python loop over
images or pixels, only array indexing.
"""
import numpy as np


def random_crop(batch, padding, rng):
    """Zero-pad each image by `padding` pixels, then cut a random window of the original size.

    Each image gets its own offsets (oy, ox) in [0, 2*padding]; output pixel (y, x) of image n is
    padded[n, :, oy[n] + y, ox[n] + x]. One fancy-indexing gather does all images at once.
    """
    n, c, h, w = batch.shape
    padded = np.pad(batch, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oy = rng.integers(0, 2 * padding + 1, size=n)                   # (N,)
    ox = rng.integers(0, 2 * padding + 1, size=n)                   # (N,)
    rows = oy[:, None] + np.arange(h)                               # (N, H)
    cols = ox[:, None] + np.arange(w)                               # (N, W)
    return padded[np.arange(n)[:, None, None, None],                # (N, 1, 1, 1)
                  np.arange(c)[None, :, None, None],                # (1, C, 1, 1)
                  rows[:, None, :, None],                           # (N, 1, H, 1)
                  cols[:, None, None, :]]                           # (N, 1, 1, W) -> (N, C, H, W)


def random_flip(batch, rng, p=0.5):
    """Mirror each image left-right with probability `p`; returns a new array."""
    flip = rng.random(len(batch)) < p                               # (N,)
    return np.where(flip[:, None, None, None], batch[..., ::-1], batch)


def normalize(batch, mean, std):
    """uint8 pixels 0..255 -> float32 (x / 255 - mean) / std, per channel.

    `mean` and `std` hold one value per channel, for pixels scaled to [0, 1] (as CIFAR10 MEAN/STD).
    """
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[1] != len(mean) or len(std) != len(mean):
        raise ValueError(f"normalize: batch {batch.shape} must be (N, C, H, W) with C equal to "
                         f"len(mean) = {len(mean)} and len(std) = {len(std)}")
    scaled = batch.astype(np.float32) / np.float32(255)             # (N, C, H, W) in [0, 1]
    return (scaled - mean[:, None, None]) / std[:, None, None]
