"""conv2d and batch_norm for CuPy arrays: few kernel launches, nothing big kept for the backward.

`ops/conv.py` and `ops/norm.py` hold the readable references (students write them; assignments
are cut from them). This module computes the same functions, with the same checks and error
messages (the classes below inherit them), written against the array module `backend.xp(x)`
only, so the tests run it on NumPy and the GPU runs it on CuPy unchanged.

Layout. Everything stays NCHW and C-contiguous, CuPy's own layout: CuPy's elementwise ops return
C-ordered arrays whatever their inputs' strides (cupy/cupy#7342), so a channels-last layout (the
CPU fast path's) would cost a transposing copy at every op that follows a ReLU.

    conv forward    cols = ONE copy of a sliding-window view of the padded x  (N, C*kh*kw, OH*OW)
                    y    = W2 @ cols, one batched GEMM       (OC, K) @ (N, K, P) -> (N, OC, P)
    conv backward   cols are never kept: the reference keeps kh*kw copies of every input.
                    stride 1: dx is a convolution of gy padded by k-1-p with the flipped kernel,
                    and the same cols of gy give dW (no cols of x at all):
                        gcols = window copy of gy              (N, OC*kh*kw, H*W)
                        dx    = Wflip @ gcols                  (C, OC*kh*kw) @ ... -> (N, C, H*W)
                        dW    = flip(sum_n x3 @ gcols^T)       (N, C, H*W) @ (N, H*W, OC*kh*kw)
                    other strides, or no dx wanted: the cols of x are copied again,
                        dW = sum_n gy3 @ cols^T,  dx = col2im(W2^T @ gy3)
    batch norm      per-channel sums as row sums of (N, C, H*W) then a sum over N: N*C
                    independent rows (the reference's mean over axes (0, 2, 3) has only C outputs,
                    a few thread blocks on a GPU). Two passes (mean, then the squares of x - mean)
                    as the reference, so large offsets and constant channels come out as well.
                    Saved: x (the graph holds it anyway), mean, 1/std; never x-hat.

Saved arrays are dropped by the autograd engine right after each backward (Function._release).

Off by default: nothing here has run on a GPU yet. Env MINIRES_GPU_FAST_OPS=1 turns it on
(`enabled()`); `minires.functional` picks it for CuPy arrays when it is on.
"""
import os

import numpy as np

from .. import backend
from ..ops.conv import Conv2d
from ..ops.norm import BatchNorm, _array, _per_channel

ENV_SWITCH = "MINIRES_GPU_FAST_OPS"


def enabled():
    """True when env MINIRES_GPU_FAST_OPS is 1/true/yes/on (default off: never run on a GPU)."""
    return os.environ.get(ENV_SWITCH, "0").strip().lower() in ("1", "true", "yes", "on")


# --- sliding windows ---------------------------------------------------------------------------

def pad_hw(x, padding):
    """x (N, C, H, W) with zero rows/columns around each image: a memset and one copy."""
    py, px = padding
    if not (py or px):
        return x
    n, c, h, w = x.shape
    xpad = backend.xp(x).zeros((n, c, h + 2 * py, w + 2 * px), dtype=x.dtype)
    xpad[:, :, py:py + h, px:px + w] = x
    return xpad


def window_cols(x, kernel, stride, padding):
    """x (N, C, H, W) -> cols (N, C*kh*kw, OH*OW), C-contiguous, with ONE copy:

        cols[n, (c, i, j), (oy, ox)] = xpad[n, c, sy*oy + i, sx*ox + j]

    (the reference `im2col`, flattened). The windows are a strided view of the padded input.
    """
    xp = backend.xp(x)
    (kh, kw), (sy, sx) = kernel, stride
    xpad = pad_hw(x, padding)
    n, c, hp, wp = xpad.shape
    oh, ow = (hp - kh) // sy + 1, (wp - kw) // sx + 1
    sn, sc, sh, sw = xpad.strides
    windows = xp.lib.stride_tricks.as_strided(
        xpad, (n, c, kh, kw, oh, ow), (sn, sc, sh, sw, sy * sh, sx * sw))
    return xp.ascontiguousarray(windows).reshape(n, c * kh * kw, oh * ow)


