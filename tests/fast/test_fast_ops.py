"""The ops minires trains with (fast/conv.py, fast/norm.py) against the readable references
(ops/conv.py, ops/norm.py), forward and every gradient, on the cases that take their other code
paths: stride 1 (both gradients from the cols of gy), stride 2 (cols of x and col2im), padding
larger than kernel - 1 (col2im at stride 1), no gradient for x (the first layer), several chunks
of the batch, one thread or several, and inputs in either memory layout (NCHW-contiguous, or the
channels-last views the fast ops return).

Gradchecks and PyTorch comparisons of both implementations are in test_gradcheck_ops.py and
test_torch_oracle.py; this file pins the two to each other, to 1e-12 in float64.
CPU-only by nature (on CuPy arrays the references run): every tensor here is made on "cpu", so
the file means the same under MINIRES_DEVICE=cuda.
"""
import threading
import time

import numpy as np
import pytest

import minires
from minires.ops import conv as reference_conv
from minires.fast import conv as fast_conv
from minires.fast import gemm as fast_gemm
from minires.fast import norm as fast_norm
from minires.fast import threads as fast_threads
from minires.ops import norm as reference_norm
from helpers import make

pytestmark = pytest.mark.cpu_only  # the CPU speed layer: see conftest.py

CONV_CASES = [  # (x shape, w shape, stride, padding, bias)
    ((4, 3, 8, 8), (5, 3, 3, 3), 1, 1, True),        # stride 1: dx as a convolution of gy
    ((4, 3, 9, 9), (5, 3, 3, 3), 2, 1, False),       # stride 2: col2im, kernel offset by offset
    ((3, 2, 7, 6), (4, 2, 3, 2), (2, 1), (1, 0), True),
    ((2, 4, 6, 6), (6, 4, 1, 1), 2, 0, False),       # option-B projection shortcut
    ((2, 2, 5, 5), (3, 2, 2, 2), 1, 2, True),        # padding > kernel - 1: col2im at stride 1
    ((2, 3, 6, 7), (4, 3, 3, 2), 1, (1, 0), False),  # stride 1, kh != kw: dW from the flipped gcols
    ((2, 4, 5, 5), (3, 4, 1, 1), 1, 0, True),        # 1x1, stride 1: gcols are gy itself
]


def conv_both(x, w, b, stride, padding, wants_x_grad=True):
    """Forward and gradients of the fast and the reference conv2d under one upstream gradient."""
    results = []
    for conv2d in (fast_conv.conv2d, reference_conv.conv2d):
        xt, wt = make(x, "cpu", requires_grad=wants_x_grad), make(w, "cpu", requires_grad=True)
        bt = None if b is None else make(b, "cpu", requires_grad=True)
        y = conv2d(xt, wt, bt, stride=stride, padding=padding)
        upstream = np.random.default_rng(1).standard_normal(y.shape)
        (y * minires.tensor(upstream, device="cpu")).sum().backward()
        grads = [None if t is None or t.grad is None else t.grad.numpy() for t in (xt, wt, bt)]
        results.append((y.numpy(), grads))
    return results


def assert_same(fast, reference):
    (y_fast, grads_fast), (y_ref, grads_ref) = fast, reference
    np.testing.assert_allclose(y_fast, y_ref, rtol=1e-12, atol=1e-12)
    for name, got, want in zip(("x", "w", "b"), grads_fast, grads_ref):
        assert (got is None) == (want is None), f"grad of {name}: {got is None} vs {want is None}"
        if got is not None:
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=f"grad of {name}")


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, bias", CONV_CASES)
def test_fast_conv2d_matches_the_reference(rng, x_shape, w_shape, stride, padding, bias):
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0]) if bias else None
    assert_same(*conv_both(x, w, b, stride, padding))


