"""Optimizers and learning-rate schedules, shaped like torch.optim.

    from minires.optim import SGD, lr_scheduler
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = lr_scheduler.MultiStepLR(opt, milestones=[100, 150], gamma=0.1)
    for epoch in range(epochs):
        for x, y in batches:
            opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
        sched.step()

State dicts are flat {str: numpy array or Python scalar}, ready for np.savez(allow_pickle=False).
"""
from . import lr_scheduler
from .adam import Adam
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "lr_scheduler"]
