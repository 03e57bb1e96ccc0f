"""Everything minires wants from a lent GPU machine, in one command and under eight minutes.

    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py               # on the GPU machine
    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py --standin     # dry run on the CPU stand-in

Run it from the repository root, first thing on the machine: nothing is installed and nothing is
downloaded (it needs numpy, cupy, matplotlib, pytest and torch; pytest-xdist when present). The
steps, each a subprocess with its own time limit (their sum, 425 s, leaves a lease of 480 s room):

  env         nvidia-smi and the versions of Python, NumPy, CuPy and torch; does minires see a GPU
  fast tests  MINIRES_GPU_FAST_OPS=1 pytest on the GPU fast path (minires/fast/gpu.py): its
              kernels compiled by CuPy and run, float32 against NumPy within 1e-5, float64
              gradchecks, a fused-SGD ResNet trained the same as with the references
  cuda tests  pytest -m "cuda or gpu": every device test's cuda variant, all seven tutorials on
              cuda, and the gpu-only tests, on the GPU
  suite       MINIRES_DEVICE=cuda pytest: the whole suite with cuda as the default device
  main job    minires gradients --device cuda --depths 20 56 110
  train       minires train --device cuda: one epoch of ResNet-20 on synthetic data
  train_step  benchmarks/train_step.py --device cuda: ResNet-20 img/s and memory, the reference
              path and the fast path (minires-gpufast: fast ops and fused SGD) against PyTorch

It writes one log (default $OUT/gpu_check.log when $OUT is set, else runs/gpu_check.log) with every
step's full output, keeps four of the steps' files in a folder beside it (KEPT: at most 5 files
in all), and prints a summary table: each step, pass or fail, seconds, and its key numbers. The
fast path stays off by default (MINIRES_GPU_FAST_OPS) until these steps have passed on a GPU.

--standin runs the same steps on the CPU stand-in for CuPy (tests/standin_run.py) at tiny sizes;
tests/test_cuda_gpu_check.py runs it in CI, so this script cannot rot between GPU leases.
"""
import argparse
import csv
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STANDIN_RUNNER = ROOT / "tests" / "standin_run.py"
KEPT = ("train_step.json", "gradients/layers.csv", "train/metrics.csv", "train/checkpoint.npz")
STEP_ENV = {"suite": {"MINIRES_DEVICE": "cuda"}, "fast tests": {"MINIRES_GPU_FAST_OPS": "1"}}
FAST_TESTS = ["tests/fast/test_fast_gpu.py", "tests/fast/test_cuda_step.py",
              "tests/fast/test_cuda_kernels.py"]


# --- the steps ------------------------------------------------------------------------------------

def steps(files, standin):
    """(name, command, seconds allowed, summarizer) for each step; tiny sizes on the stand-in."""
    python = [sys.executable]
    on_cuda = python + ([str(STANDIN_RUNNER)] if standin else [])
    parallel = ["-n", "8"] if importlib.util.find_spec("xdist") and not standin else []
    pytest = python + ["-m", "pytest", "-q", "-p", "no:cacheprovider"] + parallel
    if standin:  # the same commands, on a few tests and tiny nets
        fast_tests = ["tests/fast/test_fast_gpu.py", "-k", "matches_the_reference and float32"]
        cuda_tests = ["-m", "cuda", "tests/test_cuda_standin.py", "-k", "moving or scatter"]
        suite = ["tests/test_cuda_standin.py", "-k", "reductions"]
        depths, batch = ["8"], "2"
        train = ["--model", "resnet8", "--batch-size", "8", "--steps-per-epoch", "2",
                 "--n-train", "32", "--n-test", "16"]
        bench = ["--model", "resnet8", "--batch", "4", "--repeats", "1", "--warmup", "0",
                 "--frameworks", "minires", "minires-gpufast", "--no-memory"]
    else:
        fast_tests = FAST_TESTS + ["-k", "not gpu_launches"]
        cuda_tests = ["-m", "cuda or gpu", "tests"]
        suite = ["tests"]
        depths, batch = ["20", "56", "110"], "32"
        train = ["--model", "resnet20", "--batch-size", "128"]
        bench = ["--model", "resnet20", "--batch", "128", "--frameworks", "minires",
                 "minires-gpufast", "torch"]
    fast_layer = (ROOT / "minires" / "fast").is_dir()  # a build without it has no fast tests
    return [
        ("env", on_cuda + ["-c", ENV_PROBE], 15, summarize_env),
        *([("fast tests", pytest + fast_tests, 60, summarize_pytest)] if fast_layer else []),
        ("cuda tests", pytest + cuda_tests, 75, summarize_pytest),
        ("suite", pytest + suite, 150, summarize_pytest),
        ("main job", on_cuda + ["-m", "minires", "gradients", "--device", "cuda", "--depths",
                                *depths, "--batch-size", batch, "--data", "synthetic",
                                "--out", str(files / "gradients")], 40, summarize_gradients),
        ("train", on_cuda + ["-m", "minires", "train", "--device", "cuda", "--data", "synthetic",
                             "--epochs", "1", "--no-progress", *train,
                             "--out", str(files / "train")], 25,
         lambda output: summarize_train(files / "train" / "metrics.csv")),
        ("train_step", on_cuda + [str(ROOT / "benchmarks" / "train_step.py"), "--device", "cuda",
                                  *bench, "--json", str(files / "train_step.json")], 60,
         lambda output: summarize_train_step(files / "train_step.json")),
    ]