def test_fast_conv2d_without_a_gradient_for_x(rng):
    """The first layer: the image needs no gradient, so the op skips dx altogether."""
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    fast, reference = conv_both(x, w, None, 1, 1, wants_x_grad=False)
    assert fast[1][0] is None
    assert_same(fast, reference)


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_run_chunks_runs_each_chunk_once_in_order_of_results(monkeypatch, threads):
    """Results come back in the chunks' order, whichever thread ran each; the caller works too."""
    monkeypatch.setenv("MINIRES_NUM_THREADS", threads)
    ran_in = []

    def square(k):
        ran_in.append(threading.get_ident())
        deadline = time.monotonic() + 10  # each chunk waits for every thread to take one
        while len(set(ran_in)) < int(threads) and time.monotonic() < deadline:
            time.sleep(0.001)
        return k * k
    assert fast_threads.run_chunks(square, list(range(50))) == [k * k for k in range(50)]
    assert len(ran_in) == 50 and threading.get_ident() in ran_in
    assert len(set(ran_in)) == int(threads)


def test_run_chunks_raises_what_a_chunk_raised(monkeypatch):
    monkeypatch.setenv("MINIRES_NUM_THREADS", "2")

    def fail_on_7(k):
        if k == 7:
            raise ValueError("chunk 7")
        return k
    with pytest.raises(ValueError, match="chunk 7"):
        fast_threads.run_chunks(fail_on_7, list(range(20)))


