"""The emotion criterion logs what it did before (loss, per-class totals and hits) with one
read of them from the device instead of one per value; counting the hits with bincount costs
two reads more on a GPU."""

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from fairseq.data import Dictionary

import fairseq_flea  # noqa: F401
from conftest import host_reads
from fairseq_flea.criterions.emotion_cross_entropy import EmotionCrossEntropyCriterion

CLASSES = ["ang", "hap", "neu", "sad"]


class FixedLogits(torch.nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, **net_input):
        return {"logits": self.logits}


def criterion() -> EmotionCrossEntropyCriterion:
    dictionary = Dictionary()
    for name in CLASSES:
        dictionary.add_symbol(name)
    return EmotionCrossEntropyCriterion(SimpleNamespace(class_names=CLASSES, target_dictionary=dictionary))


def test_logs_the_loss_and_each_class_hits_with_one_read_of_them_and_bincounts_two():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(37, len(CLASSES), generator=generator)
    target = torch.randint(0, len(CLASSES), (37,), generator=generator)
    target[:3] = 3  # a class with hits and misses, whatever the draw
    sample = {"net_input": {}, "target": target, "ntokens": 37}
    loss, sample_size, logged = criterion()(FixedLogits(logits), sample)
    reads = host_reads(lambda: criterion()(FixedLogits(logits), sample))

    # The .tolist() of the loss and the counts, and CUDA's bincount copying its input's min and
    # max to the host (conftest's READING_OPERATORS_ON_CUDA); .item() per value before: 1 + 2 per class.
    assert reads == 1 + 2
    assert sample_size == 37 and logged["loss"] == F.cross_entropy(logits, target, reduction="sum").item()
    predicted = logits.argmax(dim=-1)
    for k in range(len(CLASSES)):
        assert logged[f"total_{k}"] == int((target == k).sum())
        assert logged[f"correct_{k}"] == int(((target == k) & (predicted == k)).sum())
    assert sum(logged[f"correct_{k}"] for k in range(len(CLASSES))) == int((predicted == target).sum()) > 0


def test_unreduced_losses_stay_per_utterance():
    logits, target = torch.randn(5, len(CLASSES)), torch.tensor([0, 1, 2, 3, 3])
    loss, _, logged = criterion()(FixedLogits(logits), {"net_input": {}, "target": target, "ntokens": 5}, reduce=False)
    assert loss.shape == (5,) and logged["loss"].shape == (5,)
    assert [logged[f"total_{k}"] for k in range(len(CLASSES))] == [1, 1, 1, 2]
