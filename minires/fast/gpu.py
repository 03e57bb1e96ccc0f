"""conv2d and batch_norm for CuPy arrays: few kernel launches, nothing big kept for the backward.

`ops/conv.py` and `ops/norm.py` hold the readable references (students write them; assignments
are cut from them). This module computes the same functions, with the same checks and error
messages (the classes below inherit them), written against the array module `backend.xp(x)`
only, so the tests run it on NumPy and the GPU runs it on CuPy unchanged.

The GPU is bound by kernel launches (CuPy costs about 10 us each from Python), so each op is a
few kernels: minires' own (backend.DeviceKernel: CUDA source compiled by NVRTC, with a NumPy twin
that the CPU tests and the CuPy stand-in run) and cuBLAS GEMMs.

    conv forward    cols = im2col(x), one kernel, padding on the fly    (C*kh*kw, N*OH*OW)
                    y    = W2 @ cols, one 2-D GEMM -> (OC, N*OH*OW), returned as an NCHW view
    conv backward   cols rebuilt (never kept: the reference keeps kh*kw copies of every input);
                    dW = gy2 @ cols^T and dcols = W2^T @ gy2, 2-D GEMMs with transpose flags
                    (no operand copied), dx = col2im(dcols), one gathering kernel
    batch norm      3 kernels forward (partial sums, per-channel statistics and running
                    statistics, apply) and 3 backward; reads x through its strides, so the
                    conv's channels-first output needs no copy; writes dx in x's layout
                    Saved: x (the graph holds it anyway) and (4, C) statistics; never x-hat.

Saved arrays are dropped by the autograd engine right after each backward (Function._release).

Off by default: nothing here has run on a GPU yet. Env MINIRES_GPU_FAST_OPS=1 turns it on
(`enabled()`); `minires.functional` picks it for CuPy arrays when it is on.
"""
import os

import numpy as np

from .. import backend
from ..ops.conv import Conv2d
from ..ops.norm import BatchNorm, _array
from ..optim import _flat

ENV_SWITCH = "MINIRES_GPU_FAST_OPS"


