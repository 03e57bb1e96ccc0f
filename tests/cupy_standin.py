"""A CPU stand-in for CuPy, for the test suite only: the `cuda` device when no GPU answers.

Every test that takes the `device` fixture runs its "cuda" variant on every CI run. minires cannot
tell this module from CuPy (it only ever asks `backend` for the array module and the array type),
so device plumbing is tested everywhere and only real kernels, timing and memory need a GPU.

What it keeps from CuPy, because device bugs hide in exactly these differences from NumPy:
- `ndarray` is its own type, not a numpy.ndarray subclass: `np.asarray(a)` raises TypeError
  ("Implicit conversion to a NumPy array is not allowed"), as CuPy's does; `a.get()`,
  `asnumpy(a)` copy to the host and `asarray(host_array)` copies to the "device";
- an op that mixes it with a numpy.ndarray raises TypeError ("Unsupported type"), whichever side
  the NumPy array is on, in operators, ufuncs, module functions and assignments (`a[...] = host`
  is refused: `a.set(host)` is the explicit copy); a list operand is refused the same way;
- only CuPy's own names: the module offers the functions in `WORK` (below) and NumPy's dtypes and
  constants, nothing else, and NumPy functions CuPy lacks raise TypeError on device arrays;
- no floating-point warnings: a GPU computes inf and NaN silently, so the stand-in does too;
- reductions and integer indexing return 0-d arrays, never NumPy scalars;
- an out-of-range integer-array index wraps around instead of raising (CuPy's documented
  difference from NumPy), so bounds checks must not rely on the array module;
- device memory is held while any view of it lives (CuPy's views keep their memory alive), and a
  memory pool with `used_bytes`, `set_limit(size=...)` or `set_limit(fraction=...)` (of the
  stand-in's DEVICE_BYTES) and `cuda.memory.OutOfMemoryError` (raised, with CuPy's message,
  past the limit);
- `cupyx.scatter_add`, a `random` generator, `cuda.Stream.null.synchronize`,
  `cuda.runtime.getDeviceCount` (1).
The numbers are NumPy's. CuPy's ElementwiseKernel and RawKernel do not exist here (an
AttributeError); minires' own kernels (backend.DeviceKernel) run their NumPy twins through
`launch_twin`, counted as one launch each.

The ledger: what CuPy 14 asks of the GPU for each call
------------------------------------------------------
Every call is charged to `ledger` (and to any `counting()` ledger open) as the CUDA work CuPy 14.x
does for it; `benchmarks/gpu_launches.py` reads it and tests/test_cuda_ledger.py pins it. A
"launch" is anything queued on the stream that costs a launch's host overhead: a kernel, a cuBLAS
call, a memset or a device-to-device memcpy. A "sync" blocks the host until the GPU is idle.

  call                                       CuPy 14 does                         charged
  ufuncs, operators, where, clip, astype     one elementwise kernel               1 kernel
  (astype to the same dtype with copy=False: nothing)
  sum, mean, max, min, argmax, all, any...   one reduction kernel (CUB's          1 kernel
                                             segmented reduce, or CuPy's own)
  var                                        mean, then a reduction of squares    2 kernels
  std                                        var, then sqrt                       3 kernels
  zeros, zeros_like                          cudaMemsetAsync                      1 memset
  ones, full, arange, fill, random draws     one fill kernel                      1 kernel
  empty, empty_like, reshape/transpose/      nothing (a new header or a view)     0
  slicing/as_strided/broadcast_to views
  reshape/ravel that cannot view, flatten,   one copy kernel                      1 copy
  ascontiguousarray of a strided array,
  copy(), array(device array)
  2-D dot / matmul (_routines_linalg.pyx     cuBLAS gemmEx with transpose flags;  1 gemm (+1 copy
  tensordot_core)                            an operand neither C- nor              per strided
                                             F-contiguous is copied first          operand)
  matmul with ndim > 2                       ascontiguousarray on both operands,  1 gemm (+1 copy
                                             then gemmStridedBatchedEx; when one  per non-C
                                             operand broadcasts (a 2-D weight      operand, +3
                                             times 3-D columns) _mat_ptrs builds   kernels when
                                             3 pointer arrays and gemmBatched      one broadcasts)
  concatenate/stack of > 8 arrays, same      _concatenate_single_kernel: pointer  1 kernel + 1
  dtype, < 2 MiB each on average             (and, for unequal shapes, size and   h2d (3 h2d for
                                             stride) tables copied host-to-device unequal shapes)
  concatenate/stack otherwise                one elementwise copy per array       n copies
  pad (constant)                             empty, a copy, two fills per axis    1 + 2 per
                                                                                  padded axis
  a[int array], take, take_along_axis        one gather kernel                    1 kernel
  a[bool array]                              a scan, a sync for the count, a      2 kernels +
                                             gather                               1 sync
  a[...] = value, scatter_add, ufunc.at      one fill / copy / scatter kernel     1 kernel
  asarray/array(host), a.set(host)           pinned staging, cudaMemcpyAsync      1 h2d
  a[numpy index] (any index held on host)    the index copied over first          +1 h2d
  int(a), float(a), bool(a), a.item(),       cudaMemcpy device-to-host: waits     1 d2h + 1 sync
  a.get(), asnumpy, tolist, repr, format     for every queued kernel
  Stream.synchronize, Device.synchronize     cudaStreamSynchronize                1 sync
  launch_twin (minires' own RawKernels)      one kernel                           1 kernel

Bytes are device memory traffic: what each kernel reads and writes (its device operands and its
result; a GEMM reads A and B and writes C), and host<->device bytes separately. CUB's full
(all-axes) reductions run two kernels on a GPU; they are charged one, like CuPy's own reduction.

`capture()` is CUDA graph capture's contract: inside it any host read, blocking sync or
host-to-device copy raises CaptureError (naming the call), so a test can prove a step has none.

    import cupy_standin; cupy_standin.register()   # backend now treats it as the cuda device
"""
import collections
import contextlib
import operator
import types
import weakref