@pytest.mark.parametrize("pieces", [True, False], ids=["pieces", "one-call"])
@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_fast_conv2d_in_many_chunks_and_threads(rng, monkeypatch, threads, pieces):
    """A workspace of one image per chunk: seven chunks of a batch of 7 on 1-3 threads, summed in
    any order, with the products as pieces of 2 rows, or as one call (a wide product)."""
    monkeypatch.setattr(fast_conv, "WORKSPACE_BYTES", 1)
    monkeypatch.setattr(fast_gemm, "MIN_PIECE_ROWS", 0 if pieces else 10**9)
    monkeypatch.setattr(fast_gemm, "SINGLE_THREAD_MNK", 2 * 27 * 4)  # pieces of 2 rows (or 1)
    monkeypatch.setenv("MINIRES_NUM_THREADS", threads)
    assert len(fast_conv.batch_chunks(7, 1000)) == 7
    x, w = rng.standard_normal((7, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    for stride in (1, 2):
        assert_same(*conv_both(x, w, rng.standard_normal(4), stride, 1))


def test_products_in_this_thread_equal_numpys(rng, monkeypatch):
    """Pieces with a remainder, b's columns a group at a time: the same products as NumPy's."""
    monkeypatch.setattr(fast_gemm, "SINGLE_THREAD_MNK", 7 * 6 * 5)  # pieces of 7 rows
    monkeypatch.setattr(fast_gemm, "MIN_PIECE_ROWS", 1)
    a, b, c = (rng.standard_normal(s) for s in ((45, 6), (6, 5), (45, 10)))
    out = np.full((45, 5), np.nan)
    np.testing.assert_allclose(fast_gemm.matmul(a, b, out), a @ b, rtol=1e-13)
    assert out is not None and np.isfinite(out).all()
    for columns in (None, 5, 2):
        np.testing.assert_allclose(fast_gemm.matmul_tn(a, c, columns), a.T @ c, rtol=1e-12)
    with pytest.raises(ValueError, match=r"out \(45, 5\) must be C-contiguous"):
        fast_gemm.matmul(a, b, np.empty((5, 45)).T)  # pieces are views of out


def test_pieces_stay_under_openblas_single_thread_line():
    """Each piece has M*N*K <= SINGLE_THREAD_MNK, and one more row would cross it; products whose
    pieces would have fewer than MIN_PIECE_ROWS rows are one call (0): every CIFAR conv, up to
    64 channels, goes in pieces (of 14 rows or more), the 128-channel convs of the ImageNet nets
    (3 rows) do not."""
    for m, n in [(144, 16), (16, 16), (288, 32), (27, 16), (576, 64)]:
        per = fast_gemm.rows_per_piece(m, n)
        assert per * m * n <= fast_gemm.SINGLE_THREAD_MNK < (per + 1) * m * n
    assert fast_gemm.SINGLE_THREAD_MNK == 524287
    assert fast_gemm.rows_per_piece(576, 64) == 14
    assert fast_gemm.rows_per_piece(1152, 128) == 0


def test_batch_chunks_are_equal_and_within_the_workspace(monkeypatch):
    """At most WORKSPACE_BYTES per chunk, sizes within one image, as few chunks as that allows."""
    monkeypatch.setattr(fast_conv, "WORKSPACE_BYTES", 7 * 1000)  # 7 images of 1000 bytes
    chunks = fast_conv.batch_chunks(128, 1000)
    sizes = [part.stop - part.start for part in chunks]
    assert chunks[0].start == 0 and chunks[-1].stop == 128
    assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:]))
    assert max(sizes) <= 7 and max(sizes) - min(sizes) <= 1
    assert len(chunks) == -(-128 // 7)


@pytest.mark.parametrize("padding", [(1, 1), (2, 1), (0, 3)])
def test_pad_channels_last_is_np_pad(rng, padding):
    """The border is written as zeros even where the new array's memory held other numbers."""
    x = rng.standard_normal((2, 3, 4, 5)).transpose(0, 2, 3, 1)       # (N, H, W, C), strided
    (py, px), shape = padding, (2, 4 + 2 * padding[0], 5 + 2 * padding[1], 3)
    np.full(shape, np.nan)  # made and freed just before: malloc tends to hand its bytes out again
    np.testing.assert_array_equal(fast_conv.pad_channels_last(x, padding),
                                  np.pad(x, ((0, 0), (py, py), (px, px), (0, 0))))


def test_fast_conv2d_backward_at_stride_1_copies_only_gy(rng, monkeypatch):
    """At stride 1 both gradients come from the cols of gy: the backward makes no cols of x."""
    copied_channels, im2col = [], fast_conv.im2col_channels_last

    def counting_im2col(x_nhwc, *args):
        copied_channels.append(x_nhwc.shape[-1])
        return im2col(x_nhwc, *args)
    x = make(rng.standard_normal((2, 3, 6, 6)), "cpu", requires_grad=True)
    y = fast_conv.conv2d(x, make(rng.standard_normal((5, 3, 3, 3)), "cpu", requires_grad=True),
                         padding=1)
    monkeypatch.setattr(fast_conv, "im2col_channels_last", counting_im2col)
    y.sum().backward()
    assert copied_channels and set(copied_channels) == {5}  # gy's 5 channels, never x's 3


def test_fast_conv2d_reads_a_channels_last_input_and_returns_one(rng):
    """y is an NCHW view of channels-last memory; fed to the next conv it is read without a copy
    and gives the same numbers as a contiguous copy of it."""
    x, w1, w2 = (rng.standard_normal(s) for s in ((2, 3, 5, 5), (4, 3, 3, 3), (6, 4, 3, 3)))
    y1 = fast_conv.conv2d(make(x, "cpu"), make(w1, "cpu"), padding=1)
    assert y1.shape == (2, 4, 5, 5) and y1.data.transpose(0, 2, 3, 1).flags.c_contiguous
    contiguous = make(np.ascontiguousarray(y1.numpy()), "cpu")
    np.testing.assert_allclose(fast_conv.conv2d(y1, make(w2, "cpu"), padding=1).numpy(),
                               reference_conv.conv2d(contiguous, make(w2, "cpu"), padding=1).numpy(),
                               rtol=1e-12, atol=1e-12)


def test_fast_conv2d_keeps_the_reference_errors(rng):
    x, w = make(rng.standard_normal((2, 4, 8, 8)), "cpu"), make(rng.standard_normal((5, 3, 3, 3)), "cpu")
    with pytest.raises(ValueError, match=r"conv2d: x has 4 channels, w expects 3"):
        fast_conv.conv2d(x, w)


def batch_norm_both(x, training, layout):
    """Output, gradients and running statistics of the fast and the reference batch_norm."""
    rng = np.random.default_rng(2)
    channels = x.shape[1]
    gamma, beta = rng.uniform(0.5, 2, channels), rng.standard_normal(channels)
    upstream = rng.standard_normal(x.shape)
    results = []
    for batch_norm in (fast_norm.batch_norm, reference_norm.batch_norm):
        running_mean, running_var = np.linspace(-1, 1, channels), np.linspace(0.5, 2, channels)
        xt = make(layout(x), "cpu", requires_grad=True)
        gt, bt = make(gamma, "cpu", requires_grad=True), make(beta, "cpu", requires_grad=True)
        y = batch_norm(xt, gt, bt, running_mean, running_var, training=training, momentum=0.3)
        (y * minires.tensor(upstream, device="cpu")).sum().backward()
        results.append([y.numpy(), xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy(),
                        running_mean, running_var])
    return results


def nchw(x):
    return x


def channels_last(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if x.ndim == 4 else x


@pytest.mark.parametrize("layout", [nchw, channels_last])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("x_shape", [(5, 3), (3, 4, 5, 7), (16, 16, 8, 8)],
                         ids=["2d", "odd-4d", "wide-rows-4d"])
def test_fast_batch_norm_matches_the_reference(rng, layout, training, x_shape):
    """(16, 16, 8, 8) takes the wide-row path (1024 rows read 64 at a time) across several threads;
    the odd shape has no row grouping (gcd(105, 64) = 1)."""
    x = rng.standard_normal(x_shape) * 2 + 1
    fast, reference = batch_norm_both(x, training, layout)
    for name, got, want in zip(("y", "dx", "dgamma", "dbeta", "running_mean", "running_var"),
                               fast, reference):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("threads", ["1", "2"])
def test_fast_batch_norm_backward_in_small_blocks(rng, monkeypatch, training, threads):
    """Blocks of 3 rows of 16 float64 channels; 64*8*8 = 4096 rows give each thread's part a
    last block shorter than the others (4096 = 3*1365 + 1 on one thread: a last block of ONE
    row; 2048 = 3*682 + 2 on each of two)."""
    monkeypatch.setattr(fast_norm, "BLOCK_BYTES", 3 * 16 * 8)       # 3 rows
    monkeypatch.setenv("MINIRES_NUM_THREADS", threads)
    parts = fast_norm.parts(np.empty((4096, 16)))
    per_thread = [fast_norm.blocks(part, 16 * 8) for part in parts]
    assert [b[-1].stop - b[-1].start for b in per_thread] == ([1] if threads == "1" else [2, 2])
    assert all(a.stop == b.start for bs in per_thread for a, b in zip(bs, bs[1:]))
    fast, reference = batch_norm_both(rng.standard_normal((64, 16, 8, 8)), training, channels_last)
    for name, got, want in zip(("y", "dx", "dgamma", "dbeta"), fast, reference):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("rows", [1, 2, 7, 8, 9], ids=lambda r: f"{r}-rows")
def test_blocks_cover_a_part_exactly_down_to_a_last_block_of_one_row(rows):
    """Blocks of 4 rows over parts of any length: consecutive, no row twice, none left out."""
    for start in (0, 5):
        part = slice(start, start + rows)
        got = fast_norm.blocks(part, row_bytes=fast_norm.BLOCK_BYTES // 4)
        covered = [r for s in got for r in range(s.start, s.stop)]
        assert covered == list(range(part.start, part.stop))
        assert all(0 < s.stop - s.start <= 4 for s in got)


def test_eval_batch_norm_keeps_its_own_copy_of_the_running_statistics(rng):
    """A forward in eval mode saves the running mean and variance it used: a train-mode forward
    that updates those buffers in place before the first one's backward changes nothing there."""
    x = rng.standard_normal((4, 3, 2, 2))
    results = []
    for later_forward in (False, True):
        mean, var = np.zeros(3), np.ones(3)
        xt = make(x, "cpu", requires_grad=True)
        gamma, beta = make(np.ones(3), "cpu", requires_grad=True), make(np.zeros(3), "cpu")
        y = fast_norm.batch_norm(xt, gamma, beta, mean, var, training=False)
        if later_forward:
            fast_norm.batch_norm(make(x * 5 + 3, "cpu"), gamma, beta, mean, var, training=True)
            assert not np.allclose(mean, 0)
        (y * y).sum().backward()
        results.append((xt.grad.numpy(), gamma.grad.numpy()))
    for got, want in zip(results[1], results[0]):
        np.testing.assert_array_equal(got, want)


def test_fast_batch_norm_keeps_the_reference_errors(rng):
    x = make(rng.standard_normal((2, 4, 3, 3)), "cpu")
    with pytest.raises(ValueError, match=r"batch_norm: x has 4 channels but gamma has shape \(3,\)"):
        fast_norm.batch_norm(x, make(np.ones(3), "cpu"), make(np.zeros(4), "cpu"))


# --- awkward inputs: float16, a constant channel, a large mean, empty and non-integer sizes --------

def batch_norm_grads(batch_norm, x, upstream, gamma=None):
    channels = x.shape[1]
    xt = make(x, "cpu", requires_grad=True)
    gt = make(np.ones(channels, x.dtype) if gamma is None else gamma, "cpu", requires_grad=True)
    bt = make(np.zeros(channels, x.dtype), "cpu", requires_grad=True)
    y = batch_norm(xt, gt, bt)
    (y * minires.tensor(upstream)).sum().backward()
    return y.numpy(), xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


def test_fast_batch_norm_of_float16_is_computed_in_float32(rng):
    """float16 with mean 3 gave all-NaN output: a channel's sum, 3 * 32768, is past float16's
    largest number (65504)."""
    x = rng.standard_normal((128, 4, 16, 16)) + 3
    upstream = rng.standard_normal(x.shape).astype(np.float16)
    half = batch_norm_grads(fast_norm.batch_norm, x.astype(np.float16), upstream)
    single = batch_norm_grads(reference_norm.batch_norm, x.astype(np.float16).astype(np.float32),
                              upstream.astype(np.float32))
    for name, got, want in zip(("y", "dx", "dgamma", "dbeta"), half, single):
        assert got.dtype == np.float16, name
        np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-2, atol=2e-2,
                                   err_msg=name)


def test_fast_conv2d_of_float16_is_computed_in_float32(rng):
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    halves = [make(a.astype(np.float16), "cpu", requires_grad=True) for a in (x, w)]
    y = fast_conv.conv2d(*halves, padding=1)
    y.sum().backward()
    singles = [make(a.astype(np.float16).astype(np.float32), "cpu", requires_grad=True)
               for a in (x, w)]
    want = reference_conv.conv2d(*singles, padding=1)
    want.sum().backward()
    assert y.dtype == np.float16 and halves[0].grad.dtype == np.float16
    np.testing.assert_allclose(y.numpy(), want.numpy(), rtol=1e-2, atol=1e-2)
    for half, single in zip(halves, singles):
        np.testing.assert_allclose(half.grad.numpy(), single.grad.numpy(), rtol=1e-2, atol=5e-2)


def test_a_constant_channel_gets_dgamma_exactly_zero(rng):
    """xhat is 0 on a constant channel, so dgamma = sum(gy * xhat) is exactly 0 (the fast op gave
    1264.9 when it summed gy * x and subtracted mean * sum(gy)). Its two-pass mean is exact here;
    the reference's one-pass mean of 3.7 is off by an ulp, which 1/sqrt(eps) magnifies a little."""
    x = rng.standard_normal((16, 3, 4, 4)).astype(np.float32)
    x[:, 1] = 3.7
    upstream = rng.standard_normal(x.shape).astype(np.float32)
    y, _, dgamma, _ = batch_norm_grads(fast_norm.batch_norm, x, upstream)
    assert dgamma[1] == 0.0
    np.testing.assert_array_equal(y[:, 1], 0.0)
    _, _, reference_dgamma, _ = batch_norm_grads(reference_norm.batch_norm, x, upstream)
    assert abs(reference_dgamma[1]) < 1e-3


def test_fast_batch_norm_at_a_large_mean_offset_in_float32(rng):
    """Mean 1e4, standard deviation 1, float32: both ops within 1e-3 of float64 arithmetic."""
    x = (rng.standard_normal((64, 8, 8, 8)) + 1e4).astype(np.float32)
    upstream = rng.standard_normal(x.shape).astype(np.float32)
    gamma = rng.uniform(0.5, 2, 8).astype(np.float32)
    exact = batch_norm_grads(reference_norm.batch_norm, x.astype(np.float64),
                             upstream.astype(np.float64), gamma.astype(np.float64))
    for batch_norm in (fast_norm.batch_norm, reference_norm.batch_norm):
        got = batch_norm_grads(batch_norm, x, upstream, gamma)
        for name, g, want in zip(("y", "dx", "dgamma", "dbeta"), got, exact):
            scale = np.abs(want).max()
            assert np.abs(g - want).max() <= 1e-3 * max(scale, 1), (batch_norm.__module__, name)


@pytest.mark.parametrize("conv2d", [fast_conv.conv2d, reference_conv.conv2d],
                         ids=["fast", "reference"])
@pytest.mark.parametrize("x_shape, w_shape, what", [
    ((0, 3, 5, 5), (4, 3, 3, 3), r"the batch \(N\) is empty"),
    ((2, 0, 5, 5), (4, 0, 3, 3), r"the input channels \(C\) is empty"),
    ((2, 3, 5, 5), (0, 3, 3, 3), r"the output channels \(OC\) is empty"),
    ((2, 3, 5, 5), (4, 3, 0, 3), r"kernel \(0, 3\) and stride"),
], ids=["N=0", "C=0", "OC=0", "kernel-0"])
def test_conv2d_names_empty_inputs(conv2d, x_shape, w_shape, what):
    with pytest.raises(ValueError, match="conv2d: " + what):
        conv2d(make(np.ones(x_shape), "cpu"), make(np.ones(w_shape), "cpu"), padding=1)


@pytest.mark.parametrize("conv2d", [fast_conv.conv2d, reference_conv.conv2d],
                         ids=["fast", "reference"])
@pytest.mark.parametrize("stride", [1.5, (2, 1.5), 2.0])
def test_conv2d_refuses_non_integer_strides(conv2d, stride):
    """1.5 used to run as stride 1; a float, even 2.0, is refused rather than guessed at."""
    x, w = make(np.ones((1, 1, 6, 6)), "cpu"), make(np.ones((1, 1, 3, 3)), "cpu")
    with pytest.raises(TypeError, match=r"conv2d: stride must be an int or a pair of ints"):
        conv2d(x, w, stride=stride)


def test_nn_conv2d_refuses_a_zero_kernel_or_no_channels():
    from minires import nn
    with pytest.raises(ValueError, match=r"Conv2d: .*kernel_size \(0, 0\)"):
        nn.Conv2d(3, 4, 0)
    with pytest.raises(ValueError, match=r"Conv2d: in_channels 0"):
        nn.Conv2d(0, 4, 3)
    with pytest.raises(TypeError, match=r"Conv2d: kernel_size must be an int"):
        nn.Conv2d(3, 4, 1.5)


@pytest.mark.parametrize("batch_norm", [fast_norm.batch_norm, reference_norm.batch_norm],
                         ids=["fast", "reference"])
def test_batch_norm_names_an_empty_batch(batch_norm):
    x = make(np.ones((0, 3, 4, 4)), "cpu")
    with pytest.raises(ValueError, match=r"batch_norm: the batch is empty"):
        batch_norm(x, make(np.ones(3), "cpu"), make(np.zeros(3), "cpu"), np.zeros(3), np.ones(3),
                   training=False)
