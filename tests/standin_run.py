"""Run a script or a module with the CPU stand-in for CuPy as minires' cuda device.

    python tests/standin_run.py -m minires gradients --device cuda --depths 8
    python tests/standin_run.py tutorials/02_the_residual_add_backward.py
    python tests/standin_run.py -c "import minires; print(minires.gpu_available())"

For the tests that run the CLI and the tutorials in a subprocess, and for
`benchmarks/gpu_check.py --standin`. It registers the stand-in (tests/cupy_standin.py) and then runs
the target as `python -m module` / `python script.py` would; minires itself never loads it.
"""
import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv):
    sys.path.insert(0, HERE)
    import cupy_standin

    cupy_standin.register()
    sys.path.remove(HERE)
    if argv[:1] == ["-m"] and len(argv) > 1:
        sys.argv = argv[1:]
        sys.path[0] = os.getcwd()  # as `python -m` puts it
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv[:1] == ["-c"] and len(argv) > 1:
        sys.argv = ["-c"] + argv[2:]
        sys.path[0] = ""  # as `python -c` puts it
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
    elif argv:
        sys.argv = argv
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))  # as `python script.py` puts it
        runpy.run_path(argv[0], run_name="__main__")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