import numpy as np

__version__ = f"0.0-standin (NumPy {np.__version__})"

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")
DEVICE_BYTES = 16 * 2**30  # the stand-in device's memory, for set_limit(fraction=...)

_owners = weakref.WeakValueDictionary()  # id(NumPy owner) -> its device array, for .base
_held = {}  # id(NumPy memory owner) -> its finalizer: memory counted until the last view dies


# --- the ledger -----------------------------------------------------------------------------------

class Ledger:
    """Counts of the CUDA work CuPy would queue (see the module docstring for the mapping)."""

    FIELDS = ("kernels", "gemms", "memsets", "copies", "h2d", "d2h", "syncs", "bytes",
              "h2d_bytes", "d2h_bytes")

    def __init__(self):
        for field in self.FIELDS:
            setattr(self, field, 0)
        self.calls = collections.Counter()  # call name -> launches charged to it

    @property
    def launches(self):
        """Kernels, cuBLAS calls, memsets and device-to-device copies: each a launch's overhead."""
        return self.kernels + self.gemms + self.memsets + self.copies

    def summary(self):
        """{'launches', 'syncs', 'bytes', ...}: every count, for reports and JSON."""
        return dict({field: getattr(self, field) for field in self.FIELDS},
                    launches=self.launches)

    def __repr__(self):
        return f"Ledger({self.summary()})"


class CaptureError(RuntimeError):
    """A host read, a blocking sync or a host-to-device copy inside `capture()`."""


ledger = Ledger()
_open_ledgers = [ledger]
_capturing = [0]


@contextlib.contextmanager
def counting():
    """A fresh Ledger that counts what runs inside the `with` block."""
    fresh = Ledger()
    _open_ledgers.append(fresh)
    try:
        yield fresh
    finally:
        _open_ledgers.remove(fresh)


@contextlib.contextmanager
def capture():
    """CUDA graph capture's rules: a host read, sync or host-to-device copy raises CaptureError."""
    _capturing[0] += 1
    try:
        yield
    finally:
        _capturing[0] -= 1


def _charge(name, nbytes=0, **counts):
    for book in _open_ledgers:
        for field, count in counts.items():
            setattr(book, field, getattr(book, field) + count)
        book.bytes += int(nbytes)
        launches = sum(counts.get(f, 0) for f in ("kernels", "gemms", "memsets", "copies"))
        if launches:
            book.calls[name] += launches


def _refuse_in_capture(what):
    if _capturing[0]:
        raise CaptureError(f"{what} inside capture(): a CUDA graph (and a sync-free step) "
                           f"allows no host read, sync or host-to-device copy")


def _host_read(what, array):
    """Device-to-host: cudaMemcpy waits for every kernel queued before it."""
    _refuse_in_capture(what)
    for book in _open_ledgers:
        book.d2h += 1
        book.syncs += 1
        book.d2h_bytes += array.nbytes


def _host_write(what, nbytes):
    """Host-to-device through pinned staging: asynchronous, but not capturable."""
    _refuse_in_capture(what)
    for book in _open_ledgers:
        book.h2d += 1
        book.h2d_bytes += int(nbytes)


