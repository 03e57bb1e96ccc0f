"""One full SGD training step of a CIFAR ResNet: minires against PyTorch (and DeZero), in one run.

    python benchmarks/train_step.py                                  # ResNet-20, B=128, CPU
    python benchmarks/train_step.py --model resnet20 resnet56 --batch 32 128 --json out.json
    python benchmarks/train_step.py --device cuda                    # CuPy against torch's GPU
    python benchmarks/train_step.py --device cuda --model resnet20 resnet56 resnet110
    python benchmarks/train_step.py --growth                         # time vs depth and vs batch

A step is forward, cross-entropy, backward and SGD (momentum 0.9, weight decay 5e-4) on a batch of
random 3x32x32 images: the same network in each framework (the paper's CIFAR ResNet with option-A
shortcuts, He init). The frameworks take turns (minires, torch, dezero, minires, ...; see
time_steps) after a warm-up, so drifts in machine load hit all alike; each time is the median of
the repeats. The ratio
is minires img/s over the other's img/s: higher is better for minires, 1.0 is parity.
The load average is printed with the table: on a shared machine, compare ratios, not times.

Peak memory. CPU: each framework runs the same steps again in a child process of its own, and the
table gives that process's peak resident set (VmHWM; it counts the BLAS buffers and whatever
the import costs) and, as "step MB", the peak minus the resident set just before the first step
(activations, gradients, workspaces). GPU: minires's CuPy memory pool after one step from an empty
pool (the pool keeps its high-water mark, like torch's max_memory_reserved) against torch's
max_memory_reserved and max_memory_allocated.

Allocation. minires leaves glibc's malloc as it is: every op output is an ordinary NumPy array,
freed (and its pages given back to the system) when the graph lets go of it. With
`--keep-freed-memory` the run first sets malloc as the `minires` commands may for their own
process (minires/_process.py); that applies to every framework timed in the run.

Without minires/fast (a student build) minires runs its reference ops, and "minires-gpufast" is
skipped with a note.

GPU. On `--device cuda` minires runs twice: "minires", the ops `minires.functional` picks by
default, and "minires-gpufast", the GPU fast ops (minires/fast/gpu.py, what MINIRES_GPU_FAST_OPS=1
turns on) with the fused SGD (one flat update per step). The fast ops are swapped into
minires.functional for that framework's steps only (`gpu_fast_ops`), so the two share a process.
DeZero runs on CuPy there too. An inference table follows (eval mode, no graph: a forward only).

torch and dezero are optional: without them the table has minires's times only.
"""
import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPTHS = (20, 56, 110, 1202)
GROWTH_BATCHES = (32, 64, 128, 256, 512)
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4


def _set_threads(threads):
    """Before numpy/torch load: the thread count of BLAS and of torch's intra-op pool."""
    if threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)


# --- the three frameworks: each returns (step function, synchronize function) ---------------------

@contextlib.contextmanager
def functional_ops(conv2d, batch_norm):
    """minires.functional's conv2d and batch_norm are these two inside the block."""
    sys.path.insert(0, REPO)
    import minires.functional as F

    previous = F.conv2d, F.batch_norm
    F.conv2d, F.batch_norm = conv2d, batch_norm
    try:
        yield
    finally:
        F.conv2d, F.batch_norm = previous


def gpu_fast_ops():
    """The block runs minires/fast/gpu.py's conv2d and batch_norm (see the module docstring)."""
    sys.path.insert(0, REPO)
    from minires.fast import gpu

    return functional_ops(gpu.conv2d, gpu.batch_norm)


def minires_step(depth, batch, device, seed=0, infer=False, gpu_fast=False):
    """A training step (or, with infer, an eval-mode forward with no graph); gpu_fast: the GPU
    fast ops and the fused SGD (see the module docstring)."""
    sys.path.insert(0, REPO)
    import numpy as np

    import minires
    import minires.functional as F
    from minires import backend
    from minires.models import cifar_resnet
    from minires.optim import SGD

    backend.seed(seed)
    model = cifar_resnet(depth).to(device)
    opt = SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
              fused=gpu_fast)
    rng = np.random.default_rng(seed)
    x = minires.tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32), device=device)
    y = minires.tensor(rng.integers(0, 10, batch), device=device)
    ops = gpu_fast_ops if gpu_fast else contextlib.nullcontext

    def step():
        with ops():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    def forward():
        with ops(), minires.no_grad():
            model(x)

    if infer:
        model.eval()
    return (forward if infer else step), lambda: backend.synchronize()


