"""minires as a guest in the user's process: op outputs are the process's own memory.

After `fork` (os.fork, a multiprocessing fork Pool) parent and child each compute on their own
inputs and must get exactly what a run that never forked gets, value for value, and a child's
writes into arrays it inherited must not reach the parent. Holding very many small outputs at
once must not exhaust anything that later, unrelated allocations need (each output once was a
memory mapping of its own, and the kernel's limit on mappings ran out at 65,140 of them).
"""
import multiprocessing
import os
import sys

import numpy as np
import pytest

import minires
import minires.functional as F

pytestmark = [pytest.mark.cpu_only,
              pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")]

ROUNDS = 40  # per process: each round a conv, a batch norm, a relu, a residual add and backward


def run_ops(seed, rounds=ROUNDS):
    """[(y, dx, dw) for each round], copies: the values the ops gave, on inputs made from seed.

    Every round keeps its outputs alive until the end, so that the rounds of another process, if
    they wrote into the same memory, would change them."""
    rng = np.random.default_rng(seed)
    w = minires.tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    gamma, beta = minires.tensor(np.ones(4), requires_grad=True), minires.tensor(np.zeros(4))
    held, results = [], []
    for _ in range(rounds):
        x = minires.tensor(rng.standard_normal((2, 3, 8, 8)), requires_grad=True)
        y = F.conv2d(x, w, None, 1, 1)
        out = F.residual_add(F.relu(F.batch_norm(y, gamma, beta)), y)
        (out * out).sum().backward()
        held.append((out, x.grad, w.grad))
        w.grad = None
    for out, dx, dw in held:
        results.append((out.numpy().copy(), dx.numpy().copy(), dw.numpy().copy()))
    return results


def assert_same(got, want, who):
    for i, (a, b) in enumerate(zip(got, want)):
        for name, u, v in zip(("y", "dx", "dw"), a, b):
            np.testing.assert_array_equal(u, v, err_msg=f"{who}, round {i}, {name}")


@pytest.fixture(scope="module")
def unforked():
    """What seeds 1 and 2 give in a process that never forked (this one, before any fork)."""
    return {seed: run_ops(seed) for seed in (1, 2)}


def test_os_fork_parent_and_child_compute_alike(unforked):
    read, write = os.pipe()
    inherited = F.relu(minires.tensor(np.arange(1.0, 65537.0))).data  # a fast-op-sized output
    pid = os.fork()
    if pid == 0:  # the child: run seed 2, write into the inherited output, report, leave
        code = 1
        try:
            got = run_ops(2)
            inherited[...] = -1.0
            mismatches = sum(not all(np.array_equal(u, v) for u, v in zip(a, b))
                             for a, b in zip(got, unforked[2]))
            os.write(write, str(mismatches).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    try:
        got = run_ops(1)                                  # at the same time as the child
    finally:
        _, status = os.waitpid(pid, 0)
    report = os.read(read, 64).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0 and report == "0", \
        f"the child's rounds differ from an unforked run: {report or 'no report'}"
    assert_same(got, unforked[1], "parent")
    np.testing.assert_array_equal(inherited, np.arange(1.0, 65537.0))  # the child's write stayed


def child_rounds(seed):
    return run_ops(seed)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_a_fork_pool_computes_as_an_unforked_run(unforked):
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pending = pool.map_async(child_rounds, [1, 2])
        here = run_ops(2)                                 # while the workers run
        there = pending.get(timeout=120)
    assert_same(here, unforked[2], "parent")
    assert_same(there[0], unforked[1], "worker 1")
    assert_same(there[1], unforked[2], "worker 2")


@pytest.mark.slow
def test_a_hundred_thousand_held_outputs_leave_allocation_working():
    """100,000 small conv2d outputs held at once (the kernel's default limit on mappings is
    65,530), then new arrays and new ops still work and every held value is right."""
    x = minires.tensor(np.arange(16.0).reshape(1, 1, 4, 4))
    w = minires.tensor(np.ones((1, 1, 3, 3)))
    want = F.conv2d(x, w, None, 1, 1).numpy().copy()
    with minires.no_grad():
        held = [F.conv2d(x, w, None, 1, 1) for _ in range(100_000)]
    fresh = np.ones(2**20)                                 # unrelated allocations afterwards
    again = F.conv2d(minires.tensor(np.ones((2, 3, 32, 32))), minires.tensor(np.ones((4, 3, 3, 3))))
    assert fresh.sum() == 2**20 and again.shape == (2, 4, 30, 30)
    np.testing.assert_array_equal(np.stack([y.numpy() for y in held]),
                                  np.broadcast_to(want, (100_000, *want.shape)))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
