"""Work buffers: scratch arrays that each thread keeps from one call to the next.

A training step makes and drops the same scratch arrays every step (the im2col columns of every
chunk, the padded inputs). `workspace(name, shape, dtype)` hands out a view of a buffer that
belongs to the calling thread: the buffer grows to the largest size the thread has asked for
under that name, and is reused from then on. Its contents are valid only until the same thread
asks for the same name again, so nothing a workspace holds may leave the op that asked for it:
op outputs are ordinary NumPy arrays.
"""
import threading

import numpy as np

_buffers = threading.local()  # per thread: {name: flat byte buffer}


def workspace(name, shape, dtype):
    """An uninitialised array of `shape` and `dtype`, a view of this thread's buffer `name`."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffers = _buffers.__dict__
    buffer = buffers.get(name)
    if buffer is None or buffer.size < nbytes:
        buffer = buffers[name] = np.empty(nbytes, dtype=np.uint8)
    return buffer[:nbytes].view(dtype).reshape(shape)
