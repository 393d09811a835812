"""Utterance pooling over valid frames: the paper's soft attention (eq. 2-3) and the mean."""

from typing import Tuple

import torch
import torch.nn as nn


class AttentionPooling(nn.Module):
    """``a_i = softmax_i(tanh(W x_i))``, ``Z = sum_i a_i x_i`` with ``W`` in R^{1 x D};
    padded frames get weight 0."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1, bias=False)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        scores = torch.tanh(self.score(x)).squeeze(-1).float()
        weights = torch.softmax(scores.masked_fill(padding_mask, float("-inf")), dim=-1).type_as(x)
        return torch.einsum("bt,btd->bd", weights, x), weights


class MeanPooling(nn.Module):
    """The mean of the valid frames (weights 1/N on them, 0 on padding)."""

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        valid = (~padding_mask).type_as(x)
        weights = valid / valid.sum(dim=-1, keepdim=True)
        return torch.einsum("bt,btd->bd", weights, x), weights


def build_pooling(kind: str, dim: int) -> nn.Module:
    if kind == "attention":
        return AttentionPooling(dim)
    if kind == "mean":
        return MeanPooling()
    raise ValueError(f"unknown pooling {kind!r}: 'attention' or 'mean'")
