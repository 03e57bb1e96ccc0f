"""A synthetic, CIFAR-shaped data set that a small network can learn in seconds.

Each class has a prototype: a smooth coloured picture made of a background colour and a few soft
colour blobs. A sample is its class prototype, shifted by up to a few pixels (wrapping around),
dimmed or brightened a little, plus pixel noise. Classes are told apart by colour and layout, so the
training loss of a demo falls quickly; the noise and shifts keep it from being a lookup table.
Same structure as CIFAR-10 (uint8 images (N, 3, H, W), int64 labels), deterministic given the seed.
"""
import numpy as np

from .cifar10 import Splits

BLOBS_PER_CLASS = 3
MAX_SHIFT = 3        # pixels, each direction
NOISE_STD = 0.12     # pixel noise, on the [0, 1] scale
CHUNK = 4096         # samples generated at once, to bound float32 memory


def synthetic_cifar(n_train, n_test, num_classes=10, seed=0, image_size=32):
    """Splits of `n_train` and `n_test` samples, classes balanced (counts differ by at most 1)."""
    rng = np.random.default_rng(seed)
    prototypes = _prototypes(rng, num_classes, image_size)          # (K, 3, S, S) in [0, 1]
    x_train, y_train = _samples(rng, prototypes, n_train)
    x_test, y_test = _samples(rng, prototypes, n_test)
    return Splits(x_train, y_train, x_test, y_test)


def _prototypes(rng, num_classes, size):
    """One smooth picture per class: background colour plus Gaussian colour blobs."""
    grid = np.arange(size, dtype=np.float32)
    background = rng.uniform(0.2, 0.8, size=(num_classes, 3, 1, 1))
    centers = rng.uniform(0, size, size=(num_classes, BLOBS_PER_CLASS, 2))
    radii = rng.uniform(size / 8, size / 4, size=(num_classes, BLOBS_PER_CLASS))
    colors = rng.uniform(-0.6, 0.6, size=(num_classes, BLOBS_PER_CLASS, 3))
    dy = grid[None, None, :, None] - centers[..., 0, None, None]    # (K, B, S, 1)
    dx = grid[None, None, None, :] - centers[..., 1, None, None]    # (K, B, 1, S)
    bumps = np.exp(-(dy ** 2 + dx ** 2) / (2 * radii[..., None, None] ** 2))  # (K, B, S, S)
    blobs = np.einsum("kbc,kbyx->kcyx", colors, bumps)              # (K, 3, S, S)
    return np.clip(background + blobs, 0, 1).astype(np.float32)


def _samples(rng, prototypes, n):
    """n samples with balanced, shuffled labels: uint8 (n, 3, S, S) and int64 (n,)."""
    labels = rng.permutation(np.arange(n) % len(prototypes)).astype(np.int64)
    images = np.empty((n, *prototypes.shape[1:]), dtype=np.uint8)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        images[start:stop] = _render(rng, prototypes[labels[start:stop]])
    return images, labels


def _render(rng, base):
    """Shift (with wrap-around), rescale and add noise to a batch of prototypes (M, 3, S, S)."""
    m, c, size, _ = base.shape
    shift = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=(m, 2))    # (M, 2)
    rows = (np.arange(size) - shift[:, :1]) % size                  # (M, S)
    cols = (np.arange(size) - shift[:, 1:]) % size                  # (M, S)
    shifted = base[np.arange(m)[:, None, None, None], np.arange(c)[None, :, None, None],
                   rows[:, None, :, None], cols[:, None, None, :]]  # (M, 3, S, S)
    gain = rng.uniform(0.8, 1.2, size=(m, 1, 1, 1)).astype(np.float32)
    pixels = rng.standard_normal(size=shifted.shape, dtype=np.float32)  # noise, then the image
    pixels *= NOISE_STD
    pixels += shifted * gain
    np.clip(pixels, 0, 1, out=pixels)
    return (pixels * 255 + 0.5).astype(np.uint8)  # round to nearest (values are >= 0)
