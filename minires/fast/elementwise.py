"""ReLU and the residual add as minires trains with them: the references' exact arithmetic, spread
over the pool's threads, into lent memory.

`ops/activation.py` (ReLU) and `ops/residual.py` (ResidualAdd) hold the readable references that
students write. These ops subclass them (same checks, same backward) and compute the same values
bit for bit, the same NumPy operations on the same numbers:

    relu          mask = x > 0;  y = max(x, 0)       backward: gx = gy where mask, else 0
    residual_add  y = shortcut + branch              backward: gy to both (the reference's)

What differs is where the work runs and where the results live:
    memory    The inputs are read as one flat run of their memory (`flat`): an (N, C, H, W) view of
              channels-last memory is as flat as a C-ordered array, and the result comes back in
              the same layout, so the next conv reads it with no copy (fast/conv.py).
    threads   The flat run is cut into pieces of about PIECE_BYTES (small enough that a piece's
              mask and result stay in the core's cache) that the pool's threads take in turn
              (fast/threads.py). The references run in one thread.
    results   y, the mask and gx are lent (fast/memory.py): from the second training step on they
              reuse the last step's pages instead of faulting in new ones.

Inputs these ops cannot read as one flat run (slices with gaps, two inputs laid out differently,
mixed dtypes) go to the reference's forward, as do small ones (under MIN_SIZE values), where
threads cost more than they save. This is a NumPy (CPU) path: `minires.functional` sends other
arrays (CuPy) to the reference.
"""
import numpy as np

from . import memory
from .threads import run_chunks, split
from ..ops.activation import ReLU
from ..ops.residual import ResidualAdd

PIECE_BYTES = 2**18  # the values of one piece: its mask and result stay in a core's cache
MIN_SIZE = 2**16     # fewer values than this run in the reference, in one thread


def memory_axes(a):
    """a's axes from the slowest to the fastest in memory, if a's values fill one gap-free run of
    memory in that order (a C-contiguous array, or a transpose of one), else None."""
    axes = sorted(range(a.ndim), key=lambda axis: -a.strides[axis])
    return axes if a.transpose(axes).flags.c_contiguous else None


def flat(a, axes):
    """a's memory as a 1-D view, in the order of `axes` (from memory_axes)."""
    return a.transpose(axes).reshape(-1)


def lend_like(a, axes, dtype):
    """A lent array of a's shape, laid out in memory as a is (`axes`), and its flat view."""
    ordered = memory.lend([a.shape[axis] for axis in axes], dtype)
    return ordered.transpose(np.argsort(axes)), ordered.reshape(-1)


def pieces(size, itemsize):
    """Slices of range(size) of about PIECE_BYTES each, for the pool's threads."""
    return split(size, -(-size * itemsize // PIECE_BYTES))


def shared_layout(*arrays):
    """The axes (from memory_axes) that every one of `arrays` is laid out in, or None when they
    differ, are not gap-free, differ in dtype, or are too small for threads to pay."""
    first = arrays[0]
    if first.size < MIN_SIZE or any(a.dtype != first.dtype for a in arrays):
        return None
    axes = memory_axes(first)
    if axes is None or any(a.strides != first.strides for a in arrays):
        return None
    return axes


class FastReLU(ReLU):
    """relu as minires runs it: the reference's checks and arithmetic, in pieces over the pool."""

    def forward(self, x):
        axes = shared_layout(x)
        if axes is None:
            return super().forward(x)
        self.mask, mask_flat = lend_like(x, axes, np.bool_)
        y, y_flat = lend_like(x, axes, x.dtype)
        x_flat = flat(x, axes)

        def piece(s):  # mask = x > 0; y = max(x, 0)
            np.greater(x_flat[s], 0, out=mask_flat[s])
            np.maximum(x_flat[s], 0, out=y_flat[s])
        run_chunks(piece, pieces(x.size, x.itemsize))
        return y

    def backward(self, gy):
        axes = shared_layout(gy)
        if axes is None or memory_axes(self.mask) != axes:  # gy and the mask laid out alike
            return super().backward(gy)
        gx, gx_flat = lend_like(gy, axes, gy.dtype)
        gy_flat, mask_flat = flat(gy, axes), flat(self.mask, axes)

        def piece(s):  # gx = gy where mask, else 0 (np.where has no out=)
            gx_flat[s] = 0
            np.copyto(gx_flat[s], gy_flat[s], where=mask_flat[s])
        run_chunks(piece, pieces(gy.size, gy.itemsize))
        return gx


class FastResidualAdd(ResidualAdd):
    """residual_add as minires runs it: the reference's checks and sum, in pieces over the pool."""

    def forward(self, shortcut, branch):
        axes = shared_layout(shortcut, branch)
        if axes is None:
            return super().forward(shortcut, branch)
        y, y_flat = lend_like(shortcut, axes, shortcut.dtype)
        a, b = flat(shortcut, axes), flat(branch, axes)
        run_chunks(lambda s: np.add(a[s], b[s], out=y_flat[s]),
                   pieces(shortcut.size, shortcut.itemsize))
        return y


def relu(x):
    """max(x, 0) elementwise, as `minires.ops.activation.relu` computes it."""
    return FastReLU().apply(x)


def residual_add(shortcut, branch):
    """shortcut + branch, as `minires.ops.residual.residual_add` computes it."""
    return FastResidualAdd().apply(shortcut, branch)