def _sync(what):
    _refuse_in_capture(what)
    for book in _open_ledgers:
        book.syncs += 1


# --- the array type -------------------------------------------------------------------------------

class ndarray:  # noqa: N801 - CuPy's name
    """A "device" array: a NumPy array behind a wall that only explicit copies cross."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100  # below minires.Tensor's 1000, so `array * tensor` asks the Tensor

    def __init__(self, array):
        self._a = array
        _hold(array)
        if array.base is None:
            _owners[id(array)] = self

    @property
    def base(self):
        """The device array that owns this view's memory (None for an owner), as CuPy's .base."""
        owner = self._a.base
        if owner is None:
            return None
        known = _owners.get(id(owner))
        return ndarray(owner) if known is None else known

    # array facts
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    device = property(lambda self: cuda.Device(0))
    T = property(lambda self: _wrap(self._a.T))
    real = property(lambda self: _wrap(self._a.real))
    imag = property(lambda self: _wrap(self._a.imag))

    def get(self):
        """A NumPy copy on the host (CuPy's device-to-host transfer)."""
        _host_read("ndarray.get()", self._a)
        return self._a.copy()

    def set(self, host_array):
        """Copy a NumPy array of the same shape into this one (host-to-device)."""
        _host_write("ndarray.set()", self._a.nbytes)
        self._a[...] = host_array

    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """np.exp(a) runs on the device; np.add(numpy_array, a) is a mixed-device error."""
        name = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
        return _call(getattr(ufunc, method), inputs, kwargs, name,
                     _reduction if method in ("reduce", "accumulate") else _elementwise)

    def __array_function__(self, func, types_, args, kwargs):
        """np.concatenate([a, b]) runs on the device, as CuPy dispatches it; NumPy functions
        CuPy does not have are refused (NumPy then raises TypeError)."""
        rule = WORK.get(func.__name__)
        if rule is None:
            return NotImplemented
        return _call(func, args, kwargs, func.__name__, rule)

    def _read(self, what):
        _host_read(what, self._a)
        return self._a

    def __repr__(self):
        return repr(self._read("repr(array)"))

    def __str__(self):
        return str(self._read("str(array)"))

    def __format__(self, spec):
        value = self._read("format(array)")
        return format(value.item() if value.ndim == 0 else value, spec)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(row) for row in self._a)

    def __bool__(self):
        return bool(self._read("bool(array)"))

    def __float__(self):
        return float(self._read("float(array)"))

    def __int__(self):
        return int(self._read("int(array)"))

    def __complex__(self):
        return complex(self._read("complex(array)"))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    __hash__ = None

    # indexing: NumPy index arrays are accepted (CuPy copies them over); integer arrays wrap
    def __getitem__(self, index):
        parts = _device_index(index, self._a.shape)
        result = _wrap(self._a[parts])
        _charge_index("getitem", self, parts, index, result)
        return result

    def __setitem__(self, index, value):
        if isinstance(value, (np.ndarray, list, tuple)):
            raise TypeError(f"Unsupported type {type(value)}")  # a[...] = host: use a.set(host)
        parts = _device_index(index, self._a.shape)
        target = self._a[parts]
        _charge_index("setitem", self, parts, index, None)
        with np.errstate(all="ignore"):
            self._a[parts] = _unwrap(value)
        _charge("setitem", nbytes=target.nbytes + _nbytes(value), kernels=1)


def _hold(array):
    """Count `array`'s memory in the pool once, until the NumPy array that owns it dies (views
    keep it alive, as CuPy's do)."""
    owner = array
    while isinstance(owner, np.ndarray) and owner.base is not None:
        owner = owner.base
    if not isinstance(owner, np.ndarray) or id(owner) in _held:
        return
    memory_pool._allocate(owner.nbytes)
    _held[id(owner)] = weakref.finalize(owner, _release, id(owner), owner.nbytes)


def _release(key, nbytes):
    _held.pop(key, None)
    if memory_pool is not None:  # None while the interpreter shuts down
        memory_pool._free(nbytes)


def _binary(op, reflected=False):
    def method(self, other):
        if _defers(other):
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        name = op.__name__.strip("_")
        return _call(op, (a, b), {}, name, _matmul if name == "matmul" else _elementwise)
    return method


def _inplace(op):
    def method(self, other):
        if _defers(other):
            return NotImplemented
        _refuse_lists((other,))
        with np.errstate(all="ignore"):
            op(self._a, _unwrap(other))
        _charge(op.__name__.strip("_"), nbytes=2 * self._a.nbytes + _nbytes(other), kernels=1)
        return self
    return method