def enabled():
    """True when env MINIRES_GPU_FAST_OPS is 1/true/yes/on (default off: never run on a GPU)."""
    return os.environ.get(ENV_SWITCH, "0").strip().lower() in ("1", "true", "yes", "on")


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
// each thread's (a, b) summed over the block into out[0], out[1] (s1, s2: shared scratch)
__device__ void store_block_sums(double* s1, double* s2, double a, double b, double* out) {
    s1[threadIdx.x] = a;
    s2[threadIdx.x] = b;
    __syncthreads();
    block_sum_pair(s1, s2);
    if (threadIdx.x == 0) { out[0] = s1[0]; out[1] = s2[0]; }
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
    store_block_sums(s1, s2, a, b, partial + ((long long)c * slices + s) * 2);
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
    store_block_sums(s1, s2, a, b, partial + ((long long)c * slices + s) * 2);
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
        const T* stats, const T* coefficients, const long long osn, const long long osc, T* gx) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const long long p = i % hw, nc = i / hw;
    const int c = (int)(nc % channels);
    const long long n = nc / channels;
    const T centred = x[n * sn + c * sc + p] - stats[c];
    gx[n * osn + c * osc + p] = (gy[n * gsn + c * gsc + p] * stats[3 * channels + c]
                                 - coefficients[c]) - centred * coefficients[channels + c];
}
"""


def _grad_x_twin(gy, gsn, gsc, x, sn, sc, hw, channels, total, stats, coefficients, osn, osc,
                 gx):
    c = int(channels)
    g = _channel_view(gy, int(hw), int(gsn), int(gsc), c)
    centred = _channel_view(x, int(hw), int(sn), int(sc), c) - stats[0][:, None]
    out = (g * stats[3][:, None] - coefficients[0][:, None]) - centred * coefficients[1][:, None]
    n = int(total) // (c * int(hw))
    item = gx.itemsize
    target = np.lib.stride_tricks.as_strided(gx, (c, n, int(hw)),
                                             (int(osc) * item, int(osn) * item, item))
    target[...] = out.reshape(c, n, int(hw))


KERNELS = {kernel.name: kernel for kernel in (
    backend.DeviceKernel("bn_partial_sums", _PARTIAL_SUMS, _partial_sums_twin),
    backend.DeviceKernel("bn_finalize_stats", _FINALIZE_STATS, _finalize_stats_twin),
    backend.DeviceKernel("bn_eval_stats", _EVAL_STATS, _eval_stats_twin),
    backend.DeviceKernel("bn_apply", _APPLY, _apply_twin),
    backend.DeviceKernel("bn_partial_grad_sums", _PARTIAL_GRAD_SUMS, _partial_grad_sums_twin),
    backend.DeviceKernel("bn_finalize_grads", _FINALIZE_GRADS, _finalize_grads_twin),
    backend.DeviceKernel("bn_grad_x", _GRAD_X, _grad_x_twin),
)}


# --- conv2d: window kernels and 2-D GEMMs ---------------------------------------------------------
#
# The columns are ONE (K, N*P) matrix, K = C*kh*kw, P = OH*OW:
#     cols[(c, i, j), (n, oy, ox)] = x[n, c, sy*oy - py + i, sx*ox - px + j]   (0 outside x)
# so every product is a 2-D GEMM with cuBLAS transpose flags (CuPy copies no operand of a 2-D dot,
# while its batched matmul copies every operand that is not C-contiguous, and a 2-D weight times
# 3-D columns costs 3 pointer-table kernels more):
#     forward   y2 = W2 @ cols                  (OC, K) @ (K, N*P) -> (OC, N*P)
#               y  = y2 seen as (N, OC, OH, OW): a channels-first view, no copy
#     backward  gy2 = gy as (OC, N*P): a view when gy is channels-first (batch norm's backward
#               writes its dx in its input's layout, so a conv followed by batch norm gets it so)
#               dW2 = gy2 @ cols^T,   gcols = W2^T @ gy2,   dx = col2im(gcols)
# im2col pads on the fly (no padded copy of x) and col2im gathers, for each input pixel, the
# columns that read it (no atomics, no zeroed buffer): one kernel each.

_IM2COL = r"""
extern "C" __global__ void im2col(
        const T* x, const int channels, const int height, const int width,
        const long long sn, const long long sc, const long long sh, const long long sw,
        const int kh, const int kw, const int sy, const int sx, const int py, const int px,
        const int oh, const int ow, const long long columns, const long long total, T* cols) {
    const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= total) return;
    const long long k = e / columns, q = e - k * columns;
    const int j = (int)(k % kw), i = (int)((k / kw) % kh), c = (int)(k / ((long long)kw * kh));
    const long long n = q / ((long long)oh * ow);
    const int r = (int)(q - n * oh * ow), oy = r / ow, ox = r - oy * ow;
    const int h = sy * oy - py + i, w = sx * ox - px + j;
    cols[e] = (h >= 0 && h < height && w >= 0 && w < width)
        ? x[n * sn + c * sc + h * sh + w * sw] : (T)0;
}
"""


def _im2col_twin(x, channels, height, width, sn, sc, sh, sw, kh, kw, sy, sx, py, px, oh, ow,
                 columns, total, cols):
    n = int(columns) // (int(oh) * int(ow))
    item = x.itemsize
    image = np.lib.stride_tricks.as_strided(
        x, (n, int(channels), int(height), int(width)),
        (int(sn) * item, int(sc) * item, int(sh) * item, int(sw) * item))
    padded = np.zeros((n, int(channels), int(height) + 2 * int(py), int(width) + 2 * int(px)),
                      dtype=x.dtype)
    padded[:, :, int(py):int(py) + int(height), int(px):int(px) + int(width)] = image
    pn, pc, ph, pw = padded.strides
    windows = np.lib.stride_tricks.as_strided(
        padded, (int(channels), int(kh), int(kw), n, int(oh), int(ow)),
        (pc, ph, pw, pn, int(sy) * ph, int(sx) * pw))
    cols[...] = windows.reshape(cols.shape)


_COL2IM = r"""
extern "C" __global__ void col2im(
        const T* gcols, const int channels, const int height, const int width,
        const int kh, const int kw, const int sy, const int sx, const int py, const int px,
        const int oh, const int ow, const long long columns, const long long total, T* gx) {
    const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= total) return;
    const int w = (int)(e % width), h = (int)((e / width) % height);
    const int c = (int)((e / ((long long)width * height)) % channels);
    const long long n = e / ((long long)width * height * channels);
    T sum = (T)0;
    for (int i = 0; i < kh; ++i) {
        const int y = h + py - i;
        if (y < 0 || y % sy != 0 || y / sy >= oh) continue;
        for (int j = 0; j < kw; ++j) {
            const int x = w + px - j;
            if (x < 0 || x % sx != 0 || x / sx >= ow) continue;
            const long long k = ((long long)c * kh + i) * kw + j;
            sum += gcols[k * columns + n * oh * ow + (long long)(y / sy) * ow + x / sx];
        }
    }
    gx[e] = sum;
}
"""


def _col2im_twin(gcols, channels, height, width, kh, kw, sy, sx, py, px, oh, ow, columns, total,
                 gx):
    c, kh, kw, oh, ow = int(channels), int(kh), int(kw), int(oh), int(ow)
    n = int(columns) // (oh * ow)
    (sy, sx), (py, px), h, w = (int(sy), int(sx)), (int(py), int(px)), int(height), int(width)
    windows = gcols.reshape(c, kh, kw, n, oh, ow)
    padded = np.zeros((n, c, h + 2 * py, w + 2 * px), dtype=gcols.dtype)
    for i in range(kh):  # kernel offsets only, as the reference col2im
        for j in range(kw):
            padded[:, :, i:i + sy * oh:sy, j:j + sx * ow:sx] += windows[:, i, j].transpose(
                1, 0, 2, 3)
    gx[...] = padded[:, :, py:py + h, px:px + w]


KERNELS.update({kernel.name: kernel for kernel in (
    backend.DeviceKernel("im2col", _IM2COL, _im2col_twin),
    backend.DeviceKernel("col2im", _COL2IM, _col2im_twin),
)})


def _output_size(x_shape, kernel, stride, padding):
    return tuple((x_shape[2 + a] + 2 * padding[a] - kernel[a]) // stride[a] + 1 for a in (0, 1))


def window_cols(x, kernel, stride, padding):
    """x (N, C, H, W), any strides -> cols (C*kh*kw, N*OH*OW), in one kernel (see above)."""
    n, channels, height, width = x.shape
    (kh, kw), (sy, sx), (py, px) = kernel, stride, padding
    oh, ow = _output_size(x.shape, kernel, stride, padding)
    columns = n * oh * ow
    cols = backend.xp(x).empty((channels * kh * kw, columns), dtype=x.dtype)
    sn, sc, sh, sw = (s // x.itemsize for s in x.strides)
    KERNELS["im2col"](x.dtype, _grid(cols.size), (_BLOCK,), (
        x, *(np.int32(v) for v in (channels, height, width)),
        *(np.int64(v) for v in (sn, sc, sh, sw)),
        *(np.int32(v) for v in (kh, kw, sy, sx, py, px, oh, ow)),
        np.int64(columns), np.int64(cols.size), cols))
    return cols


def col2im(gcols, x_shape, kernel, stride, padding):
    """The adjoint of `window_cols`: (C*kh*kw, N*OH*OW) -> (N, C, H, W), overlaps added."""
    n, channels, height, width = x_shape
    (kh, kw), (sy, sx), (py, px) = kernel, stride, padding
    oh, ow = _output_size(x_shape, kernel, stride, padding)
    gx = backend.xp(gcols).empty(x_shape, dtype=gcols.dtype)
    KERNELS["col2im"](gcols.dtype, _grid(gx.size), (_BLOCK,), (
        gcols, *(np.int32(v) for v in (channels, height, width, kh, kw, sy, sx, py, px, oh, ow)),
        np.int64(n * oh * ow), np.int64(gx.size), gx))
    return gx


def channels_first_rows(a):
    """(N, C, H, W) -> (C, N*H*W): a view when a's memory is channels-first, else one copy."""
    rows = a.transpose(1, 0, 2, 3)
    return backend.xp(a).ascontiguousarray(rows).reshape(a.shape[1], -1)


