"""The GPU training step without hidden work: gradients written into the fused optimizer's flat
buffer (optim/_flat.py's slots), labels checked on the host, and a whole warm step (forward,
backward, fused SGD) run under the stand-in's capture(), where any host read, blocking sync or
host-to-device copy raises. benchmarks/gpu_launches.py, run here, counts the launches."""
import contextlib
import gc
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minires
from helpers import make
from minires import models
from minires import functional as F
from minires.fast import gpu
from minires.optim import SGD, _flat

import cupy_standin

ROOT = Path(__file__).resolve().parents[2]
on_the_standin = pytest.mark.skipif(not cupy_standin.is_registered(), reason="a real GPU answers")


@pytest.fixture
def gpu_fast_ops(monkeypatch):
    monkeypatch.setenv(gpu.ENV_SWITCH, "1")


def resnet_and_batch(device, dtype=np.float32, batch=4, size=8):
    minires.manual_seed(0)
    model = models.cifar_resnet(8).astype(dtype).to(device).train()
    rng = np.random.default_rng(0)
    x = make(rng.standard_normal((batch, 3, size, size)).astype(dtype), device)
    y = make(rng.integers(0, 10, batch), device)
    return model, x, y


@pytest.mark.cuda
@on_the_standin
def test_a_warm_fast_step_has_no_host_read_sync_or_upload(gpu_fast_ops):
    model, x, y = resnet_and_batch("cuda")
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, fused=True)
    for capturing in (False, True):  # the first step builds the flat buffers (an upload)
        with cupy_standin.counting() as book, \
                cupy_standin.capture() if capturing else contextlib.nullcontext():
            optimizer.zero_grad()  # under capture(), a host read, sync or upload would raise
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    assert book.launches > 100 and (book.syncs, book.h2d, book.d2h) == (0, 0, 0), book


@pytest.mark.cuda
@on_the_standin
def test_the_label_check_reads_the_range_on_the_host():
    logits = make(np.zeros((3, 4), np.float32), "cuda")
    labels = make(np.array([0, 3, 1]), "cuda")  # moved by to_device: its range stays behind
    with cupy_standin.capture():
        F.cross_entropy(logits, labels)
    computed = minires.Tensor(labels.data + 1)  # made on the device: read back, then refused
    with cupy_standin.counting() as book, pytest.raises(ValueError, match=r"\[0, 4\), got 1..4"):
        F.cross_entropy(logits, computed)
    assert book.syncs == 2


def grads_after(device, fused, passes, shared=False):
    """Parameter gradients of two steps' worth of work: `passes` backward passes before the
    second step (accumulating), optionally with the first conv applied twice (a shared weight)."""
    model, x, y = resnet_and_batch(device, np.float64)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, fused=fused)

    def loss():
        h = model.conv1(x)
        if shared:
            h = h + model.conv1(x)
        for layer in (model.bn1, F.relu, model.layer1, model.layer2, model.layer3):
            h = layer(h)
        return F.cross_entropy(model.fc(F.global_avg_pool2d(h)), y)

    optimizer.zero_grad()
    loss().backward()
    optimizer.step()
    optimizer.zero_grad()
    for _ in range(passes):
        loss().backward()
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    optimizer.step()
    return grads, [p.numpy() for p in model.parameters()]


@pytest.mark.parametrize("passes, shared", [(1, False), (2, False), (1, True)],
                         ids=["one-pass", "accumulated", "shared-weight"])
def test_gradients_in_the_flat_buffer_equal_the_unfused_ones(device, gpu_fast_ops, passes,
                                                             shared):
    fused = grads_after(device, True, passes, shared)
    unfused = grads_after(device, False, passes, shared)
    for got, want in zip(fused[0] + fused[1], unfused[0] + unfused[1]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.cuda
def test_the_gpu_ops_write_their_weight_gradients_into_the_slots(gpu_fast_ops):
    model, x, y = resnet_and_batch("cuda")
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True)
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    bucket = optimizer._buckets[0][1][0]
    in_place = {name for (name, p), view in zip(model.named_parameters(), bucket.grad_views)
                if p.grad.data is view}
    names = {name for name, _ in model.named_parameters()}
    assert in_place == names - {"fc.weight", "fc.bias"}  # linear is a reference op: copied in


# --- benchmarks/gpu_launches.py -------------------------------------------------------------------

def run_gpu_launches(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_launches.py"), *args],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stdout


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tqdm") is None, reason="the Trainer needs tqdm")
def test_gpu_launches_counts_a_resnet20_step_within_the_issues_budget():
    """Issue 26's bar: a ResNet-20 step at B=128 on the fast path in at most 600 launches, with no
    blocking sync in forward, backward or the optimizer step. Counted at 8x8 pixels: the counts
    do not depend on the image size while the last stage's maps are larger than 1x1 (checked at
    12x12 for ResNet-20 here; the README's table was also counted at 32x32, the same counts)."""
    counts, output = run_gpu_launches("--size", "8", "--depths", "20", "56")
    fast = counts["resnet20"]["fast"]
    assert fast["launches"] <= 600, output
    assert all(fast[phase]["syncs"] == 0 for phase in ("forward", "backward", "optimizer"))
    assert fast["h2d"] == 0 and counts["resnet20"]["reference"]["launches"] > 3 * fast["launches"]
    assert counts["resnet56"]["fast"]["launches"] > fast["launches"]
    assert counts["resnet20"]["trainer_fast"]["launches"] >= fast["launches"]
    larger, _ = run_gpu_launches("--size", "12", "--depths", "20")
    for config in ("reference", "fast", "trainer_fast"):
        for field in ("launches", "syncs", "h2d", "d2h"):
            assert larger["resnet20"][config][field] == counts["resnet20"][config][field]


def test_a_dropped_optimizer_takes_its_gradient_slots_with_it(device):
    model, x, y = resnet_and_batch(device)
    optimizer = SGD(model.parameters(), lr=0.1, fused=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    ids = {id(p.data) for p in model.parameters()}
    assert ids <= set(_flat._slots)
    del optimizer
    gc.collect()
    assert not ids & set(_flat._slots)