def _unary(op):
    def method(self):
        with np.errstate(all="ignore"):
            result = _wrap(op(self._a))
        _charge(op.__name__.strip("_"), nbytes=self._a.nbytes + result.nbytes, kernels=1)
        return result
    return method


def _defers(other):
    """True when `other` (a minires Tensor, say) outranks a device array and handles the op."""
    return (not isinstance(other, (ndarray, np.ndarray, np.generic, int, float, complex, bool,
                                   list, tuple))
            and getattr(other, "__array_priority__", -1) > ndarray.__array_priority__)


for _name, _op in [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv),
                   ("mod", operator.mod), ("pow", operator.pow), ("matmul", operator.matmul),
                   ("and", operator.and_), ("or", operator.or_), ("xor", operator.xor),
                   ("lshift", operator.lshift), ("rshift", operator.rshift)]:
    setattr(ndarray, f"__{_name}__", _binary(_op))
    setattr(ndarray, f"__r{_name}__", _binary(_op, reflected=True))
    setattr(ndarray, f"__i{_name}__", _inplace(getattr(operator, f"i{_name}")))
for _name, _op in [("eq", operator.eq), ("ne", operator.ne), ("lt", operator.lt),
                   ("le", operator.le), ("gt", operator.gt), ("ge", operator.ge)]:
    setattr(ndarray, f"__{_name}__", _binary(_op))
for _name, _op in [("neg", operator.neg), ("pos", operator.pos), ("abs", operator.abs),
                   ("invert", operator.invert)]:
    setattr(ndarray, f"__{_name}__", _unary(_op))


# --- the work each call costs (the module docstring's table) --------------------------------------

def _arrays(values):
    """The device arrays among call arguments (in lists too: concatenate's)."""
    for v in values:
        if isinstance(v, ndarray):
            yield v
        elif isinstance(v, (list, tuple)):
            yield from _arrays(v)


def _nbytes(value):
    return value.nbytes if isinstance(value, ndarray) else 0


def _results(result):
    return list(_arrays(result if isinstance(result, (list, tuple)) else [result]))


def _traffic(args, result):
    return (sum(a.nbytes for a in _arrays(args)) + sum(r.nbytes for r in _results(result)))


def _elementwise(name, args, kwargs, result):
    _charge(name, nbytes=_traffic(args, result), kernels=1)


def _reduction(name, args, kwargs, result, kernels=1):
    _charge(name, nbytes=_traffic(args, result), kernels=kernels)


def _nothing(name, args, kwargs, result):
    pass


def _memset(name, args, kwargs, result):
    _charge(name, nbytes=_traffic((), result), memsets=1)


def _fill(name, args, kwargs, result):
    _charge(name, nbytes=_traffic((), result), kernels=1)


def _copy(name, args, kwargs, result):
    _charge(name, nbytes=2 * _traffic((), result), copies=1)


def _view_or_copy(name, args, kwargs, result):
    """A view costs nothing; when NumPy had to copy (reshape of a strided array), CuPy copies."""
    source = next(_arrays(args), None)
    for r in _results(result):
        if source is None or not np.may_share_memory(r._a, source._a):
            _copy(name, (), {}, r)


def _contiguous(name, args, kwargs, result):
    source = next(_arrays(args))
    if result is not source and not np.may_share_memory(result._a, source._a):
        _copy(name, (), {}, result)


def _astype(name, args, kwargs, result):
    if result is not args[0]:
        _elementwise(name, args[:1], kwargs, result)


def _dot(name, args, kwargs, result):
    """2-D: one cuBLAS GEMM with transpose flags; an operand neither C- nor F-contiguous (after
    CuPy's reshape to 2-D) is copied first."""
    a, b = args[0], args[1]
    for operand in (a, b):
        flags = operand._a.flags
        if operand.ndim == 2 and not (flags.c_contiguous or flags.f_contiguous):
            _copy(f"{name} operand copy", (), {}, operand)
    _charge(name, nbytes=a.nbytes + b.nbytes + result.nbytes, gemms=1)


def _matmul(name, args, kwargs, result):
    """ndim <= 2: `dot`. Otherwise ascontiguousarray(a), ascontiguousarray(b), then one
    gemmStridedBatchedEx; if a batch axis broadcasts, _mat_ptrs' 3 kernels and gemmBatched."""
    a, b = (x if isinstance(x, ndarray) else None for x in args[:2])
    if a is None or b is None:
        raise TypeError(f"Unsupported type {type(args[0] if a is None else args[1])}")
    if max(a.ndim, b.ndim) <= 2:
        return _dot(name, args, kwargs, result)
    for operand in (a, b):
        if operand.ndim >= 2 and not operand._a.flags.c_contiguous:
            _copy(f"{name} ascontiguousarray", (), {}, operand)
    batch_a, batch_b = (x.shape[:-2] if x.ndim > 2 else () for x in (a, b))
    if batch_a != batch_b:
        _charge(f"{name} _mat_ptrs", kernels=3)
    _charge(name, nbytes=a.nbytes + b.nbytes + result.nbytes, gemms=1)


