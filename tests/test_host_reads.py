"""conftest's host_reads counts every way a value leaves tensors for the host, once each."""

import numpy as np
import pytest
import torch

from conftest import host_reads

t = torch.arange(5)
mask = t > 2


@pytest.mark.parametrize("reads, read", [
    (0, lambda: t + 1),
    (0, lambda: t.to("cpu")),  # a move to the device named, not told apart on CPU tensors
    (1, lambda: t.sum().item()),
    (1, lambda: bool(t.any())),
    (1, lambda: 1 if t.any() else 0),
    (1, lambda: int(t[0])),
    (1, lambda: float(t[1])),
    (1, lambda: f"{t[2]}"),
    (1, lambda: t.tolist()),
    (1, lambda: t.cpu()),
    (1, lambda: t.numpy()),
    (1, lambda: np.asarray(t)),
    (1, lambda: t.cpu().tolist()),  # the .cpu() is the read
    (1, lambda: t[mask]),  # nonzero sizes the output
    (1, lambda: torch.where(mask)),
    (2, lambda: torch.bincount(t)),  # CUDA's copies its input's min and max to the host
    (0, lambda: t.clone().__setitem__(mask, 0)),  # index_put_ reads the 0 it was given
    (3, lambda: [t.tolist(), t[0].item(), torch.nn.Parameter(torch.ones(2)).tolist()]),
])
def test_host_reads(reads, read):
    assert host_reads(read) == reads


def test_host_reads_leaves_the_tensor_methods_as_they_were():
    methods = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy", "cpu")}
    with pytest.raises(ZeroDivisionError):
        host_reads(lambda: t.tolist() and 1 / 0)
    assert {name: getattr(torch.Tensor, name) for name in methods} == methods
    assert all(name not in vars(torch.Tensor) for name in methods)