class GpuConv2d(Conv2d):
    """conv2d as 2-D GEMMs on one (K, N*P) column matrix; columns rebuilt, never saved."""

    def forward(self, x, w, b=None):
        self.x, self.w = x, w  # x: the graph holds it anyway
        self.gw_slot = _flat.claim_grad_slot(w, self)  # a fused optimizer's gradient slot
        n, out_channels = x.shape[0], w.shape[0]
        cols = window_cols(x, self.kernel, self.stride, self.padding)     # (K, N*P)
        y2 = backend.xp(x).dot(w.reshape(out_channels, -1), cols)          # (OC, N*P)
        oh, ow = _output_size(x.shape, self.kernel, self.stride, self.padding)
        y = y2.reshape(out_channels, n, oh, ow).transpose(1, 0, 2, 3)     # a view
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        return y

    def backward(self, gy):
        xp = backend.xp(gy)
        x, w = self.x, self.w
        out_channels = w.shape[0]
        gy2 = channels_first_rows(gy)                                      # (OC, N*P)
        w2 = w.reshape(out_channels, -1)                                    # (OC, K)
        gw = None
        if self.needs_input_grad[1]:
            cols = window_cols(x, self.kernel, self.stride, self.padding)
            slot = _flat.grad_slot_view(self.gw_slot, self)
            gw = xp.dot(gy2, cols.T, out=None if slot is None else slot.reshape(out_channels, -1))
            gw = gw.reshape(w.shape) if slot is None else slot  # the slot itself: found in place
            del cols
        gx = None
        if self.needs_input_grad[0]:
            gx = col2im(xp.dot(w2.T, gy2), x.shape, self.kernel, self.stride, self.padding)
        if not self.has_bias:
            return gx, gw
        return gx, gw, gy2.sum(axis=1)