def _concatenate(name, args, kwargs, result):
    """CuPy's _concatenate: one kernel with pointer tables for many small same-dtype arrays,
    one elementwise copy per array otherwise."""
    arrays = list(_arrays(args[:1]))
    same_dtype = all(a.dtype == result.dtype for a in arrays)
    small = sum(a.nbytes for a in arrays) < 2 * 2**20 * len(arrays)
    if len(arrays) > 8 and same_dtype and small:
        same_shape = (name == "stack" or len({a.shape for a in arrays}) == 1) and all(
            a._a.flags.c_contiguous for a in arrays)
        tables = 1 if same_shape else 3
        for _ in range(tables):
            _host_write(f"{name}: a pointer table", 8 * len(arrays))
        _charge(name, nbytes=2 * result.nbytes, kernels=1)
    else:
        _charge(name, nbytes=2 * result.nbytes, kernels=len(arrays))


def _pad(name, args, kwargs, result):
    widths = np.broadcast_to(np.asarray(args[1] if len(args) > 1 else kwargs["pad_width"]),
                             (result.ndim, 2))
    padded_axes = int(np.count_nonzero(widths.sum(axis=1)))
    _charge(name, nbytes=result.nbytes + args[0].nbytes, copies=1, kernels=2 * padded_axes)


def _host_input(name, args, kwargs, result):
    if isinstance(args[0], ndarray):
        if result is not args[0]:
            _copy(name, (), {}, result)
    else:
        _host_write(f"{name}(host data)", result.nbytes)


def _scatter(name, args, kwargs, result):
    _charge(name, nbytes=2 * _traffic(args[2:], None) + _nbytes(args[0]), kernels=1)


def _var(name, args, kwargs, result):
    _reduction(name, args, kwargs, result, kernels=2)


def _std(name, args, kwargs, result):
    _reduction(name, args, kwargs, result, kernels=3)


def _norm(name, args, kwargs, result):
    _reduction(name, args, kwargs, result, kernels=2)


def _nonzero(name, args, kwargs, result):
    _charge(name, nbytes=_traffic(args, result), kernels=2)
    _sync(f"{name} (the count of nonzero values)")


def _rule_table():
    """name -> rule(name, args, kwargs, result): every function the stand-in's module offers."""
    table = {}

    def add(rule, names):
        for name in names.split():
            table[name] = rule

    ufuncs = [n for n in dir(np) if isinstance(getattr(np, n), np.ufunc)]
    add(_elementwise, " ".join(ufuncs) + " where copyto clip around round take take_along_axis "
        "isclose nan_to_num")
    add(_reduction, "sum mean max min amax amin argmax argmin all any prod count_nonzero "
        "cumsum nansum nanmax nanmin median")
    add(_var, "var")
    add(_std, "std")
    add(_norm, "norm")
    add(_memset, "zeros zeros_like")
    add(_fill, "ones ones_like full full_like arange linspace eye identity tri")
    add(_nothing, "empty empty_like shape ndim size result_type can_cast may_share_memory "
        "shares_memory iscomplexobj isscalar")
    add(_view_or_copy, "reshape transpose swapaxes moveaxis rollaxis squeeze expand_dims "
        "broadcast_to broadcast_arrays ravel atleast_1d atleast_2d atleast_3d split array_split "
        "diagonal as_strided flip fliplr flipud")
    add(_copy, "copy flatten")
    add(_contiguous, "ascontiguousarray asfortranarray")
    add(_dot, "dot vdot inner tensordot")
    add(_matmul, "matmul")
    add(_concatenate, "concatenate stack hstack vstack")
    add(_pad, "pad")
    add(_host_input, "array asarray asanyarray")
    add(_astype, "astype")
    add(_nonzero, "nonzero flatnonzero argwhere unique")
    add(_reduction, "array_equal allclose")
    return table


WORK = _rule_table()
_METHODS = ("all any argmax argmin argsort astype clip conj copy cumsum diagonal dot fill flatten "
            "item max mean min nonzero prod ravel repeat reshape round sort squeeze std sum "
            "swapaxes take tolist trace transpose var view").split()
