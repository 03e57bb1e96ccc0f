"""minires.optim against torch.optim (float64, step by step), state_dict round trips, errors."""
import numpy as np
import pytest

from helpers import import_torch
from minires import backend
from minires.autograd import Tensor
from minires.nn.parameter import Parameter
from minires.optim import SGD, Adam, lr_scheduler

SHAPES = [(3, 4), (4,), (2, 3, 2), ()]


def make_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for shape in SHAPES]


def make_params(arrays, device="cpu"):
    return [Parameter(backend.to_device(a.copy(), device)) for a in arrays]


def gradients(step, skip_some=False):
    """The same random gradients for both frameworks; with skip_some, some are None (no grad)."""
    rng = np.random.default_rng(1000 + step)
    grads = [rng.standard_normal(shape) for shape in SHAPES]
    if skip_some:
        grads = [None if (i + step) % 3 == 0 else g for i, g in enumerate(grads)]
    return grads


def set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad = None if g is None else Tensor(backend.to_device(g.copy(), p.device))


def run(make_opt, params, steps, start=0, skip_some=False):
    opt = make_opt(params)
    for step in range(start, start + steps):
        set_grads(params, gradients(step, skip_some))
        opt.step()
    return opt


def assert_steps_match_torch(optimizer, kwargs, device, groups=list, skip_some=False, steps=10):
    """Same params and gradients in both: parameters agree to 1e-12 after every step.

    `optimizer` is SGD or Adam; `groups(params)` builds what both constructors receive.
    """
    torch = import_torch()
    arrays = make_arrays()
    params = make_params(arrays, device)
    torch_params = [torch.tensor(a, requires_grad=True) for a in arrays]
    opt = optimizer(groups(params), **kwargs)
    torch_opt = getattr(torch.optim, optimizer.__name__)(groups(torch_params), **kwargs)
    for step in range(steps):
        grads = gradients(step, skip_some)
        set_grads(params, grads)
        for tp, g in zip(torch_params, grads):
            tp.grad = None if g is None else torch.tensor(g)
        opt.step()
        torch_opt.step()
        for p, tp in zip(params, torch_params):
            np.testing.assert_allclose(backend.to_numpy(p.data), tp.detach().numpy(),
                                       rtol=0, atol=1e-12, err_msg=f"step {step}")


SGD_CONFIGS = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9),
    "nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, weight_decay=0.01),
    "dampening": dict(lr=0.1, momentum=0.8, dampening=0.3),
    "everything": dict(lr=0.07, momentum=0.9, dampening=0.1, weight_decay=5e-4),
    "nesterov_weight_decay": dict(lr=0.1, momentum=0.5, nesterov=True, weight_decay=1e-2),
}
ADAM_CONFIGS = {
    "default": dict(),
    "weight_decay": dict(lr=0.01, weight_decay=0.1),
    "betas_eps": dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6),
}


@pytest.mark.parametrize("config", SGD_CONFIGS)
@pytest.mark.parametrize("skip_some", [False, True], ids=["all_grads", "some_grads_none"])
@pytest.mark.torch
def test_sgd_matches_torch(config, device, skip_some):
    assert_steps_match_torch(SGD, SGD_CONFIGS[config], device, skip_some=skip_some)


@pytest.mark.parametrize("config", ADAM_CONFIGS)
@pytest.mark.parametrize("skip_some", [False, True], ids=["all_grads", "some_grads_none"])
@pytest.mark.torch
def test_adam_matches_torch(config, device, skip_some):
    assert_steps_match_torch(Adam, ADAM_CONFIGS[config], device, skip_some=skip_some)


@pytest.mark.parametrize("optimizer", [SGD, Adam])
@pytest.mark.torch
def test_param_groups_match_torch(optimizer):
    def groups(ps):
        return [{"params": ps[:2], "lr": 0.3}, {"params": ps[2:], "weight_decay": 0.1}]

    assert_steps_match_torch(optimizer, dict(lr=0.01), "cpu", groups=groups)