def col2im_add(gcols, x_shape, kernel, stride, padding):
    """The adjoint of `window_cols`: (N, C*kh*kw, OH*OW) -> (N, C, H, W), overlaps added.

    One strided add per kernel offset (kh*kw of them), never per pixel.
    """
    (kh, kw), (sy, sx), (py, px) = kernel, stride, padding
    n, c, h, w = x_shape
    xp = backend.xp(gcols)
    gcols = gcols.reshape(n, c, kh, kw, -1)
    oh = (h + 2 * py - kh) // sy + 1
    ow = gcols.shape[-1] // oh
    gpad = xp.zeros((n, c, h + 2 * py, w + 2 * px), dtype=gcols.dtype)
    for i in range(kh):
        for j in range(kw):
            gpad[:, :, i:i + sy * oh:sy, j:j + sx * ow:sx] += gcols[:, :, i, j].reshape(n, c, oh, ow)
    return gpad[:, :, py:py + h, px:px + w]


def as_batched_rows(a):
    """(N, C, H, W) -> (N, C, H*W); a view of C-contiguous input, else one copy."""
    n, c = a.shape[:2]
    return backend.xp(a).ascontiguousarray(a).reshape(n, c, -1)


# --- conv2d ------------------------------------------------------------------------------------

class GpuConv2d(Conv2d):
    """conv2d with one window copy and one batched GEMM per product; cols rebuilt, never saved."""

    def forward(self, x, w, b=None):
        self.x, self.w = x, w  # x: the graph holds it anyway
        n, out_channels = x.shape[0], w.shape[0]
        cols = window_cols(x, self.kernel, self.stride, self.padding)  # (N, K, P)
        y = w.reshape(out_channels, -1) @ cols                         # (N, OC, P)
        (kh, kw), (sy, sx), (py, px) = self.kernel, self.stride, self.padding
        oh = (x.shape[2] + 2 * py - kh) // sy + 1
        y = y.reshape(n, out_channels, oh, -1)
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        return y

    def backward(self, gy):
        (kh, kw), (py, px) = self.kernel, self.padding
        wants_gx = self.needs_input_grad[0]
        if wants_gx and self.stride == (1, 1) and py <= kh - 1 and px <= kw - 1:
            gx, gw = self._through_gy_cols(gy)
        else:
            gx, gw = self._through_x_cols(gy, wants_gx)
        gw = gw if self.needs_input_grad[1] else None
        if not self.has_bias:
            return gx, gw
        return gx, gw, channel_sums(gy)

    def _through_gy_cols(self, gy):
        """Stride 1: dx = Wflip @ cols(gy padded by k-1-p), dW[o,c,i,j] = G[c, o, kh-1-i, kw-1-j]
        with G = sum_n x3 @ gcols^T (the input pixel meets, through offset (i, j), the output
        gradient that gcols holds at offset (kh-1-i, kw-1-j))."""
        x, w = self.x, self.w
        (kh, kw), (py, px) = self.kernel, self.padding
        n, c, h, width = x.shape
        out_channels = w.shape[0]
        gcols = window_cols(gy, self.kernel, (1, 1), (kh - 1 - py, kw - 1 - px))  # (N, OC*k*k, HW)
        w_flip = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(c, -1)         # (C, OC*k*k)
        gx = (w_flip @ gcols).reshape(n, c, h, width)
        g = (as_batched_rows(x) @ gcols.transpose(0, 2, 1)).sum(axis=0)           # (C, OC*k*k)
        gw = g.reshape(c, out_channels, kh, kw)[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        return gx, backend.xp(gw).ascontiguousarray(gw)

    def _through_x_cols(self, gy, wants_gx):
        """Any stride: cols of x copied again; dW = sum_n gy3 @ cols^T, dx = col2im(W2^T @ gy3)."""
        x, w = self.x, self.w
        n, out_channels = gy.shape[:2]
        gy3 = as_batched_rows(gy)                                                 # (N, OC, P)
        cols = window_cols(x, self.kernel, self.stride, self.padding)            # (N, K, P)
        gw = (gy3 @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
        del cols
        if not wants_gx:
            return None, gw
        gcols = w.reshape(out_channels, -1).T @ gy3                               # (N, K, P)
        return col2im_add(gcols, x.shape, self.kernel, self.stride, self.padding), gw


# --- batch norm kernels: CUDA source and NumPy twin side by side ----------------------------------
#
# A batch-norm input is read as x[n, c, p] = x[n * sn + c * sc + p] (p over H*W), so NCHW and a
# channels-first view of an (OC, N*H*W) GEMM output both go in without a copy; outputs are NCHW.
# Per-channel sums are split over SLICES blocks per channel (a (C, S) grid: C alone is too few
# blocks to fill a GPU), written to `partial` (C, S, 2) in double, and finished by a one-thread-per-
# channel kernel: no atomics, the same sums every run. Variance is one pass over x shifted by a
# sample of its channel (x[0, c, 0]), in double, so a large offset cancels before it is squared.

_BLOCK = 256
_SLICE_TARGET = 8192  # values a slice block sums: enough work per block, and many blocks

_REDUCE_PAIR = r"""
__device__ void block_sum_pair(double* a, double* b) {
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) { a[threadIdx.x] += a[threadIdx.x + k];
                               b[threadIdx.x] += b[threadIdx.x + k]; }
        __syncthreads();
    }
}
"""

_PARTIAL_SUMS = _REDUCE_PAIR + r"""
extern "C" __global__ void bn_partial_sums(
        const T* x, const long long hw, const long long m, const long long sn,
        const long long sc, const long long chunk, const int slices, double* partial) {
    __shared__ double s1[256], s2[256];
    const int c = blockIdx.x, s = blockIdx.y;
    const double shift = (double)x[(long long)c * sc];
    const long long start = (long long)s * chunk;
    const long long stop = start + chunk < m ? start + chunk : m;
    double a = 0.0, b = 0.0;
    for (long long j = start + threadIdx.x; j < stop; j += blockDim.x) {
        const long long n = j / hw, p = j - n * hw;
        const double d = (double)x[n * sn + c * sc + p] - shift;
        a += d;
        b += d * d;
    }
    s1[threadIdx.x] = a;
    s2[threadIdx.x] = b;
    __syncthreads();
    block_sum_pair(s1, s2);
    if (threadIdx.x == 0) {
        partial[((long long)c * slices + s) * 2] = s1[0];
        partial[((long long)c * slices + s) * 2 + 1] = s2[0];
    }
}
"""


def _channel_view(x, hw, sn, sc, channels):
    """x as (C, N*H*W) through its element strides (what the kernels index), a NumPy view."""
    n = x.size // (channels * hw) if x.size else 0
    item = x.itemsize
    view = np.lib.stride_tricks.as_strided(x, (channels, n, hw), (sc * item, sn * item, item))
    return view.reshape(channels, n * hw)


def _chunks(values, chunk, slices):
    """(C, m) -> (C, S, chunk), zero-padded: slice s holds values [s*chunk, (s+1)*chunk)."""
    channels, m = values.shape
    padded = np.zeros((channels, slices * chunk), dtype=values.dtype)
    padded[:, :m] = values
    return padded.reshape(channels, slices, chunk)


def _partial_sums_twin(x, hw, m, sn, sc, chunk, slices, partial):
    channels = partial.shape[0]
    values = _channel_view(x, int(hw), int(sn), int(sc), channels).astype(np.float64)
    d = values - values[:, :1]
    partial[..., 0] = _chunks(d, int(chunk), int(slices)).sum(axis=2)
    partial[..., 1] = _chunks(d * d, int(chunk), int(slices)).sum(axis=2)


_FINALIZE_STATS = r"""
extern "C" __global__ void bn_finalize_stats(
        const T* x, const long long sc, const double* partial, const int slices,
        const long long m, const int channels, const T* gamma, const T eps, const T momentum,
        const T unbias, const int update_running, T* running_mean, T* running_var, T* stats) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= channels) return;
    double a = 0.0, b = 0.0;
    for (int s = 0; s < slices; ++s) {
        a += partial[((long long)c * slices + s) * 2];
        b += partial[((long long)c * slices + s) * 2 + 1];
    }
    const double dm = a / (double)m;
    double var = b / (double)m - dm * dm;
    var = var > 0.0 ? var : 0.0;
    const T mean_t = (T)((double)x[(long long)c * sc] + dm);
    const T var_t = (T)var;
    const T inv_std = (T)1 / sqrt(var_t + eps);
    stats[c] = mean_t;
    stats[channels + c] = var_t;
    stats[2 * channels + c] = inv_std;
    stats[3 * channels + c] = gamma[c] * inv_std;
    if (update_running) {
        running_mean[c] = running_mean[c] * ((T)1 - momentum) + momentum * mean_t;
        running_var[c] = running_var[c] * ((T)1 - momentum) + momentum * var_t * unbias;
    }
}
"""


def _finalize_stats_twin(x, sc, partial, slices, m, channels, gamma, eps, momentum, unbias,
                         update_running, running_mean, running_var, stats):
    dtype = stats.dtype.type
    a, b = partial[..., 0].sum(axis=1), partial[..., 1].sum(axis=1)
    dm = a / float(m)
    var = np.maximum(b / float(m) - dm * dm, 0.0)
    shift = _first_of_channels(x, int(sc), int(channels))
    mean_t, var_t = (shift + dm).astype(dtype), var.astype(dtype)
    inv_std = dtype(1) / np.sqrt(var_t + eps)
    stats[0], stats[1], stats[2], stats[3] = mean_t, var_t, inv_std, gamma * inv_std
    if update_running:
        running_mean[...] = running_mean * (dtype(1) - momentum) + momentum * mean_t
        running_var[...] = running_var * (dtype(1) - momentum) + momentum * var_t * unbias


def _first_of_channels(x, sc, channels):
    """x[0, c, 0] for every channel, in double (the shift the partial sums used)."""
    return np.lib.stride_tricks.as_strided(x, (channels,), (sc * x.itemsize,)).astype(np.float64)


_EVAL_STATS = r"""
extern "C" __global__ void bn_eval_stats(
        const T* running_mean, const T* running_var, const T* gamma, const T eps,
        const int channels, T* stats) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= channels) return;
    const T inv_std = (T)1 / sqrt(running_var[c] + eps);
    stats[c] = running_mean[c];
    stats[channels + c] = running_var[c];
    stats[2 * channels + c] = inv_std;
    stats[3 * channels + c] = gamma[c] * inv_std;
}
"""


def _eval_stats_twin(running_mean, running_var, gamma, eps, channels, stats):
    inv_std = stats.dtype.type(1) / np.sqrt(running_var + eps)
    stats[0], stats[1], stats[2], stats[3] = running_mean, running_var, inv_std, gamma * inv_std


_APPLY = r"""
extern "C" __global__ void bn_apply(
        const T* x, const long long hw, const long long sn, const long long sc,
        const int channels, const long long total, const T* stats, const T* beta, T* y) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const long long p = i % hw, nc = i / hw;
    const int c = (int)(nc % channels);
    const long long n = nc / channels;
    const T centred = x[n * sn + c * sc + p] - stats[c];
    y[i] = centred * stats[3 * channels + c] + beta[c];
}
"""


def _apply_twin(x, hw, sn, sc, channels, total, stats, beta, y):
    values = _channel_view(x, int(hw), int(sn), int(sc), int(channels))
    out = (values - stats[0][:, None]) * stats[3][:, None] + beta[:, None]
    y.reshape(-1, int(channels), int(hw))[...] = out.reshape(int(channels), -1, int(hw)).transpose(
        1, 0, 2)


_PARTIAL_GRAD_SUMS = _REDUCE_PAIR + r"""
extern "C" __global__ void bn_partial_grad_sums(
        const T* gy, const long long gsn, const long long gsc, const T* x, const long long sn,
        const long long sc, const long long hw, const long long m, const T* stats,
        const long long chunk, const int slices, double* partial) {
    __shared__ double s1[256], s2[256];
    const int c = blockIdx.x, s = blockIdx.y;
    const T mean = stats[c];
    const long long start = (long long)s * chunk;
    const long long stop = start + chunk < m ? start + chunk : m;
    double a = 0.0, b = 0.0;
    for (long long j = start + threadIdx.x; j < stop; j += blockDim.x) {
        const long long n = j / hw, p = j - n * hw;
        const double g = (double)gy[n * gsn + c * gsc + p];
        a += g;
        b += g * (double)(x[n * sn + c * sc + p] - mean);
    }
    s1[threadIdx.x] = a;
    s2[threadIdx.x] = b;
    __syncthreads();
    block_sum_pair(s1, s2);
    if (threadIdx.x == 0) {
        partial[((long long)c * slices + s) * 2] = s1[0];
        partial[((long long)c * slices + s) * 2 + 1] = s2[0];
    }
}
"""


def _partial_grad_sums_twin(gy, gsn, gsc, x, sn, sc, hw, m, stats, chunk, slices, partial):
    channels = partial.shape[0]
    g = _channel_view(gy, int(hw), int(gsn), int(gsc), channels)
    centred = _channel_view(x, int(hw), int(sn), int(sc), channels) - stats[0][:, None]
    partial[..., 0] = _chunks(g.astype(np.float64), int(chunk), int(slices)).sum(axis=2)
    partial[..., 1] = _chunks(g.astype(np.float64) * centred.astype(np.float64), int(chunk),
                              int(slices)).sum(axis=2)


_FINALIZE_GRADS = r"""
extern "C" __global__ void bn_finalize_grads(
        const double* partial, const int slices, const long long m, const int channels,
        const T* stats, const int training, T* ggamma, T* gbeta, T* coefficients) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= channels) return;
    double a = 0.0, b = 0.0;
    for (int s = 0; s < slices; ++s) {
        a += partial[((long long)c * slices + s) * 2];
        b += partial[((long long)c * slices + s) * 2 + 1];
    }
    const T inv_std = stats[2 * channels + c], k = stats[3 * channels + c];
    const T sum_gy = (T)a, gamma_grad = (T)b * inv_std;
    gbeta[c] = sum_gy;
    ggamma[c] = gamma_grad;
    coefficients[c] = training ? k * sum_gy / (T)m : (T)0;
    coefficients[channels + c] = training ? k * inv_std * gamma_grad / (T)m : (T)0;
}
"""


def _finalize_grads_twin(partial, slices, m, channels, stats, training, ggamma, gbeta,
                         coefficients):
    dtype = stats.dtype.type
    inv_std, k = stats[2], stats[3]
    sum_gy = partial[..., 0].sum(axis=1).astype(dtype)
    gamma_grad = partial[..., 1].sum(axis=1).astype(dtype) * inv_std
    gbeta[...], ggamma[...] = sum_gy, gamma_grad
    coefficients[0] = k * sum_gy / dtype(m) if training else 0
    coefficients[1] = k * inv_std * gamma_grad / dtype(m) if training else 0


_GRAD_X = r"""
extern "C" __global__ void bn_grad_x(
        const T* gy, const long long gsn, const long long gsc, const T* x, const long long sn,
        const long long sc, const long long hw, const int channels, const long long total,
        const T* stats, const T* coefficients, T* gx) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const long long p = i % hw, nc = i / hw;
    const int c = (int)(nc % channels);
    const long long n = nc / channels;
    const T centred = x[n * sn + c * sc + p] - stats[c];
    gx[i] = (gy[n * gsn + c * gsc + p] * stats[3 * channels + c] - coefficients[c])
            - centred * coefficients[channels + c];
}
"""


def _grad_x_twin(gy, gsn, gsc, x, sn, sc, hw, channels, total, stats, coefficients, gx):
    c = int(channels)
    g = _channel_view(gy, int(hw), int(gsn), int(gsc), c)
    centred = _channel_view(x, int(hw), int(sn), int(sc), c) - stats[0][:, None]
    out = (g * stats[3][:, None] - coefficients[0][:, None]) - centred * coefficients[1][:, None]
    gx.reshape(-1, c, int(hw))[...] = out.reshape(c, -1, int(hw)).transpose(1, 0, 2)


KERNELS = {kernel.name: kernel for kernel in (
    backend.DeviceKernel("bn_partial_sums", _PARTIAL_SUMS, _partial_sums_twin),
    backend.DeviceKernel("bn_finalize_stats", _FINALIZE_STATS, _finalize_stats_twin),
    backend.DeviceKernel("bn_eval_stats", _EVAL_STATS, _eval_stats_twin),
    backend.DeviceKernel("bn_apply", _APPLY, _apply_twin),
    backend.DeviceKernel("bn_partial_grad_sums", _PARTIAL_GRAD_SUMS, _partial_grad_sums_twin),
    backend.DeviceKernel("bn_finalize_grads", _FINALIZE_GRADS, _finalize_grads_twin),
    backend.DeviceKernel("bn_grad_x", _GRAD_X, _grad_x_twin),
)}


# --- batch norm --------------------------------------------------------------------------------

def channel_sums(a):
    """Per-channel sums of a (N, C) or (N, C, H, W): rows of (N, C, H*W) summed, then over N."""
    if a.ndim == 2:
        return a.sum(axis=0)
    return as_batched_rows(a).sum(axis=2).sum(axis=0)


def _element_strides(a):
    """(a, H*W, sn, sc): a (N, C[, H, W]) array whose H*W values are dense (a copy otherwise),
    with its batch and channel strides in elements, as the batch-norm kernels index it."""
    hw = a.size // (a.shape[0] * a.shape[1]) if a.size else 1
    if a.ndim == 4 and not _dense_pixels(a):
        a = backend.xp(a).ascontiguousarray(a)
    return a, hw, a.strides[0] // a.itemsize, a.strides[1] // a.itemsize


def _dense_pixels(a):
    """True when a (N, C, H, W) holds each image's H*W values of a channel contiguously."""
    return a.strides[3] == a.itemsize and (a.shape[2] == 1 or a.strides[2] == a.shape[3] *
                                           a.itemsize)


def _slices(m):
    """(chunk, slices): a channel's m values split over this many blocks of the partial sums."""
    slices = max(1, min(64, m // _SLICE_TARGET))
    return -(-m // slices), slices


def _grid(count):
    return (-(-count // _BLOCK),)


class GpuBatchNorm(BatchNorm):
    """batch_norm in three kernels forward and three backward (CUDA, with NumPy twins above):

    forward   partial sums of x - x[0,c,0] and its squares (C x S blocks); per channel: mean,
              var, 1/std, gamma/std and the running statistics, in one kernel; then
              y = (x - mean) * (gamma/std) + beta.  Evaluation: 1/std and gamma/std from the
              running statistics, which are COPIED into the saved statistics (a later
              train-mode forward changes the buffers in place; the backward must not see it).
    backward  partial sums of gy and gy * (x - mean); per channel: dbeta, dgamma and the two
              coefficients; then dx = (gy * k - k dbeta/m) - (x - mean) * k dgamma/(std m),
              k = gamma/std (eval: dx = gy * k).
    Saved: x (the graph holds it anyway) and a (4, C) array of mean, var, 1/std, gamma/std.
    """

    def forward(self, x, gamma, beta):
        xp = backend.xp(x)
        x, hw, sn, sc = _element_strides(x)
        channels, m = x.shape[1], x.size // x.shape[1]
        gamma = xp.ascontiguousarray(gamma)
        stats = xp.empty((4, channels), dtype=x.dtype)
        if self.training:
            self._batch_stats(x, hw, sn, sc, gamma, stats)
        else:
            running = [xp.ascontiguousarray(v.astype(x.dtype, copy=False))
                       for v in (self.running_mean, self.running_var)]
            KERNELS["bn_eval_stats"](x.dtype, _grid(channels), (_BLOCK,), (
                *running, gamma, x.dtype.type(self.eps), np.int32(channels), stats))
        y = xp.empty(x.shape, dtype=x.dtype)
        KERNELS["bn_apply"](x.dtype, _grid(x.size), (_BLOCK,), (
            x, np.int64(hw), np.int64(sn), np.int64(sc), np.int32(channels), np.int64(x.size),
            stats, xp.ascontiguousarray(beta), y))
        self.x, self.stats, self.layout = x, stats, (hw, sn, sc)
        self.inv_std = stats[2]
        return y

    def _batch_stats(self, x, hw, sn, sc, gamma, stats):
        """stats = mean, var, 1/std, gamma/std of x's batch; running statistics updated."""
        channels, m = x.shape[1], x.size // x.shape[1]
        chunk, slices = _slices(m)
        partial = backend.xp(x).empty((channels, slices, 2), dtype=np.float64)
        KERNELS["bn_partial_sums"](x.dtype, (channels, slices), (_BLOCK,), (
            x, np.int64(hw), np.int64(m), np.int64(sn), np.int64(sc), np.int64(chunk),
            np.int32(slices), partial))
        in_kernel = self._running_in_kernel(x)
        dummy = stats[0]
        KERNELS["bn_finalize_stats"](x.dtype, _grid(channels), (_BLOCK,), (
            x, np.int64(sc), partial, np.int32(slices), np.int64(m), np.int32(channels), gamma,
            x.dtype.type(self.eps), x.dtype.type(self.momentum), x.dtype.type(m / (m - 1)),
            np.int32(in_kernel), self.running_mean if in_kernel else dummy,
            self.running_var if in_kernel else dummy, stats))
        if not in_kernel:  # buffers of another dtype or layout: the reference's vector update
            self._update_running(stats[0], stats[1], m)

    def _running_in_kernel(self, x):
        """True when both running buffers exist, in x's dtype and contiguous (the usual case)."""
        buffers = (self.running_mean, self.running_var)
        return all(b is not None and b.dtype == x.dtype and b.flags.c_contiguous
                   for b in buffers)

    def backward(self, gy):
        xp = backend.xp(gy)
        x, stats, (hw, sn, sc) = self.x, self.stats, self.layout
        gy, _, gsn, gsc = _element_strides(gy)
        channels, m = x.shape[1], x.size // x.shape[1]
        chunk, slices = _slices(m)
        partial = xp.empty((channels, slices, 2), dtype=np.float64)
        KERNELS["bn_partial_grad_sums"](x.dtype, (channels, slices), (_BLOCK,), (
            gy, np.int64(gsn), np.int64(gsc), x, np.int64(sn), np.int64(sc), np.int64(hw),
            np.int64(m), stats, np.int64(chunk), np.int32(slices), partial))
        sums = xp.empty((4, channels), dtype=x.dtype)  # dgamma, dbeta, the two coefficients
        KERNELS["bn_finalize_grads"](x.dtype, _grid(channels), (_BLOCK,), (
            partial, np.int32(slices), np.int64(m), np.int32(channels), stats,
            np.int32(self.training), sums[0], sums[1], sums[2:]))
        if not self.needs_input_grad[0]:
            return None, sums[0], sums[1]
        gx = xp.empty(x.shape, dtype=x.dtype)
        KERNELS["bn_grad_x"](x.dtype, _grid(x.size), (_BLOCK,), (
            gy, np.int64(gsn), np.int64(gsc), x, np.int64(sn), np.int64(sc), np.int64(hw),
            np.int32(channels), np.int64(x.size), stats, sums[2:], gx))
        return gx, sums[0], sums[1]


# --- the functional forms (minires.functional's signatures) -------------------------------------

def conv2d(x, w, b=None, stride=1, padding=0):
    """2-D convolution (cross-correlation) of x (N, C, H, W) with w (OC, C, kh, kw), bias b (OC,):
    the same function as `minires.ops.conv.conv2d`, in a few GPU kernels."""
    if b is None:
        return GpuConv2d(stride, padding, has_bias=False).apply(x, w)
    return GpuConv2d(stride, padding, has_bias=True).apply(x, w, b)


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training=True, momentum=0.1,
               eps=1e-5):
    """Batch norm of x (N, C) or (N, C, H, W): the same function as `minires.ops.norm.batch_norm`,
    on per-channel row sums, keeping no x-hat for the backward."""
    return GpuBatchNorm(_array(running_mean), _array(running_var), training, momentum,
                        eps).apply(x, gamma, beta)


__all__ = ["enabled", "conv2d", "batch_norm", "GpuConv2d", "GpuBatchNorm"]