_HOST_READS = {"item": "ndarray.item()", "tolist": "ndarray.tolist()"}


def _method(name):
    def method(self, *args, **kwargs):
        if name in _HOST_READS:
            _host_read(_HOST_READS[name], self._a)
        with np.errstate(all="ignore"):
            result = _compute(getattr(self._a, name), args, kwargs)
        if name in _HOST_READS:
            return result
        result = self if result is self._a else _wrap(result)  # astype(copy=False) gives self
        if name == "fill":
            _charge("fill", nbytes=self.nbytes, kernels=1)
        else:
            WORK.get(name, _elementwise)(name, (self,) + args, kwargs, result)
        return result
    method.__name__ = name
    return method


for _name in _METHODS:
    setattr(ndarray, _name, _method(_name))


def _charge_index(what, array, parts, index, result):
    """Basic indexing is a view; integer-array indexing a gather (or scatter) kernel; a boolean
    mask a scan, a sync and a gather; index arrays held on the host are copied over first."""
    originals = list(index) if isinstance(index, tuple) else [index]
    for p in originals:
        if isinstance(p, (np.ndarray, list)):
            _host_write(f"{what} with a host index", np.asarray(p).nbytes)
    advanced = [p for p in parts if isinstance(p, np.ndarray)]
    if any(p.dtype == bool for p in advanced):
        _nonzero(f"{what}[bool mask]", (), {}, None)  # the scan and the gather, and the sync
    elif advanced and what == "getitem":
        _charge(what, nbytes=2 * result.nbytes, kernels=1)


# --- crossing the wall ----------------------------------------------------------------------------

def _unwrap(value):
    """The NumPy array behind a device array, for computing; a NumPy array here is a device mix."""
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, np.ndarray):
        raise TypeError(f"Unsupported type {type(value)}")
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v) for v in value)
    return value


def _wrap(value):
    """Results back behind the wall; NumPy scalars become 0-d device arrays, as in CuPy."""
    if isinstance(value, np.ndarray):
        return ndarray(value)
    if isinstance(value, np.generic):
        return ndarray(np.asarray(value))
    if isinstance(value, (list, tuple)) and any(isinstance(v, (np.ndarray, np.generic))
                                                for v in value):
        return type(value)(_wrap(v) for v in value)
    return value


def _compute(func, args, kwargs):
    """func on the arrays behind the wall (raising for a NumPy array among them)."""
    return func(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()})


_TAKES_SEQUENCES = {"concatenate", "stack", "hstack", "vstack", "array", "asarray", "asanyarray",
                    "pad", "reshape", "transpose", "broadcast_to", "full", "zeros", "ones",
                    "empty", "split", "array_split", "tensordot", "expand_dims", "squeeze",
                    "moveaxis", "flip", "as_strided", "eye", "tri"}


def _refuse_lists(values):
    """CuPy refuses a Python list or tuple where it wants an array operand."""
    for v in values:
        if isinstance(v, (list, tuple)):
            raise TypeError(f"Unsupported type {type(v)}")


def _call(func, args, kwargs, name, rule):
    """func on device arrays, returning device arrays; the work charged by `rule`."""
    if name.split(".")[0] not in _TAKES_SEQUENCES:
        _refuse_lists(args[:2])
    with np.errstate(all="ignore"):
        result = _compute(func, args, kwargs)
    out = kwargs.get("out")
    out = out[0] if isinstance(out, tuple) and len(out) == 1 else out
    if isinstance(out, ndarray) and result is out._a:
        result = out  # the ufunc wrote into `out`: hand back the same device array
    else:
        result = _wrap(result)
    rule(name, args, kwargs, result)
    return result


def _device_index(index, shape):
    """An index for the array behind the wall: integer arrays wrap around (CuPy's behaviour:
    `a[np.array([0, 5])]` on 3 rows reads rows 0 and 2 instead of raising)."""
    parts = list(index) if isinstance(index, tuple) else [index]
    parts = [p._a if isinstance(p, ndarray) else np.asarray(p) if isinstance(p, list) else p
             for p in parts]
    consumed = sum(p.ndim if _is_bool_array(p) else 0 if p is None or p is Ellipsis else 1
                   for p in parts)
    axis = 0
    for k, p in enumerate(parts):
        if p is Ellipsis:
            axis += len(shape) - consumed
        elif p is None:
            continue
        elif _is_bool_array(p):
            axis += p.ndim
        else:
            if isinstance(p, np.ndarray) and p.dtype.kind in "iu" and axis < len(shape):
                parts[k] = p % shape[axis] if shape[axis] else p
            axis += 1
    return tuple(parts)


