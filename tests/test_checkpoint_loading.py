"""Checkpoints are read memory-mapped (fairseq_flea.hubert.checkpoints.read_checkpoint_file)
into what fairseq's own loader gives, whatever torch format they were saved in."""

import pytest
import torch
from fairseq import checkpoint_utils

from conftest import checkpoint_tensors
from fairseq_flea.hubert.checkpoints import read_checkpoint_file


@pytest.mark.parametrize("zip_format", [True, False], ids=["torch-zip", "legacy"])
def test_a_checkpoint_reads_as_fairseqs_loader_reads_it(scratch_run, tmp_path, zip_format):
    path = tmp_path / "checkpoint_last.pt"  # a training checkpoint: weights and optimizer state
    torch.save(torch.load(scratch_run[0], weights_only=False), path, _use_new_zipfile_serialization=zip_format)
    ours, fairseqs = read_checkpoint_file(str(path)), checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert ours.keys() == fairseqs.keys()
    assert type(ours["cfg"]) is type(fairseqs["cfg"]) and ours["cfg"] == fairseqs["cfg"]
    assert ours["optimizer_history"] == fairseqs["optimizer_history"]
    our_tensors, fairseq_tensors = checkpoint_tensors(ours), checkpoint_tensors(fairseqs)
    assert our_tensors.keys() == fairseq_tensors.keys() and any("last_optimizer_state" in k for k in our_tensors)
    assert all(torch.equal(our_tensors[name], tensor) for name, tensor in fairseq_tensors.items())


def test_changing_a_read_tensor_leaves_the_file_as_it_was(scratch_run):
    state = read_checkpoint_file(str(scratch_run[0]))
    name, weight = next(iter(state["model"].items()))
    original = weight.clone()
    weight.add_(1.0)
    assert torch.equal(read_checkpoint_file(str(scratch_run[0]))["model"][name], original)
