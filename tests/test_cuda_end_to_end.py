"""End to end on the cuda device (a real GPU, or the CuPy stand-in without one): the main job's
numbers, checkpoints across devices, and the errors a GPU user can meet.

`python -m minires gradients --device cuda` and `python -m minires train --device cuda` run as
commands in test_cuda_gpu_check.py (the gpu_check dry run, which also loads the checkpoint on the
CPU). The inspect tools on cuda tensors are the `cuda` variants in test_inspect.py (record, the
"+1" split, jacobian, detect_anomaly) and test_gradcheck_ops.py (gradcheck of every op).
"""

import numpy as np
import pytest

import minires
from minires import backend, inspect, models, nn
from minires import functional as F
from minires.checkpoint import load_checkpoint, save_checkpoint
from minires.optim import SGD

pytestmark = pytest.mark.cuda


def _sgd_step(model, optimizer, x, y):
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


@pytest.mark.parametrize("source, target", [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_moves_between_devices_and_training_goes_on_the_same(source, target,
                                                                           tmp_path):
    x, y, _ = inspect.one_batch(4, "synthetic", 0, source)
    minires.manual_seed(0)
    model = models.cifar_resnet(8).to(source).train()
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    _sgd_step(model, optimizer, x, y)
    path = save_checkpoint(tmp_path / "c.npz", model=model.state_dict(),
                           optimizer=optimizer.state_dict())

    minires.manual_seed(1)  # different weights, all overwritten by the checkpoint
    moved = models.cifar_resnet(8).to(target).train()
    moved_optimizer = SGD(moved.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sections = load_checkpoint(path)
    moved.load_state_dict(sections["model"])
    moved_optimizer.load_state_dict(sections["optimizer"])
    assert {p.device for p in moved.parameters()} == {target}
    assert {backend.device_of(b) for _, b in moved.named_buffers()} == {target}

    _sgd_step(model, optimizer, x, y)  # the momentum buffers matter in this second step
    _sgd_step(moved, moved_optimizer, x.to(target), y.to(target))
    for (name, p), q in zip(model.named_parameters(), moved.parameters()):
        np.testing.assert_allclose(q.numpy(), p.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_the_main_jobs_compare_on_cuda_gives_the_cpu_numbers():
    """What `minires gradients --device cuda` calls (it crashed on the GPU: record_gradients moved
    the input back to the default device, the CPU, while the net was on the GPU)."""
    on_cuda, _ = inspect.compare([8], batch_size=4, device="cuda")
    on_cpu, _ = inspect.compare([8], batch_size=4, device="cpu")
    for key in on_cpu:
        for stat in ("input_grad_norm", "shortcut_grad_norm", "branch_grad_norm"):
            got = [b.get(stat, 0.0) for b in on_cuda[key].block_stats]
            want = [b.get(stat, 0.0) for b in on_cpu[key].block_stats]
            np.testing.assert_allclose(got, want, rtol=1e-3, err_msg=f"{key} {stat}")


@pytest.fixture
def memory_limit():
    """set(extra_bytes): let the cuda memory pool hold only `extra_bytes` more than it holds now
    (cupy.get_default_memory_pool().set_limit: real CuPy and the stand-in alike)."""
    pool = backend.cupy_module().get_default_memory_pool()

    def set_limit(extra_bytes):
        pool.free_all_blocks()  # CuPy counts its cached free blocks against the limit too
        pool.set_limit(size=pool.used_bytes() + extra_bytes)
    yield set_limit
    pool.set_limit(size=0)


def _conv_net(device):
    minires.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1)).to(device)


def test_out_of_gpu_memory_in_forward_names_the_op_the_layer_and_the_shapes(memory_limit):
    net, x = _conv_net("cuda"), minires.tensor(np.ones((8, 3, 32, 32), np.float32), device="cuda")
    memory_limit(100_000)  # the conv's columns need 8*27*1024*4 bytes (884,736)
    with pytest.raises(MemoryError) as info:
        net(x)
    message = str(info.value)
    assert isinstance(info.value, backend.DeviceOutOfMemoryError), message
    for part in ("conv2d forward in layer '0'", "out of GPU memory allocating",
                 "(8, 3, 32, 32) float32", "(16, 3, 3, 3) float32", "bytes", "smaller batch"):
        assert part in message, message


def test_out_of_gpu_memory_in_backward_names_the_op_and_the_shapes(memory_limit):
    net = _conv_net("cuda")
    x = minires.tensor(np.ones((8, 3, 32, 32), np.float32), device="cuda", requires_grad=True)
    loss = net(x).sum()
    memory_limit(600_000)  # room for dL/dy (524,288 bytes), not for the conv's (884,736)
    with pytest.raises(MemoryError) as info:
        loss.backward()
    message = str(info.value)
    for part in ("conv2d backward in layer '0'", "gradient (8, 16, 32, 32) float32",
                 "input 0 (8, 3, 32, 32) float32"):
        assert part in message, message


def test_cuda_without_cupy_says_how_to_install_it(without_cuda, monkeypatch):
    for ask in (lambda: minires.tensor([1.0], device="cuda"),
                lambda: nn.Linear(2, 2).to("cuda"),
                lambda: (monkeypatch.setenv("MINIRES_DEVICE", "cuda"), minires.tensor([1.0]))):
        with pytest.raises(RuntimeError) as info:
            ask()
        for part in ("needs CuPy", "pip install cupy-cuda12x", "cupy-cuda13x", "nvidia-smi"):
            assert part in str(info.value), str(info.value)