def _is_bool_array(p):
    return isinstance(p, np.ndarray) and p.dtype == bool


# --- the module: NumPy's functions on device arrays, where CuPy has them --------------------------

_HOST_INPUTS = {"array", "asarray", "asanyarray"}  # the functions that take host data (and copy it)


def _host_to_device(name):
    numpy_function = getattr(np, name)

    def function(obj, *args, **kwargs):
        if isinstance(obj, ndarray):
            result = numpy_function(obj._a, *args, **kwargs)
            result = obj if result is obj._a else _wrap(result)
            _host_input(name, (obj,), kwargs, result)
            return result
        items = obj
        if isinstance(obj, (list, tuple)):
            obj = _unwrap_items(obj)
        result = ndarray(np.array(numpy_function(obj, *args, **kwargs), copy=True))
        if isinstance(obj, _DeviceItems):  # cupy.array([a, b]) stacks device arrays
            _concatenate("stack", (list(_arrays(items)),), {}, result)
        else:
            _host_input(name, (obj,), kwargs, result)
        return result
    function.__name__ = name
    return function


class _DeviceItems(list):
    """A nested list unwrapped from device arrays (cupy.array([a, b]) stacks them on the
    device: no host copy)."""
    _from_device = True


def _unwrap_items(items):
    """A nested list that may hold device arrays (cupy.array([a, b]) stacks them)."""
    unwrapped = [_unwrap_items(v) if isinstance(v, (list, tuple)) else
                 v._a if isinstance(v, ndarray) else v for v in items]
    on_device = (any(isinstance(v, ndarray) for v in items)
                 or any(isinstance(v, _DeviceItems) for v in unwrapped))
    return _DeviceItems(unwrapped) if on_device else unwrapped


class _UFunc:
    """A NumPy ufunc on device arrays, with its methods (cupy.add.at is scatter-add)."""

    def __init__(self, ufunc):
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        return _call(self._ufunc, args, kwargs, self.__name__, _elementwise)

    def at(self, a, index, b=None):
        with np.errstate(all="ignore"):
            self._ufunc.at(a._a, _device_index(index, a.shape),
                           *(() if b is None else (_unwrap(b),)))
        _scatter(f"{self.__name__}.at", (a, index, b), {}, None)

    def __getattr__(self, method):  # reduce, accumulate, outer
        return lambda *args, **kwargs: _call(getattr(self._ufunc, method), args, kwargs,
                                             f"{self.__name__}.{method}", _reduction)


def _device_function(numpy_namespace, name):
    """cupy.<name>: numpy.<name> behind the wall; classes and constants (float32, pi) as NumPy's."""
    value = getattr(numpy_namespace, name)
    if isinstance(value, np.ufunc):
        return _UFunc(value)
    if callable(value) and not isinstance(value, type):
        rule = WORK.get(name)
        if rule is None:
            return _MISSING
        return lambda *args, **kwargs: _call(value, args, kwargs, name, rule)
    return value


_MISSING = object()


class _Namespace(types.ModuleType):
    """A module whose missing attributes are NumPy's, made to work on device arrays: only the
    functions CuPy has (those in WORK) and NumPy's dtypes and constants."""

    def __init__(self, name, numpy_namespace):
        super().__init__(name)
        self._numpy = numpy_namespace

    def __getattr__(self, name):
        value = _MISSING
        if not name.startswith("__") and hasattr(self._numpy, name):
            value = _device_function(self._numpy, name)
        if value is _MISSING:
            raise AttributeError(f"the CuPy stand-in has no {self.__name__}.{name}; a test that "
                                 f"needs it must run on a real GPU (mark it `gpu`)")
        setattr(self, name, value)
        return value


class _Random:
    """cupy.random: a seeded generator whose draws land on the device."""

    def __init__(self):
        self._state = np.random.RandomState(0)

    def seed(self, value=None):
        self._state = np.random.RandomState(value)

    def __getattr__(self, name):  # standard_normal, normal, uniform, rand, randn, randint, ...
        draw = getattr(self._state, name)

        def on_device(*args, dtype=None, **kwargs):  # CuPy's draws take a dtype, NumPy's do not
            values = np.asarray(draw(*args, **kwargs))
            result = _wrap(values if dtype is None else values.astype(dtype))
            _fill(f"random.{name}", (), {}, result)
            return result
        return on_device


