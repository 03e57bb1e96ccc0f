"""Input checks shared by the ops: each raises an error that names the op and the shapes."""
import operator



def shapes(**arrays):
    """'x: (8, 3, 32, 32), w: (16, 3, 3, 3)' for an error message."""
    return ", ".join(f"{name}: {tuple(a.shape)}" for name, a in arrays.items() if a is not None)


def require_ndim(op, name, array, ndims, **others):
    ndims = (ndims,) if isinstance(ndims, int) else tuple(ndims)
    if array.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{op}: {name} must be {want}, got {array.ndim}-D "
                         f"({shapes(**{name: array}, **others)})")


def require_float(op, **arrays):
    for name, array in arrays.items():
        if array is not None and array.dtype.kind != "f":
            raise TypeError(f"{op}: {name} must be a float array, got {array.dtype} "
                            f"({shapes(**arrays)})")


def pair(value, op, what):
    """(a, b) from an int or a pair of ints, with a clear error for anything else (1.5 too)."""
    try:
        a, b = (value, value) if not isinstance(value, (tuple, list)) else value
        return operator.index(a), operator.index(b)  # ints only: int(1.5) would quietly give 1
    except (TypeError, ValueError):
        raise TypeError(f"{op}: {what} must be an int or a pair of ints, got {value!r}") from None