def torch_step(depth, batch, device, seed=0, infer=False):
    import torch
    import torch.nn as nn
    import torch.nn.functional as TF

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.stride, self.extra = stride, cout - cin

        def forward(self, x):
            out = self.bn2(self.conv2(TF.relu(self.bn1(self.conv1(x)))))
            shortcut = x
            if self.stride != 1 or self.extra:  # option A: subsample, zero-pad the channels
                half = self.extra // 2
                shortcut = TF.pad(x[:, :, ::self.stride, ::self.stride],
                                  (0, 0, 0, 0, half, self.extra - half))
            return TF.relu(out + shortcut)

    n = (depth - 2) // 6
    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for stage, cout in enumerate((16, 32, 64)):
        for i in range(n):
            layers.append(Block(cin, cout, 2 if stage and i == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    torch.manual_seed(seed)
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        loss = TF.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def forward():
        with torch.no_grad():
            model(x)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()
    if infer:
        model.eval()
    return (forward if infer else step), sync


def import_dezero():
    """DeZero, whose last release (0.0.13) still names `np.int`, gone since NumPy 1.24: the alias
    is restored (as the builtin int it always was) before the import."""
    import numpy as np
    if "int" not in np.__dict__:
        np.int = int
    import dezero
    return dezero


def dezero_step(depth, batch, device, seed=0, infer=False):
    """The same network in DeZero (the book's framework), on NumPy or (cuda) CuPy."""
    import numpy as np
    dezero = import_dezero()
    import dezero.functions as DF
    import dezero.layers as DL
    from dezero import Function, Model, optimizers

    class PadChannels(Function):  # option A's channel padding; DeZero has no pad op
        def __init__(self, before, after):
            self.before, self.after = before, after

        def forward(self, x):
            xp = dezero.cuda.get_array_module(x)
            return xp.pad(x, ((0, 0), (self.before, self.after), (0, 0), (0, 0)))

        def backward(self, gy):
            return gy[:, self.before:gy.shape[1] - self.after]

    class Block(Model):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = DL.Conv2d(cout, 3, stride, 1, nobias=True, in_channels=cin)
            self.bn1 = DL.BatchNorm()
            self.conv2 = DL.Conv2d(cout, 3, 1, 1, nobias=True, in_channels=cout)
            self.bn2 = DL.BatchNorm()
            self.stride, self.extra = stride, cout - cin

        def forward(self, x):
            out = self.bn2(self.conv2(DF.relu(self.bn1(self.conv1(x)))))
            shortcut = x
            if self.stride != 1 or self.extra:
                half = self.extra // 2
                shortcut = PadChannels(half, self.extra - half)(
                    x[:, :, ::self.stride, ::self.stride])
            return DF.relu(out + shortcut)

    class Net(Model):
        def __init__(self, n):
            super().__init__()
            self.conv1 = DL.Conv2d(16, 3, 1, 1, nobias=True, in_channels=3)
            self.bn1 = DL.BatchNorm()
            self.blocks = []
            cin = 16
            for stage, cout in enumerate((16, 32, 64)):
                for i in range(n):
                    block = Block(cin, cout, 2 if stage and i == 0 else 1)
                    setattr(self, f"block{len(self.blocks)}", block)
                    self.blocks.append(block)
                    cin = cout
            self.fc = DL.Linear(10, in_size=64)

        def forward(self, x):
            out = DF.relu(self.bn1(self.conv1(x)))
            for block in self.blocks:
                out = block(out)
            out = DF.average_pooling(out, out.shape[2])  # global average pool: (N, 64, 1, 1)
            return self.fc(DF.reshape(out, (out.shape[0], -1)))

    np.random.seed(seed)
    model = Net((depth - 2) // 6)
    opt = optimizers.MomentumSGD(lr=LR, momentum=MOMENTUM).setup(model)
    opt.add_hook(optimizers.WeightDecay(WEIGHT_DECAY))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    sync = lambda: None  # noqa: E731
    if device == "cuda":  # DeZero's own GPU path: CuPy arrays, parameters moved by to_gpu
        sys.path.insert(0, REPO)
        from minires import backend
        model.to_gpu()
        x, y = dezero.cuda.as_cupy(x), dezero.cuda.as_cupy(y)
        sync = backend.synchronize

    def step():
        loss = DF.softmax_cross_entropy(model(x), y)
        model.cleargrads()
        loss.backward()
        opt.update()

    def forward():
        with dezero.test_mode(), dezero.no_grad():
            model(x)
    return (forward if infer else step), sync


FRAMEWORKS = {"minires": minires_step, "minires-gpufast": functools.partial(minires_step,
                                                                            gpu_fast=True),
              "torch": torch_step, "dezero": dezero_step}


def is_minires(name):
    return name.startswith("minires")


SHORT = {"minires-gpufast": "fast"}  # column labels


def ratio_keys(frameworks):
    """[(row key, column label, variant, peer)]: each minires variant's img/s over each peer's
    ("ratio_vs_torch" for minires itself, "minires-gpufast_ratio_vs_torch" for the fast one)."""
    peers = [n for n in frameworks if not is_minires(n)]
    keys = []
    for variant in (n for n in frameworks if is_minires(n)):
        for peer in peers:
            prefix = "" if variant == "minires" else f"{variant}_"
            label = f"{SHORT[variant] + ' ' if variant in SHORT else ''}vs {peer}"
            keys.append((f"{prefix}ratio_vs_{peer}", label, variant, peer))
    return keys


def gpu_memory_ratios(row, frameworks):
    """{"<variant>_memory_vs_torch": CuPy pool / torch max_memory_reserved} where both exist."""
    torch_mb = row.get("torch_memory", {}).get("max_reserved_MB")
    return {f"{n}_memory_vs_torch": row[f"{n}_memory"]["pool_MB"] / torch_mb
            for n in frameworks if is_minires(n) and torch_mb
            and "pool_MB" in row.get(f"{n}_memory", {})}


def available(name, device):
    """Whether a framework can run on `device` here (imports it, so call in the timing process)."""
    if name == "minires-gpufast":
        import importlib.util
        sys.path.insert(0, REPO)
        return importlib.util.find_spec("minires.fast") is not None
    try:
        if name == "torch":
            import torch
            return device == "cpu" or torch.cuda.is_available()
        if name == "dezero":
            dezero = import_dezero()
            return device == "cpu" or dezero.cuda.gpu_enable
    except ImportError:
        return False
    return True


def seconds(step, sync):
    sync()
    start = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - start


def time_steps(frameworks, depth, batch, device, repeats, warmup, infer=False):
    """{framework: median seconds per step} (per forward, with infer), the frameworks taking turns.

    Each turn is an untimed step, then a timed one: torch's OpenMP threads keep spinning on the
    cores for a while after its last parallel region (and the caches hold the last framework's
    arrays), which would otherwise slow whichever framework runs right after it.
    """
    steps = {name: FRAMEWORKS[name](depth, batch, device, infer=infer) for name in frameworks}
    for _ in range(warmup):
        for step, sync in steps.values():
            seconds(step, sync)
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, (step, sync) in steps.items():
            seconds(step, sync)
            times[name].append(seconds(step, sync))
    return {name: statistics.median(ts) for name, ts in times.items()}


# --- peak memory ---------------------------------------------------------------------------------

def _proc_status_mb(field):
    """A memory line of /proc/self/status (Linux), in MB: VmRSS (now) or VmHWM (peak).

    Not ru_maxrss: Linux carries that across fork and exec, so a child started by a big parent
    reports the parent's peak as its own.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child_main(name, depth, batch, device, steps):
    """In a fresh process: build, run `steps` steps, print peak memory as one JSON line."""
    step, sync = FRAMEWORKS[name](depth, batch, device)
    result = {}
    if device == "cuda":
        if is_minires(name):
            sys.path.insert(0, REPO)
            from minires import backend
            pool = backend.cupy_module().get_default_memory_pool()
            step()
            sync()
            pool.free_all_blocks()
            step()
            sync()
            result["pool_MB"] = pool.total_bytes() / 2**20
        else:
            import torch
            step()
            sync()
            torch.cuda.reset_peak_memory_stats()
            step()
            sync()
            result["max_allocated_MB"] = torch.cuda.max_memory_allocated() / 2**20
            result["max_reserved_MB"] = torch.cuda.max_memory_reserved() / 2**20
    else:
        before = _proc_status_mb("VmRSS")
        for _ in range(steps):
            step()
        peak = _proc_status_mb("VmHWM")
        result.update(peak_rss_MB=peak, step_MB=peak - before)
    print("MEMORY " + json.dumps(result))


def measure_memory(name, depth, batch, device, threads, steps=2):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, str(depth), str(batch),
           "--device", device, "--memory-steps", str(steps)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("MEMORY "):
            return json.loads(line[len("MEMORY "):])
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}


# --- tables --------------------------------------------------------------------------------------

def run_table(args, frameworks, infer=False):
    rows = []
    for model in args.model:
        depth = int(model.replace("resnet", ""))
        for batch in args.batch:
            t = time_steps(frameworks, depth, batch, args.device, args.repeats, args.warmup, infer)
            row = {"model": model, "batch": batch, "load": os.getloadavg()[0]}
            for name, s in t.items():
                row[f"{name}_ms"] = 1000 * s
                row[f"{name}_img_s"] = batch / s
            for key, _, variant, peer in ratio_keys(frameworks):
                row[key] = row[f"{variant}_img_s"] / row[f"{peer}_img_s"]
            if args.memory and not infer:
                for name in frameworks:
                    row[f"{name}_memory"] = measure_memory(name, depth, batch, args.device,
                                                           args.threads)
                row.update(gpu_memory_ratios(row, frameworks))
            rows.append(row)
            print_row(row, frameworks, args.device, header=len(rows) == 1)
    return rows


def print_row(row, frameworks, device, header):
    cols = [f"{'model':<10}{'batch':>6}"]
    cols += [f"{SHORT.get(n, n) + ' img/s':>14}" for n in frameworks]
    cols += [f"{label:>14}" for _, label, _, _ in ratio_keys(frameworks)]
    mem_names = ("peak MB", "step MB") if device == "cpu" else ("pool MB", "alloc MB")
    if f"{frameworks[0]}_memory" in row:
        cols += [f"{SHORT.get(n, n)[:7] + ' ' + m:>17}" for n in frameworks for m in mem_names]
    memory_ratios = [k for k in row if k.endswith("_memory_vs_torch")]
    cols += [f"{SHORT.get(k[:-16], k[:-16]) + ' mem/torch':>16}" for k in memory_ratios]
    cols += [f"{'load':>6}"]
    if header:
        line = "".join(cols)
        print(line)
        print("-" * len(line))
    out = f"{row['model']:<10}{row['batch']:>6}"
    out += "".join(f"{row[f'{n}_img_s']:>14.1f}" for n in frameworks)
    out += "".join(f"{row[key]:>14.2f}" for key, _, _, _ in ratio_keys(frameworks))
    if f"{frameworks[0]}_memory" in row:
        for n in frameworks:
            mem = row[f"{n}_memory"]
            if device == "cpu":
                values = (mem.get("peak_rss_MB"), mem.get("step_MB"))
            elif is_minires(n):
                values = (mem.get("pool_MB"), None)
            else:
                values = (mem.get("max_reserved_MB"), mem.get("max_allocated_MB"))
            out += "".join(f"{v:>17.0f}" if v is not None else f"{'-':>17}" for v in values)
    out += "".join(f"{row[k]:>16.2f}" for k in memory_ratios)
    out += f"{row['load']:>6.1f}"
    print(out, flush=True)


def run_growth(args, frameworks):
    """Step time against depth (at the first batch size) and against batch (first model)."""
    rows = []
    batch = args.batch[0]
    model = args.model[0]
    print(f"\ngrowth with depth (batch {batch}): ms per step")
    print(f"{'depth':<8}" + "".join(f"{n + ' ms':>14}" for n in frameworks) + f"{'ms/layer':>10}"
          + f"{'load':>6}")
    for depth in args.depths:
        t = time_steps(frameworks, depth, batch, args.device, max(1, args.repeats // 2),
                       max(1, args.warmup // 2))
        row = {"kind": "depth", "depth": depth, "batch": batch, "load": os.getloadavg()[0]}
        row.update({f"{n}_ms": 1000 * s for n, s in t.items()})
        rows.append(row)
        print(f"{depth:<8}" + "".join(f"{row[f'{n}_ms']:>14.1f}" for n in frameworks)
              + f"{row['minires_ms'] / depth:>10.2f}{row['load']:>6.1f}", flush=True)
    depth = int(model.replace("resnet", ""))
    print(f"\ngrowth with batch ({model}): ms per step")
    print(f"{'batch':<8}" + "".join(f"{n + ' ms':>14}" for n in frameworks) + f"{'ms/img':>10}"
          + f"{'load':>6}")
    for b in args.growth_batches:
        t = time_steps(frameworks, depth, b, args.device, args.repeats, args.warmup)
        row = {"kind": "batch", "depth": depth, "batch": b, "load": os.getloadavg()[0]}
        row.update({f"{n}_ms": 1000 * s for n, s in t.items()})
        rows.append(row)
        print(f"{b:<8}" + "".join(f"{row[f'{n}_ms']:>14.1f}" for n in frameworks)
              + f"{row['minires_ms'] / b:>10.2f}{row['load']:>6.1f}", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", nargs="+", default=["resnet20"],
                        help="CIFAR ResNets by name: resnet20 resnet56 resnet110 resnet1202 ...")
    parser.add_argument("--batch", type=int, nargs="+", default=[128])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per framework")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--frameworks", nargs="+", default=None,
                        help="which to run (those not installed are left out; default minires "
                             "torch dezero, and minires-gpufast on cuda)")
    parser.add_argument("--inference", action=argparse.BooleanOptionalAction, default=None,
                        help="also time eval-mode forwards (default: on for cuda)")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak-memory runs (one child process per framework)")
    parser.add_argument("--growth", action="store_true",
                        help="also time steps against depth and against batch size")
    parser.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS))
    parser.add_argument("--growth-batches", type=int, nargs="+", default=list(GROWTH_BATCHES))
    parser.add_argument("--threads", type=int, default=0,
                        help="BLAS and torch threads (default: each library's own choice)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="set glibc's malloc to keep freed memory (minires/_process.py)")
    parser.add_argument("--child", nargs=3, metavar=("FRAMEWORK", "DEPTH", "BATCH"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--memory-steps", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _set_threads(args.threads)
    if args.keep_freed_memory:
        sys.path.insert(0, REPO)
        from minires._process import keep_freed_memory
        print(f"malloc keeps freed memory: {keep_freed_memory()}")

    if args.child:
        name, depth, batch = args.child
        child_main(name, int(depth), int(batch), args.device, args.memory_steps)
        return

    import numpy as np

    if args.frameworks is None:
        args.frameworks = ["minires"] + (["minires-gpufast"] if args.device == "cuda" else []) + [
            "torch", "dezero"]
    frameworks = [n for n in args.frameworks if n == "minires" or available(n, args.device)]
    for name in sorted(set(args.frameworks) - set(frameworks)):
        print(f"skipped {name}: not available here")
    if not any(is_minires(n) for n in frameworks):  # minires-gpufast alone: ResNet-1202's memory
        frameworks.insert(0, "minires")
    versions = {"numpy": np.__version__}
    if "torch" in frameworks:
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        versions["torch"] = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    if "dezero" in frameworks:
        dezero = import_dezero()
        versions["dezero"] = getattr(dezero, "__version__", "?")
    if args.device == "cuda":
        sys.path.insert(0, REPO)
        from minires import backend
        versions["cupy"] = backend.cupy_module().__version__
    print(f"SGD training step (forward, cross-entropy, backward, momentum + weight decay) on "
          f"{args.device}; median of {args.repeats} steps each, taking turns, after "
          f"{args.warmup} warm-up")
    print(", ".join(f"{k} {v}" for k, v in versions.items())
          + f"; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    print("ratio = minires img/s / other img/s (higher is better for minires)\n")
    results = {"setup": {"device": args.device, "repeats": args.repeats, "warmup": args.warmup,
                         "threads": args.threads or None, "versions": versions,
                         "cpus": os.cpu_count(),
                         "machine": platform.processor() or platform.machine(),
                         "load_at_start": os.getloadavg()}}
    results["rows"] = run_table(args, frameworks)
    if args.device == "cuda" if args.inference is None else args.inference:
        print("\ninference: eval-mode forward, no graph (img/s)")
        results["inference"] = run_table(args, frameworks, infer=True)
    if args.growth:
        results["growth"] = run_growth(args, frameworks)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