class _MemoryPool:
    """cupy.get_default_memory_pool(): counts the bytes of live device memory, and fails an
    allocation past `set_limit` with CuPy's OutOfMemoryError (to test OOM messages)."""

    def __init__(self):
        self._used, self._limit = 0, 0

    def _allocate(self, nbytes):
        if self._limit and self._used + nbytes > self._limit:
            raise cuda.memory.OutOfMemoryError(nbytes, self._used, self._limit)
        self._used += nbytes

    def _free(self, nbytes):
        self._used -= nbytes

    def used_bytes(self):
        return self._used

    def total_bytes(self):
        return self._used

    def free_bytes(self):
        return 0

    def free_all_blocks(self):
        pass

    def set_limit(self, size=None, fraction=None):
        """CuPy's: a byte count, or a fraction of the device's memory (DEVICE_BYTES here)."""
        if size is not None and fraction is not None:
            raise ValueError("size and fraction cannot be specified at one time")
        self._limit = int(size) if size is not None else int((fraction or 0) * DEVICE_BYTES)

    def get_limit(self):
        return self._limit


class _PinnedMemoryPool:
    def free_all_blocks(self):
        pass

    def n_free_blocks(self):
        return 0


class OutOfMemoryError(MemoryError):
    """cupy.cuda.memory.OutOfMemoryError, with CuPy's message."""

    def __init__(self, size, total, limit=0):
        message = f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes"
        message += f", limit set to: {limit:,} bytes)." if limit else ")."
        super().__init__(message)


class _Device:
    def __init__(self, device_id=0):
        self.id = device_id

    def synchronize(self):
        _sync("Device.synchronize()")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @property
    def mem_info(self):
        return (DEVICE_BYTES - memory_pool.used_bytes(), DEVICE_BYTES)


class _Stream:
    def synchronize(self):
        _sync("Stream.synchronize()")


_Stream.null = _Stream()

cuda = types.SimpleNamespace(
    Device=_Device, Stream=_Stream,
    runtime=types.SimpleNamespace(
        getDeviceCount=lambda: 1,
        getDeviceProperties=lambda device_id: {"name": b"CuPy stand-in (NumPy on the CPU)",
                                               "totalGlobalMem": DEVICE_BYTES},
        runtimeGetVersion=lambda: 0, driverGetVersion=lambda: 0),
    memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError))

memory_pool = _MemoryPool()
_pinned_pool = _PinnedMemoryPool()


def asnumpy(array):
    """A NumPy copy of a device array (a NumPy array comes back as it is)."""
    return array.get() if isinstance(array, ndarray) else np.asarray(array)


def get_array_module(*arrays):
    return cupy if any(isinstance(a, ndarray) for a in arrays) else np


def scatter_add(a, index, values):
    """cupyx.scatter_add: a[index] += values with repeated indices accumulating."""
    with np.errstate(all="ignore"):
        np.add.at(a._a, _device_index(index, a.shape), _unwrap(values))
    _scatter("scatter_add", (a, index, values), {}, None)


def launch_twin(name, twin, args, nbytes=None):
    """Run a minires kernel (backend.DeviceKernel) as its NumPy twin: `twin` gets the NumPy arrays
    behind the device arrays in `args` (and the scalars as they are) and writes its outputs into
    them, as the kernel does; charged as one kernel launch."""
    arrays = list(_arrays(args))
    with np.errstate(all="ignore"):
        twin(*[a._a if isinstance(a, ndarray) else a for a in args])
    _charge(name, nbytes=sum(a.nbytes for a in arrays) if nbytes is None else nbytes, kernels=1)


cupy = _Namespace("cupy", np)
cupy.__doc__ = __doc__
cupy.__version__ = __version__
cupy.IS_STANDIN = True
cupy.ndarray = ndarray
cupy.cuda = cuda
cupy.random = _Random()
cupy.linalg = _Namespace("cupy.linalg", np.linalg)
cupy.lib = types.SimpleNamespace(
    stride_tricks=_Namespace("cupy.lib.stride_tricks", np.lib.stride_tricks))  # as_strided: a view
cupy.asnumpy = asnumpy
cupy.get_array_module = get_array_module
cupy.get_default_memory_pool = lambda: memory_pool
cupy.get_default_pinned_memory_pool = lambda: _pinned_pool
cupy.launch_twin = launch_twin
for _name in _HOST_INPUTS:
    setattr(cupy, _name, _host_to_device(_name))

cupyx = types.ModuleType("cupyx")
cupyx.scatter_add = scatter_add


def register():
    """Make the stand-in minires' cuda device; returns what was registered before."""
    from minires import backend

    return backend.register_cuda_module(cupy, cupyx)


def is_registered():
    from minires import backend

    return getattr(backend.cupy_module(), "IS_STANDIN", False)