# --- learning-rate schedules ------------------------------------------------------------------

SCHEDULES = {
    "multistep": lambda m, o: m.MultiStepLR(o, milestones=[5, 12, 12, 20], gamma=0.3),
    "cosine": lambda m, o: m.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
    "cosine_no_min": lambda m, o: m.CosineAnnealingLR(o, T_max=30),
    "linear": lambda m, o: m.LinearLR(o, start_factor=0.1, end_factor=0.9, total_iters=8),
    "warmup_multistep": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.01, total_iters=5),
            m.MultiStepLR(o, milestones=[10, 20], gamma=0.1)], milestones=[5]),
    "warmup_cosine": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.2, total_iters=4),
            m.CosineAnnealingLR(o, T_max=26, eta_min=1e-4)], milestones=[4]),
}


def two_group_sgd():
    ps = make_params(make_arrays())
    return SGD([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.02}], lr=0.1, momentum=0.9)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.torch
def test_schedule_matches_torch(name):
    torch = import_torch()
    opt = two_group_sgd()
    tps = [torch.zeros(1, requires_grad=True) for _ in range(2)]
    torch_opt = torch.optim.SGD([{"params": tps[:1]}, {"params": tps[1:], "lr": 0.02}], lr=0.1,
                                momentum=0.9)
    sched = SCHEDULES[name](lr_scheduler, opt)
    torch_sched = SCHEDULES[name](torch.optim.lr_scheduler, torch_opt)
    for epoch in range(31):
        expected = torch_sched.get_last_lr()
        np.testing.assert_allclose(sched.get_last_lr(), expected, rtol=0, atol=1e-12)
        np.testing.assert_allclose([g["lr"] for g in opt.param_groups], expected,
                                   rtol=0, atol=1e-12)
        assert sched.last_epoch == epoch
        torch_opt.step()  # torch warns when the scheduler steps before the optimizer
        sched.step()
        torch_sched.step()


def save_and_load(flat, path):
    """Check the flat state_dict contract, write it to .npz and read it back without pickle."""
    for key, value in flat.items():
        assert isinstance(key, str)
        assert isinstance(value, (np.ndarray, int, float, bool)), (key, type(value))
    np.savez(path, **flat)
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_state_dict_round_trip(name, tmp_path):
    opt = two_group_sgd()
    sched = SCHEDULES[name](lr_scheduler, opt)
    for _ in range(7):
        sched.step()
    saved = save_and_load(sched.state_dict(), tmp_path / "sched.npz")
    expected = []
    for _ in range(10):
        sched.step()
        expected.append(sched.get_last_lr())
    resumed = SCHEDULES[name](lr_scheduler, two_group_sgd())
    resumed.load_state_dict(saved)
    assert resumed.last_epoch == 7
    got = []
    for _ in range(10):
        resumed.step()
        got.append(resumed.get_last_lr())
    assert got == expected


def test_schedule_state_dict_wrong_kind_raises():
    opt = two_group_sgd()
    cosine = lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    with pytest.raises(ValueError, match="missing keys.*milestones"):
        multistep = lr_scheduler.MultiStepLR(two_group_sgd(), milestones=[3])
        multistep.load_state_dict(cosine.state_dict())


def test_schedule_errors():
    opt = two_group_sgd()
    with pytest.raises(ValueError, match="start_factor"):
        lr_scheduler.LinearLR(opt, start_factor=0)
    with pytest.raises(ValueError, match="T_max"):
        lr_scheduler.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="2 schedulers need 1 milestones"):
        lr_scheduler.SequentialLR(opt, [lr_scheduler.LinearLR(opt), lr_scheduler.LinearLR(opt)], [])
    with pytest.raises(ValueError, match="another optimizer"):
        lr_scheduler.SequentialLR(opt, [lr_scheduler.LinearLR(two_group_sgd())], [])


