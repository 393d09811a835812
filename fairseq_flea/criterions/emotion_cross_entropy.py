"""Criterion ``emotion_cross_entropy``: cross entropy over utterance classes, logging WA and UA.

UA (mean per-class recall) is derived from per-class counts summed over everything the
logging aggregator saw, so on validation it is the UA of the whole validation set, not a
mean of per-batch values; ``checkpoint.best_checkpoint_metric=ua`` selects by it.
"""

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics



def unweighted_accuracy(correct: Sequence[float], total: Sequence[float]) -> Optional[float]:
    """Mean recall over the classes that occur; None when none does."""
    recalls = [c / t for c, t in zip(correct, total) if t > 0]
    return sum(recalls) / len(recalls) if recalls else None


@dataclass
class EmotionCrossEntropyConfig(FairseqDataclass):
    class_weighted: bool = field(
        default=False,
        metadata={"help": "weight each class by inverse frequency (counts from dict.{labels}.txt)"},
    )


def inverse_frequency_weights(counts: List[int]) -> torch.Tensor:
    """N / (K * count_k): a class that is half as frequent weighs twice as much."""
    counts_tensor = torch.tensor(counts, dtype=torch.float).clamp(min=1)
    return counts_tensor.sum() / (len(counts) * counts_tensor)


def class_counts(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per class: how many targets it has, and how many of them the logits' argmax gets
    right (float32 tensors of ``num_classes``, on the logits' device)."""
    hits = (logits.argmax(dim=-1) == target).long()
    pairs = torch.bincount(target * 2 + hits, minlength=2 * num_classes).view(num_classes, 2).float()
    return pairs.sum(dim=1), pairs[:, 1]


@register_criterion("emotion_cross_entropy", dataclass=EmotionCrossEntropyConfig)
class EmotionCrossEntropyCriterion(FairseqCriterion):
    def __init__(self, task, class_weighted: bool = False):
        super().__init__(task)
        self.num_classes = len(task.class_names)
        dictionary = task.target_dictionary
        counts = dictionary.count[dictionary.nspecial :]
        # A plain attribute, not a buffer: fairseq casts the criterion to fp16/bf16 with the
        # model, and the loss is computed in fp32 whatever the training precision.
        self.class_weights = inverse_frequency_weights(counts) if class_weighted else None

    def forward(self, model, sample, reduce: bool = True):
        output = model(**sample["net_input"])
        logits, target = output["logits"], sample["target"]
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        loss = F.cross_entropy(logits.float(), target, weight=weight, reduction="sum" if reduce else "none")
        totals, correct = class_counts(logits.detach(), target, self.num_classes)
        # One read from the device for the loss and every count: each read waits for it.
        summed_loss = [loss.detach().float().reshape(1)] if reduce else []
        values = torch.cat([*summed_loss, totals, correct]).tolist()
        logging_output = {
            "loss": values[0] if reduce else loss.detach(),
            "sample_size": target.numel(),
            "nsentences": target.numel(),
            "ntokens": sample["ntokens"],
        }
        for k in range(self.num_classes):
            logging_output[f"total_{k}"] = int(values[-2 * self.num_classes + k])
            logging_output[f"correct_{k}"] = int(values[-self.num_classes + k])
        return loss, target.numel(), logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        loss = sum(log.get("loss", 0) for log in logging_outputs)
        metrics.log_scalar("loss", loss / max(sample_size, 1) / math.log(2), sample_size, round=3)
        class_keys = sorted(
            int(key.split("_")[1]) for key in logging_outputs[0] if key.startswith("total_")
        ) if logging_outputs else []
        for k in class_keys:
            metrics.log_scalar_sum(f"_total_{k}", sum(log.get(f"total_{k}", 0) for log in logging_outputs))
            metrics.log_scalar_sum(f"_correct_{k}", sum(log.get(f"correct_{k}", 0) for log in logging_outputs))
        if class_keys:
            metrics.log_derived("wa", lambda meters: round_percent(
                sum(meters[f"_correct_{k}"].sum for k in class_keys) / max(sum(meters[f"_total_{k}"].sum for k in class_keys), 1)
            ))
            metrics.log_derived("ua", lambda meters: round_percent(unweighted_accuracy(
                [meters[f"_correct_{k}"].sum for k in class_keys], [meters[f"_total_{k}"].sum for k in class_keys]
            )))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def round_percent(fraction: Optional[float]) -> float:
    return float("nan") if fraction is None else round(100.0 * fraction, 2)
