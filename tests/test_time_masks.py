"""Time masks drawn on the device are distributed as fairseq's compute_mask_indices draws
them, without waiting for the device, and go into the model as fairseq puts them."""

import numpy as np
import pytest
import torch
from fairseq.data.data_utils import compute_mask_indices
from fairseq.models.hubert import HubertModel

from conftest import host_reads
from fairseq_flea.hubert.fast_path_names import parse_fast_paths
from fairseq_flea.hubert.time_masks import apply_time_mask_on_device, span_time_mask
from test_fast_paths import tiny_hubert, use_fast_paths, use_fast_training_paths

FRAMES, MASK_LENGTH, DRAWS = 300, 10, 300
UTTERANCE_FRAMES = [300, 280, 240, 200, 150, 90]  # the rest of each row is padding


def padding_mask() -> torch.Tensor:
    return torch.arange(FRAMES).unsqueeze(0) >= torch.tensor(UTTERANCE_FRAMES).unsqueeze(1)


def draws(draw, mask_prob: float) -> np.ndarray:
    return np.stack([np.asarray(draw(mask_prob, number), dtype=bool) for number in range(DRAWS)])


def fairseq_draw(mask_prob, number):
    # Seeded through fairseq's own seed/epoch/indices, so the comparison repeats exactly (its
    # training draws come from the operating system's entropy).
    return compute_mask_indices((len(UTTERANCE_FRAMES), FRAMES), padding_mask(), mask_prob, MASK_LENGTH,
                                "static", 0.0, min_masks=2, seed=number, epoch=1,
                                indices=torch.arange(len(UTTERANCE_FRAMES)))


def device_draw(mask_prob, number=None):
    return span_time_mask((len(UTTERANCE_FRAMES), FRAMES), padding_mask(), mask_prob, MASK_LENGTH, 2,
                          torch.device("cpu"))


@pytest.mark.parametrize("mask_prob", [0.8, 0.08])  # tapt_base's and ser_*_base's
def test_masks_are_distributed_as_fairseqs(mask_prob):
    torch.manual_seed(0)
    fairseq, ours = draws(fairseq_draw, mask_prob), draws(device_draw, mask_prob)
    for masks in (fairseq, ours):
        counts = masks.sum(axis=2)
        assert (counts == counts[:, :1]).all()  # every utterance as many masked frames as the fewest
        assert not (masks & padding_mask().numpy()).any()
    fairseq_mean, our_mean = fairseq.sum(axis=2).mean(), ours.sum(axis=2).mean()
    assert our_mean == pytest.approx(fairseq_mean, rel=0.03)
    # Where in each utterance the masked frames fall: 30-frame bins, per utterance.
    binned = [masks.reshape(DRAWS, len(UTTERANCE_FRAMES), FRAMES // 30, 30).mean(axis=(0, 3)) for masks in (fairseq, ours)]
    assert np.abs(binned[0] - binned[1]).max() < 0.05


def test_one_utterance_is_masked_in_whole_spans():
    torch.manual_seed(1)
    for _ in range(50):
        mask = span_time_mask((1, FRAMES), None, 0.8, MASK_LENGTH, 2, torch.device("cpu"))[0].numpy()
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
        runs = edges[1::2] - edges[::2]
        assert len(runs) > 0 and (runs >= MASK_LENGTH).all()


def test_masks_repeat_with_torchs_seed():
    torch.manual_seed(7)
    first = device_draw(0.8)
    torch.manual_seed(7)
    assert torch.equal(first, device_draw(0.8))


def test_masking_does_not_wait_for_the_device():
    """fairseq reads each utterance's length with .item(), a wait for the GPU each, and puts
    the mask embedding in by a boolean index (nonzero: one more); the device draw reads
    nothing back (counted on CPU, where the same operators run)."""
    model = tiny_hubert().train()
    x = torch.randn(len(UTTERANCE_FRAMES), FRAMES, 64)
    assert host_reads(lambda: HubertModel.apply_mask(model, x.clone(), padding_mask(), None)) == len(UTTERANCE_FRAMES) + 1
    assert host_reads(lambda: apply_time_mask_on_device(model, x.clone(), padding_mask(), None)) == 0


def test_masked_frames_take_the_mask_embedding_as_fairseq_puts_it():
    model = tiny_hubert().train()
    features = torch.randn(len(UTTERANCE_FRAMES), FRAMES, 64, requires_grad=True)
    weights = torch.randn(len(UTTERANCE_FRAMES), FRAMES, 64)
    masked, mask = apply_time_mask_on_device(model, features, padding_mask(), None)
    ours = torch.autograd.grad((masked * weights).sum(), [features, model.mask_emb])

    reference = features.clone()
    reference[mask] = model.mask_emb  # fairseq's apply_mask, given the same mask
    assert torch.equal(masked, reference)
    fairseqs = torch.autograd.grad((reference * weights).sum(), [features, model.mask_emb])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, fairseqs))  # summation order
    assert mask.any() and not mask.all()


def test_the_training_paths_draw_masks_on_the_device():
    model = use_fast_training_paths(tiny_hubert())
    assert model.apply_mask.__func__ is apply_time_mask_on_device
    model = use_fast_paths(tiny_hubert(), parse_fast_paths("all,-device-time-masks"))
    assert model.apply_mask.__func__ is HubertModel.apply_mask