ENV_PROBE = """
import platform, subprocess, numpy
from minires import backend
print("python", platform.python_version(), "numpy", numpy.__version__)
try:
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True).stdout.strip())
except OSError:
    print("nvidia-smi: not found")
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda)
except ImportError:
    print("torch: not installed")
cupy = backend.cupy_module()
print("cupy", cupy.__version__ if cupy is not None else "not installed")
backend.check_device("cuda")  # raises, with the install advice, when no GPU answers
name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
print("gpu", name.decode() if isinstance(name, bytes) else name)
"""


# --- key numbers from each step's output ----------------------------------------------------------

def summarize_env(output):
    found = [re.search(pattern, output, re.M) for pattern in
             (r"^gpu (.+)$", r"^cupy (\S+)", r"numpy (\S+)", r"^torch (\S+)")]
    return ", ".join(m.group(0).strip() for m in found if m)


def summarize_pytest(output):
    counts = re.findall(r"\d+ (?:passed|failed|skipped|errors?)", output)
    return ", ".join(counts[-4:]) or "no pytest summary"


def summarize_gradients(output):
    ratios = re.findall(r"^\s*(\S+)\s+first/last block input-gradient ratio\s+(\S+)", output, re.M)
    return "first/last ratio " + ", ".join(f"{net} {ratio}" for net, ratio in ratios)


def summarize_train(metrics_csv):
    """The epoch's row of metrics.csv: loss and errors."""
    try:
        with open(metrics_csv, newline="") as handle:
            last = list(csv.DictReader(handle))[-1]
    except (OSError, IndexError):
        return "no metrics.csv"
    return (f"train loss {float(last['train_loss']):.3f}, train error "
            f"{float(last['train_error']):.1f}%, test error {float(last['test_error']):.1f}%")


def summarize_train_step(json_path):
    """img/s per framework, the ratio to PyTorch, and every memory number (MB) of each row."""
    try:
        rows = json.loads(json_path.read_text())["rows"]
    except (OSError, ValueError, KeyError):
        return "no JSON"
    parts = []
    for row in rows:
        numbers = [f"{key[:-6]} {value:.0f} img/s" for key, value in row.items()
                   if key.endswith("_img_s")]
        numbers += [f"{key} {value:.2f}x" for key, value in row.items()
                    if key.startswith("ratio_vs_")]
        numbers += [f"{name[:-7]} {key} {value:.0f}" for name, memory in row.items()
                    if name.endswith("_memory") and isinstance(memory, dict)
                    for key, value in memory.items() if isinstance(value, (int, float))]
        parts.append(f"{row.get('model')} B={row.get('batch')}: " + ", ".join(numbers))
    return "; ".join(parts)


# --- running --------------------------------------------------------------------------------------

def run_step(command, seconds, env):
    """(exit status or 'timeout', seconds taken, output); a step that hangs is killed with its
    children, and the next step runs."""
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=seconds)
        status = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        status = "timeout"
    return status, time.monotonic() - start, output


def default_log():
    return Path(os.environ["OUT"]) / "gpu_check.log" if os.environ.get("OUT") else (
        ROOT / "runs" / "gpu_check.log")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, default=None,
                        help="the log file (default $OUT/gpu_check.log, else runs/gpu_check.log)")
    parser.add_argument("--standin", action="store_true",
                        help="dry run: the same steps on the CPU stand-in for CuPy, tiny sizes")
    args = parser.parse_args(argv)
    log = args.log or default_log()
    log.parent.mkdir(parents=True, exist_ok=True)
    files = Path(tempfile.mkdtemp(prefix="gpu_check_"))  # the steps' outputs; KEPT are kept
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    if not args.standin:
        env["MINIRES_CUDA_TUTORIALS"] = "all"  # all seven: tests/test_cuda_tutorials.py
    plan = steps(files, args.standin)
    print(f"gpu_check{' --standin' if args.standin else ''}: {len(plan)} steps, at most "
          f"{sum(s[2] for s in plan)} s; log {log}", flush=True)
    results = []
    with open(log, "w") as handle:
        for name, command, seconds, summarize in plan:
            step_env = dict(env, **STEP_ENV.get(name, {}))
            handle.write(f"=== {name} ({time.strftime('%H:%M:%S')}, at most {seconds} s)\n"
                         f"$ {' '.join(command)}\n")
            handle.flush()
            status, taken, output = run_step(command, seconds, step_env)
            handle.write(f"{output}\nexit status: {status}, {taken:.1f} s\n\n")
            handle.flush()
            results.append((name, "pass" if status == 0 else f"FAIL ({status})", taken,
                            summarize(output)))
            print(f"  {name}: {results[-1][1]} in {taken:.0f} s", flush=True)
        table = summary_table(results)
        handle.write(table + "\n")
    print(table)
    kept = keep_files(files, log.with_name(log.stem + "_files"))
    print(f"log: {log}; files: {', '.join(str(k) for k in kept)}")
    return 0 if all(r[1] == "pass" for r in results) else 1


def keep_files(scratch, folder):
    """Move the KEPT files from the steps' scratch folder to `folder`, drop the rest; returns
    the paths kept (a lease copies back few files: the log and these)."""
    kept = []
    for name in KEPT:
        if (scratch / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            kept.append(Path(shutil.move(str(scratch / name), str(folder / name))))
    shutil.rmtree(scratch, ignore_errors=True)
    return kept


def summary_table(results):
    lines = [f"{'step':<12}{'result':<14}{'seconds':>8}  key numbers", "-" * 100]
    lines += [f"{name:<12}{result:<14}{taken:>8.1f}  {numbers}"
              for name, result, taken, numbers in results]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
