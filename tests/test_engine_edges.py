"""Engine edges from issue 24: an empty batch is an error naming the op, and a Trainer checks its
loaders when it is built (an empty test set used to be a ZeroDivisionError after a whole epoch)."""
import numpy as np
import pytest

import minires
import minires.functional as F
from minires import Tensor
from minires.data import DataLoader, synthetic_cifar
from minires.models import cifar_resnet
from minires.optim import SGD
from minires.train import Trainer, evaluate


def test_cross_entropy_on_an_empty_batch_names_the_op_and_the_shapes():
    logits = Tensor(np.zeros((0, 10), np.float32), requires_grad=True)
    with pytest.raises(ValueError, match=r"^cross_entropy: the batch is empty.*logits: \(0, 10\), "
                                         r"labels: \(0,\)"):
        F.cross_entropy(logits, np.zeros(0, np.int64))


def loaders(n_test):
    data = synthetic_cifar(32, max(n_test, 1), image_size=8, seed=0)
    train = DataLoader(data.x_train, data.y_train, 16, shuffle=False)
    test = DataLoader(data.x_test[:n_test], data.y_test[:n_test], 16, shuffle=False)
    return train, test


def test_a_trainer_with_an_empty_test_set_is_refused_when_built():
    minires.manual_seed(0)
    model = cifar_resnet(8, width=4)
    train_loader, test_loader = loaders(n_test=0)
    with pytest.raises(ValueError, match="Trainer: the test loader yields no batches"):
        Trainer(model, SGD(model.parameters(), lr=0.1), train_loader, test_loader, epochs=1,
                progress=False)
    with pytest.raises(ValueError, match="evaluate: the loader yields no batches"):
        evaluate(model, test_loader)
