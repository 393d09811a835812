"""A FLEA emotion classifier for transformers: HuBERT, utterance pooling (soft attention or
mean over valid frames) and a linear head, with the batch-invariant feature encoder of
fairseq-flea (the first convolution's GroupNorm takes its statistics from each utterance's
valid samples only, so padding in a batch does not change a file's result).

This file is copied beside the weights by ``tools/export_model.py huggingface`` and loaded with
``trust_remote_code=True``; it imports torch and transformers only.

    model = AutoModelForAudioClassification.from_pretrained(DIR, trust_remote_code=True)
    out = model(input_values, attention_mask=attention_mask)
    out.logits, out.frame_weights, out.frame_logits  # frame outputs are 0 on padded frames
"""

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
from transformers import HubertConfig, HubertModel, HubertPreTrainedModel
from transformers.utils import ModelOutput


class FleaHubertConfig(HubertConfig):
    model_type = "flea_hubert"

    def __init__(self, pooling: str = "attention", **kwargs):
        super().__init__(**kwargs)
        self.pooling = pooling


@dataclass
class FleaClassifierOutput(ModelOutput):
    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None  # (batch, classes) = sum_i frame_weights[i] * frame_logits[i]
    frame_weights: Optional[torch.FloatTensor] = None  # (batch, frames): pooling weight, 0 on padding
    frame_logits: Optional[torch.FloatTensor] = None  # (batch, frames, classes): the head on each frame


def frame_lengths(config: HubertConfig, sample_lengths: torch.Tensor) -> torch.Tensor:
    """Frames per utterance from the convolution arithmetic."""
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        sample_lengths = torch.div(sample_lengths - kernel, stride, rounding_mode="floor") + 1
    return sample_lengths


def masked_group_norm(x: torch.Tensor, valid: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """``norm`` on (batch, channels, time), statistics over the valid steps (``valid``: batch x time, 1/0).
    The arithmetic of ``fairseq_flea.hubert.forward.masked_group_norm``, written again because
    this file travels with the weights and must not need fairseq_flea installed."""
    batch, channels, steps = x.shape
    groups = norm.num_groups
    grouped = x.float().reshape(batch, groups, channels // groups, steps)
    weight = valid.float()[:, None, None, :]
    count = weight.sum(dim=-1, keepdim=True) * (channels // groups)
    mean = (grouped * weight).sum(dim=(-2, -1), keepdim=True) / count
    variance = (((grouped - mean) * weight) ** 2).sum(dim=(-2, -1), keepdim=True) / count
    normalised = ((grouped - mean) / torch.sqrt(variance + norm.eps)).reshape(batch, channels, steps)
    if norm.affine:
        normalised = normalised * norm.weight[None, :, None] + norm.bias[None, :, None]
    return normalised.type_as(x)


class FleaHubertForAudioClassification(HubertPreTrainedModel):
    config_class = FleaHubertConfig

    def __init__(self, config: FleaHubertConfig):
        super().__init__(config)
        self.hubert = HubertModel(config)
        if config.pooling == "attention":
            self.pooling_score = nn.Linear(config.hidden_size, 1, bias=False)
        elif config.pooling != "mean":
            raise ValueError(f"unknown pooling {config.pooling!r}: 'attention' or 'mean'")
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def conv_features(self, input_values: torch.Tensor, sample_lengths: torch.Tensor):
        x = input_values[:, None]
        lengths = sample_lengths
        for layer in self.hubert.feature_extractor.conv_layers:
            norm = getattr(layer, "layer_norm", None)
            if isinstance(norm, nn.GroupNorm):
                x = layer.conv(x)
                lengths = torch.div(lengths - layer.conv.kernel_size[0], layer.conv.stride[0], rounding_mode="floor") + 1
                valid = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]
                x = layer.activation(masked_group_norm(x, valid, norm))
            else:
                x = layer(x)
                lengths = torch.div(lengths - layer.conv.kernel_size[0], layer.conv.stride[0], rounding_mode="floor") + 1
        return x.transpose(1, 2), lengths

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        **kwargs,
    ) -> FleaClassifierOutput:
        if attention_mask is None:
            sample_lengths = torch.full((input_values.shape[0],), input_values.shape[1], device=input_values.device)
        else:
            sample_lengths = attention_mask.long().sum(-1)
        features, lengths = self.conv_features(input_values, sample_lengths)
        valid = torch.arange(features.shape[1], device=features.device)[None, :] < lengths[:, None]
        hidden = self.hubert.feature_projection(features)
        frames = self.hubert.encoder(hidden, attention_mask=valid).last_hidden_state
        if self.config.pooling == "attention":
            scores = torch.tanh(self.pooling_score(frames)).squeeze(-1).float()
            weights = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=-1).type_as(frames)
        else:
            weights = valid.type_as(frames) / valid.type_as(frames).sum(dim=-1, keepdim=True)
        pooled = torch.einsum("bt,btd->bd", weights, frames)
        logits = self.classifier(pooled)
        frame_logits = self.classifier(frames) * valid[..., None].type_as(frames)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, self.config.num_labels), labels.view(-1))
        return FleaClassifierOutput(loss=loss, logits=logits, frame_weights=weights, frame_logits=frame_logits)
