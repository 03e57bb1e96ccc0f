"""A CPU stand-in for CuPy, for the test suite only: the `cuda` device when no GPU answers.

Every test that takes the `device` fixture runs its "cuda" variant on every CI run. minires cannot
tell this module from CuPy (it only ever asks `backend` for the array module and the array type),
so device plumbing is tested everywhere and only real kernels, timing and memory need a GPU.

What it keeps from CuPy, because device bugs hide in exactly these differences from NumPy:
- `ndarray` is its own type, not a numpy.ndarray subclass: `np.asarray(a)` raises TypeError
  ("Implicit conversion to a NumPy array is not allowed"), as CuPy's does; `a.get()`,
  `asnumpy(a)` copy to the host and `asarray(host_array)` copies to the "device";
- an op that mixes it with a numpy.ndarray raises TypeError ("Unsupported type"), whichever side
  the NumPy array is on, in operators, ufuncs and module functions;
- reductions and integer indexing return 0-d arrays, never NumPy scalars;
- an out-of-range integer-array index wraps around instead of raising (CuPy's documented
  difference from NumPy), so bounds checks must not rely on the array module;
- `cupyx.scatter_add`, a `random` generator, `cuda.Stream.null.synchronize`,
  `cuda.runtime.getDeviceCount` (1), a memory pool with `used_bytes` and `set_limit`, and
  `cuda.memory.OutOfMemoryError` (raised, with CuPy's message, when a limit is set and exceeded).
The numbers are NumPy's. Custom kernels (ElementwiseKernel, RawKernel) do not exist here: asking for
one is an AttributeError, and tests that need them are marked `gpu`.

    import cupy_standin; cupy_standin.register()   # backend now treats it as the cuda device
"""
import operator
import types
import weakref

import numpy as np

__version__ = f"0.0-standin (NumPy {np.__version__})"

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")


_owners = weakref.WeakValueDictionary()  # id(NumPy owner) -> its device array, for .base

# --- the array type -------------------------------------------------------------------------------

