"""The trainer's per-step seeding and mode switch (fairseq_flea.tasks.step_bookkeeping) leave
generators and modules exactly as fairseq's calls do."""

import pytest
import torch
import torch.nn as nn
from fairseq import utils

import fairseq_flea  # noqa: F401
from fairseq_flea.tasks.step_bookkeeping import SetTorchSeed, seed_only_the_devices_present, switch_train_mode_only_when_changed
from test_fast_paths import tiny_hubert


def test_fairseqs_trainer_seeds_through_the_plugin_only_once_a_training_asks():
    fairseqs = utils.set_torch_seed
    assert fairseqs is not SetTorchSeed  # importing the plugin changes nothing
    try:
        seed_only_the_devices_present()
        assert utils.set_torch_seed is SetTorchSeed
    finally:
        utils.set_torch_seed = fairseqs


@pytest.mark.parametrize("seed", [0, 1337, 2**40])
def test_seeding_leaves_the_generator_as_torch_manual_seed_does(seed):
    torch.manual_seed(seed)
    expected, expected_draw = torch.get_rng_state(), torch.rand(3)
    torch.manual_seed(seed + 1)
    SetTorchSeed(seed)
    assert torch.equal(torch.get_rng_state(), expected)
    assert torch.equal(torch.rand(3), expected_draw)


def test_as_a_context_manager_it_restores_the_generator_as_fairseqs_does():
    torch.manual_seed(7)
    before = torch.get_rng_state()
    with SetTorchSeed(3):
        seeded = torch.rand(2)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(3)
    assert torch.equal(seeded, torch.rand(2))


def test_the_mode_switch_returns_early_only_when_nothing_changes():
    model = switch_train_mode_only_when_changed(tiny_hubert())
    assert "train" in vars(model)
    assert model.train() is model and all(module.training for module in model.modules())
    model.eval()
    assert not any(module.training for module in model.modules())
    model.encoder.layers[1].train()  # one layer switched on its own: the next call reaches it
    model.eval()
    assert not any(module.training for module in model.modules())
    model.train(True)
    assert all(module.training for module in model.modules())
    with pytest.raises(ValueError):
        model.train("yes")  # fairseq's own check of the argument still runs


class RemembersSwitches(nn.Linear):
    def train(self, mode: bool = True):
        self.switched = mode
        return super().train(mode)


def test_a_model_with_its_own_train_keeps_it():
    model = nn.Sequential(nn.Linear(2, 2), RemembersSwitches(2, 2))
    switch_train_mode_only_when_changed(model)
    assert "train" not in vars(model)
    model.train()
    assert model[1].switched is True