# --- batch norm --------------------------------------------------------------------------------

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


def _empty_in_layout_of(x):
    """An empty array shaped like x: channels-first memory when x's is (a conv's output, so the
    conv's backward reads dx as its gy without a copy), NCHW otherwise."""
    xp = backend.xp(x)
    if x.ndim == 4 and x.strides[1] > x.strides[0]:
        n, c, h, w = x.shape
        return xp.empty((c, n, h, w), dtype=x.dtype).transpose(1, 0, 2, 3)
    return xp.empty(x.shape, dtype=x.dtype)


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
        gamma_in, beta_in = gamma, beta
        x, hw, sn, sc = _element_strides(x)
        channels = x.shape[1]
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
        self.slots = [_flat.claim_grad_slot(v, self) for v in (gamma_in, beta_in)]
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
        ggamma, gbeta = (_flat.grad_slot_view(slot, self) for slot in self.slots)
        ggamma = sums[0] if ggamma is None else ggamma
        gbeta = sums[1] if gbeta is None else gbeta
        KERNELS["bn_finalize_grads"](x.dtype, _grid(channels), (_BLOCK,), (
            partial, np.int32(slices), np.int64(m), np.int32(channels), stats,
            np.int32(self.training), ggamma, gbeta, sums[2:]))
        if not self.needs_input_grad[0]:
            return None, ggamma, gbeta
        gx = _empty_in_layout_of(x)
        KERNELS["bn_grad_x"](x.dtype, _grid(x.size), (_BLOCK,), (
            gy, np.int64(gsn), np.int64(gsc), x, np.int64(sn), np.int64(sc), np.int64(hw),
            np.int32(channels), np.int64(x.size), stats, sums[2:],
            np.int64(gx.strides[0] // gx.itemsize), np.int64(gx.strides[1] // gx.itemsize), gx))
        return gx, ggamma, gbeta


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