class ndarray:  # noqa: N801 - CuPy's name
    """A "device" array: a NumPy array behind a wall that only explicit copies cross."""

    __slots__ = ("_a", "_counted", "__weakref__")
    __array_priority__ = 100  # below minires.Tensor's 1000, so `array * tensor` asks the Tensor

    def __init__(self, array):
        self._a, self._counted = array, False
        if array.base is None:  # owns its memory: a new "device" allocation
            memory_pool._allocate(array.nbytes)
            self._counted = True
            _owners[id(array)] = self

    @property
    def base(self):
        """The device array that owns this view's memory (None for an owner), as CuPy's .base."""
        owner = self._a.base
        if owner is None:
            return None
        known = _owners.get(id(owner))
        return ndarray(owner) if known is None else known

    def __del__(self):
        if self._counted and memory_pool is not None:  # None while the interpreter shuts down
            memory_pool._free(self._a.nbytes)

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
        return self._a.copy()

    def set(self, host_array):
        """Copy a NumPy array of the same shape into this one (host-to-device)."""
        self._a[...] = host_array

    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """np.exp(a) runs on the device; np.add(numpy_array, a) is a mixed-device error."""
        return _call(getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        """np.concatenate([a, b]) runs on the device, as CuPy dispatches it."""
        return _call(func, args, kwargs)

    def __repr__(self):
        return repr(self._a)

    def __str__(self):
        return str(self._a)

    def __format__(self, spec):
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(row) for row in self._a)

    def __bool__(self):
        return bool(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __complex__(self):
        return complex(self._a)

    def __copy__(self):
        return _wrap(self._a.copy())

    def __deepcopy__(self, memo):
        return _wrap(self._a.copy())

    __hash__ = None

    # indexing: NumPy index arrays are accepted (CuPy copies them over); integer arrays wrap
    def __getitem__(self, index):
        return _wrap(self._a[_device_index(index, self._a.shape)])

    def __setitem__(self, index, value):
        self._a[_device_index(index, self._a.shape)] = _host_or_device_value(value)


def _binary(op, reflected=False):
    def method(self, other):
        if _defers(other):
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        return _call(op, (a, b), {})
    return method


def _inplace(op):
    def method(self, other):
        if _defers(other):
            return NotImplemented
        op(self._a, _unwrap(other))
        return self
    return method


def _defers(other):
    """True when `other` (a minires Tensor, say) outranks a device array and handles the op."""
    return (not isinstance(other, (ndarray, np.ndarray, np.generic, int, float, complex, bool))
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
    setattr(ndarray, f"__{_name}__", lambda self, _op=_op: _wrap(_op(self._a)))

_METHODS = ("all any argmax argmin argsort astype clip conj copy cumsum diagonal dot fill flatten "
            "item max mean min nonzero prod ravel repeat reshape round sort squeeze std sum "
            "swapaxes take tolist trace transpose var view").split()


def _method(name):
    def method(self, *args, **kwargs):
        result = _compute(getattr(self._a, name), args, kwargs)
        return self if result is self._a else _wrap(result)  # astype(copy=False) gives self
    method.__name__ = name
    return method


for _name in _METHODS:
    setattr(ndarray, _name, _method(_name))


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


def _call(func, args, kwargs):
    """func on device arrays, returning device arrays."""
    result = _compute(func, args, kwargs)
    out = kwargs.get("out")
    out = out[0] if isinstance(out, tuple) and len(out) == 1 else out
    if isinstance(out, ndarray) and result is out._a:
        return out  # the ufunc wrote into `out`: hand back the same device array
    return _wrap(result)


def _host_or_device_value(value):
    """A value to store: device arrays unwrap, host arrays are copied over (as CuPy allows)."""
    return value._a if isinstance(value, ndarray) else value


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


# --- the module: NumPy's functions on device arrays -----------------------------------------------

_HOST_INPUTS = {"array", "asarray", "asanyarray"}  # the functions that take host data (and copy it)


def _host_to_device(name):
    numpy_function = getattr(np, name)

    def function(obj, *args, **kwargs):
        if isinstance(obj, ndarray):
            result = numpy_function(obj._a, *args, **kwargs)
            return obj if result is obj._a else _wrap(result)
        if isinstance(obj, (list, tuple)):
            obj = _unwrap_items(obj)
        return ndarray(np.array(numpy_function(obj, *args, **kwargs), copy=True))
    function.__name__ = name
    return function


def _unwrap_items(items):
    """A nested list that may hold device arrays (cupy.array([a, b]) stacks them)."""
    return [_unwrap_items(v) if isinstance(v, (list, tuple)) else
            v._a if isinstance(v, ndarray) else v for v in items]


class _UFunc:
    """A NumPy ufunc on device arrays, with its methods (cupy.add.at is scatter-add)."""

    def __init__(self, ufunc):
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        return _call(self._ufunc, args, kwargs)

    def at(self, a, index, b=None):
        self._ufunc.at(a._a, _device_index(index, a.shape), *(() if b is None else (_unwrap(b),)))

    def __getattr__(self, method):  # reduce, accumulate, outer
        return lambda *args, **kwargs: _call(getattr(self._ufunc, method), args, kwargs)


def _device_function(numpy_namespace, name):
    """cupy.<name>: numpy.<name> behind the wall; classes and constants (float32, pi) as NumPy's."""
    value = getattr(numpy_namespace, name)
    if isinstance(value, np.ufunc):
        return _UFunc(value)
    if callable(value) and not isinstance(value, type):
        return lambda *args, **kwargs: _call(value, args, kwargs)
    return value


class _Namespace(types.ModuleType):
    """A module whose missing attributes are NumPy's, made to work on device arrays."""

    def __init__(self, name, numpy_namespace):
        super().__init__(name)
        self._numpy = numpy_namespace

    def __getattr__(self, name):
        if name.startswith("__") or not hasattr(self._numpy, name):
            raise AttributeError(f"the CuPy stand-in has no {self.__name__}.{name}; a test that "
                                 f"needs it must run on a real GPU (mark it `gpu`)")
        value = _device_function(self._numpy, name)
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
            return _wrap(values if dtype is None else values.astype(dtype))
        return on_device


class _MemoryPool:
    """cupy.get_default_memory_pool(): counts the bytes of live device arrays, and fails an
    allocation past `set_limit(size=...)` with CuPy's OutOfMemoryError (to test OOM messages)."""

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
        self._limit = int(size or 0)

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
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @property
    def mem_info(self):
        return (0, memory_pool.get_limit())


class _Stream:
    def synchronize(self):
        pass


_Stream.null = _Stream()

cuda = types.SimpleNamespace(
    Device=_Device, Stream=_Stream,
    runtime=types.SimpleNamespace(
        getDeviceCount=lambda: 1,
        getDeviceProperties=lambda device_id: {"name": b"CuPy stand-in (NumPy on the CPU)",
                                               "totalGlobalMem": 0},
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
    np.add.at(a._a, _device_index(index, a.shape), _unwrap(values))


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