# --- optimizer state_dict ------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd_nesterov": lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd_plain": lambda ps: SGD(ps, lr=0.1),
    "adam": lambda ps: Adam(ps, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip_is_exact(name, device, tmp_path):
    make_opt = OPTIMIZERS[name]
    uninterrupted = make_params(make_arrays(), device)
    run(make_opt, uninterrupted, 6, skip_some=True)

    first = make_params(make_arrays(), device)
    saved = save_and_load(run(make_opt, first, 3, skip_some=True).state_dict(),
                          tmp_path / "opt.npz")
    resumed = make_params([backend.to_numpy(p.data) for p in first], device)
    opt = make_opt(resumed)
    opt.load_state_dict(saved)
    for step in range(3, 6):
        set_grads(resumed, gradients(step, skip_some=True))
        opt.step()
    for a, b in zip(resumed, uninterrupted):
        assert np.array_equal(backend.to_numpy(a.data), backend.to_numpy(b.data))
        assert backend.device_of(a.data) == device


def test_state_dict_resume_with_schedule(tmp_path):
    """Optimizer + SequentialLR saved in one .npz, resumed: same parameters, bit for bit."""
    def make(params):
        opt = SGD(params, lr=0.1, momentum=0.9)
        return opt, SCHEDULES["warmup_multistep"](lr_scheduler, opt)

    def train(params, opt, sched, steps):
        for step in steps:
            set_grads(params, gradients(step))
            opt.step()
            sched.step()

    uninterrupted = make_params(make_arrays())
    train(uninterrupted, *make(uninterrupted), range(12))
    first = make_params(make_arrays())
    opt, sched = make(first)
    train(first, opt, sched, range(6))
    flat = {**{"optim." + k: v for k, v in opt.state_dict().items()},
            **{"sched." + k: v for k, v in sched.state_dict().items()}}
    saved = save_and_load(flat, tmp_path / "ckpt.npz")
    resumed = make_params([p.data for p in first])
    opt, sched = make(resumed)
    opt.load_state_dict({k[6:]: v for k, v in saved.items() if k.startswith("optim.")})
    sched.load_state_dict({k[6:]: v for k, v in saved.items() if k.startswith("sched.")})
    train(resumed, opt, sched, range(6, 12))
    for a, b in zip(resumed, uninterrupted):
        assert np.array_equal(a.data, b.data)


def test_state_dict_is_a_snapshot_and_load_copies():
    params = make_params(make_arrays())
    opt = run(OPTIMIZERS["adam"], params, 2)
    flat = opt.state_dict()
    before = {k: np.copy(v) for k, v in flat.items() if isinstance(v, np.ndarray)}
    run(lambda ps: opt, params, 2, start=2)
    assert all(np.array_equal(flat[k], v) for k, v in before.items())
    opt.load_state_dict(flat)
    run(lambda ps: opt, params, 1, start=4)
    assert all(np.array_equal(flat[k], v) for k, v in before.items())


def test_loaded_hyperparameters_keep_their_types(tmp_path):
    opt = Adam(make_params(make_arrays()), betas=(0.8, 0.9))
    saved = save_and_load(opt.state_dict(), tmp_path / "adam.npz")
    fresh = Adam(make_params(make_arrays()))
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["betas"] == (0.8, 0.9)
    assert type(fresh.param_groups[0]["lr"]) is float


def test_load_state_dict_mismatch_raises():
    sgd = run(OPTIMIZERS["sgd_nesterov"], make_params(make_arrays()), 2)
    flat = sgd.state_dict()
    other_shapes = [Parameter(np.zeros((4, 3))), *make_params(make_arrays())[1:]]
    with pytest.raises(ValueError, match=r"momentum_buffer has shape \(3, 4\), parameter 0"):
        OPTIMIZERS["sgd_nesterov"](other_shapes).load_state_dict(flat)
    with pytest.raises(ValueError, match="unexpected key 'momentum'"):
        fresh = OPTIMIZERS["sgd_nesterov"](make_params(make_arrays()))
        fresh.load_state_dict({**flat, "momentum": 1})
    with pytest.raises(ValueError, match="group 0 lacks"):
        OPTIMIZERS["adam"](make_params(make_arrays())).load_state_dict(flat)
    with pytest.raises(ValueError, match="holds parameters"):
        OPTIMIZERS["sgd_nesterov"](make_params(make_arrays())[:3]).load_state_dict(flat)
    fresh = make_params(make_arrays())
    with pytest.raises(ValueError, match="parameter groups"):
        SGD([{"params": fresh[:2]}, {"params": fresh[2:]}], lr=0.1).load_state_dict(flat)


# --- behaviour ---------------------------------------------------------------------------------

def test_zero_grad_clears():
    params = make_params(make_arrays())
    opt = SGD(params, lr=0.1)
    set_grads(params, gradients(0))
    opt.zero_grad()
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_params_without_grad_are_skipped(name):
    params = make_params(make_arrays())
    before = [p.data.copy() for p in params]
    opt = OPTIMIZERS[name](params)
    grads = gradients(0)
    grads[1] = None
    set_grads(params, grads)
    opt.step()
    assert np.array_equal(params[1].data, before[1])
    assert not opt.state.get(params[1])
    assert not np.array_equal(params[0].data, before[0])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_updates_in_place(name):
    params = make_params(make_arrays())
    arrays = [p.data for p in params]
    opt = OPTIMIZERS[name](params)
    set_grads(params, gradients(0))
    opt.step()
    assert all(p.data is a for p, a in zip(params, arrays))


def test_errors_are_clear():
    params = make_params(make_arrays())
    with pytest.raises(ValueError, match="SGD: invalid learning rate -0.1"):
        SGD(params, lr=-0.1)
    with pytest.raises(ValueError, match="Adam: invalid learning rate -1"):
        Adam(params, lr=-1)
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        SGD(params, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="dampening == 0"):
        SGD(params, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="invalid learning rate"):
        SGD([{"params": params[:1], "lr": -1}, {"params": params[1:]}], lr=0.1)
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        Adam(params, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="wrap it in a list"):
        SGD(params[0], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([{"params": params}, {"params": params[:1]}], lr=0.1)


def test_grad_shape_mismatch_raises():
    params = make_params(make_arrays())
    opt = SGD(params, lr=0.1)
    params[0].grad = Tensor(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"shape \(3, 4\) has a grad of shape \(4, 3\)"):
        opt.step()


# --- fused steps (optim/_flat.py): one flat update per group, the unfused result bit for bit -----

FUSED_CASES = {**{f"sgd_{k}": (SGD, v) for k, v in SGD_CONFIGS.items()},
               **{f"adam_{k}": (Adam, v) for k, v in ADAM_CONFIGS.items()}}


def run_both(optimizer, kwargs, device, steps, skip_some, groups=list):
    """The same gradients through an unfused and a fused optimizer, step by step."""
    pairs = []
    for fused in (False, True):
        params = make_params(make_arrays(), device)
        pairs.append((params, optimizer(groups(params), fused=fused, **kwargs)))
    for step in range(steps):
        for params, opt in pairs:
            set_grads(params, gradients(step, skip_some))
            opt.step()
        yield pairs


def assert_same_params_and_state(pairs, what):
    (plain, plain_opt), (fused, fused_opt) = pairs
    for i, (a, b) in enumerate(zip(plain, fused)):
        assert np.array_equal(backend.to_numpy(a.data), backend.to_numpy(b.data)), f"{what} p{i}"
        assert b.data.shape == a.data.shape and backend.device_of(b.data) == backend.device_of(a.data)
    plain_state, fused_state = plain_opt.state_dict(), fused_opt.state_dict()
    assert plain_state.keys() == fused_state.keys()
    for key, value in plain_state.items():
        assert np.array_equal(value, fused_state[key]), f"{what}: {key}"


@pytest.mark.parametrize("case", FUSED_CASES)
@pytest.mark.parametrize("skip_some", [False, True], ids=["all_grads", "some_grads_none"])
def test_fused_step_is_the_unfused_step_bit_for_bit(case, device, skip_some):
    optimizer, kwargs = FUSED_CASES[case]
    for step, pairs in enumerate(run_both(optimizer, kwargs, device, 6, skip_some)):
        assert_same_params_and_state(pairs, f"step {step}")


def test_fused_step_uses_one_buffer_per_group_and_dtype(device):
    params = make_params(make_arrays(), device)
    params[1] = Parameter(params[1].data.astype(np.float32))
    opt = SGD([{"params": params[:3]}, {"params": params[3:]}], lr=0.1, momentum=0.9, fused=True)
    set_grads(params, gradients(0))
    params[1].grad = Tensor(params[1].grad.data.astype(np.float32))
    opt.step()
    bases = [p.data.base for p in params]
    assert bases[0] is bases[2] and bases[0] is not None   # group 0, float64
    assert bases[1] is not bases[0]                        # group 0, float32: its own buffer
    assert bases[3] is not bases[0]                        # group 1
    momentum = [opt.state[p]["momentum_buffer"] for p in params]
    assert momentum[0].base is momentum[2].base and momentum[0].base is not None


def test_fused_step_follows_replaced_parameter_arrays(device):
    """model.load_state_dict and .to() rebind p.data: the next fused step rebuilds its buffer."""
    steps = run_both(SGD, SGD_CONFIGS["nesterov_weight_decay"], device, 4, skip_some=False)
    pairs = next(steps)
    for params, _ in pairs:
        params[2].data = params[2].data * 0.5   # a new array, as load_state_dict assigns
    for step, pairs in enumerate(steps, start=1):
        assert_same_params_and_state(pairs, f"step {step}")
    fused = pairs[1][0]
    assert fused[2].data.base is fused[0].data.base


@pytest.mark.parametrize("name", ["sgd_nesterov", "adam"])
def test_fused_optimizer_loads_a_state_dict(name, device, tmp_path):
    """An unfused optimizer's saved state resumes in a fused one, bit for bit."""
    make_opt = OPTIMIZERS[name]
    uninterrupted = make_params(make_arrays(), device)
    run(make_opt, uninterrupted, 6)
    first = make_params(make_arrays(), device)
    saved = save_and_load(run(make_opt, first, 3).state_dict(), tmp_path / "opt.npz")
    resumed = make_params([backend.to_numpy(p.data) for p in first], device)
    opt = make_opt(resumed)
    opt.fused = True
    opt.load_state_dict(saved)
    for step in range(3, 6):
        set_grads(resumed, gradients(step))
        opt.step()
    for a, b in zip(resumed, uninterrupted):
        assert np.array_equal(backend.to_numpy(a.data), backend.to_numpy(b.data))


@pytest.mark.parametrize("case", ["sgd_everything", "sgd_nesterov", "adam_weight_decay"])
def test_fused_step_after_a_step_with_a_missing_gradient(case, device):
    """Flat steps, one step where a parameter has no gradient (the per-parameter update), flat
    steps again: still the unfused result bit for bit."""
    optimizer, kwargs = FUSED_CASES[case]
    pairs = []
    for fused in (False, True):
        params = make_params(make_arrays(), device)
        pairs.append((params, optimizer(params, fused=fused, **kwargs)))
    for step in range(6):
        grads = gradients(step)
        if step == 2:
            grads[1] = None
        for params, opt in pairs:
            set_grads(params, grads)
            opt.step()
        assert_same_params_and_state(pairs, f"step {step}")
    fused_params, fused_opt = pairs[1]
    if optimizer is SGD:  # the momentum buffers are views of one flat buffer again
        buffers = [fused_opt.state[p]["momentum_buffer"] for p in fused_params]
        assert all(b.base is buffers[0].base and b.base is not None for b in buffers)
