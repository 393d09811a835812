"""HuBERT forward passes whose result for an utterance does not depend on its batch.

HuBERT base's first convolution is followed by a GroupNorm over time. In a zero-padded
batch its statistics include the padding, so every frame of a shorter utterance changes;
fairseq's ``forward_padding_mask`` also derives the frame mask by reshaping the sample
mask, which can mark a frame valid that the utterance alone does not have. Here frame
counts come from the convolution arithmetic and the GroupNorm statistics from each
utterance's valid frames only. Every later step only looks at valid frames (the
convolutions' receptive fields lie inside the utterance, the transformer masks padded
keys), so an utterance gets the same features alone or next to much longer ones.
"""

import contextlib
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from fairseq.models.hubert import HubertModel
from fairseq.modules import GradMultiply

from fairseq_flea.hubert.fast_paths import padding_known_on_host
from fairseq_flea.io.frames import conv_output_length


def default_device() -> torch.device:
    """Where models run unless told otherwise: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def full_float32_precision(enabled: bool = True) -> Iterator[None]:
    """TF32 off for cuDNN convolutions and cuBLAS matrix products inside (no effect on CPUs).

    PyTorch runs CUDA convolutions in TF32 by default (10 mantissa bits); a padded batch
    and a single utterance then take different kernels, and HuBERT features of the same
    utterance differed by 4.5e-3 on an H100, against 1e-5 in full float32.
    """
    if not enabled:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def pad_waveforms(waveforms: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D waveforms with zeros into a (batch, samples) tensor, plus their lengths."""
    lengths = torch.tensor([len(waveform) for waveform in waveforms])
    batch = waveforms[0].new_zeros(len(waveforms), int(lengths.max()))
    for row, waveform in enumerate(waveforms):
        batch[row, : len(waveform)] = waveform
    return batch, lengths


def padding_mask_from_lengths(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """(batch, max_length) bool mask, True on padded positions."""
    positions = torch.arange(max_length, device=lengths.device)
    return positions[None, :] >= lengths[:, None]


def to_device_without_waiting(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; a copy from the host to a GPU is queued, not waited for (a
    blocking copy waits for everything queued on the GPU before it)."""
    if tensor.device == device or device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def masked_group_norm(x: torch.Tensor, lengths: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """``norm`` applied to (batch, channels, time) with statistics over valid time steps only."""
    batch, channels, steps = x.shape
    groups = norm.num_groups
    valid = (~padding_mask_from_lengths(to_device_without_waiting(lengths, x.device), steps)).float()
    grouped = x.float().reshape(batch, groups, channels // groups, steps)
    weight = valid[:, None, None, :]
    count = weight.sum(dim=-1, keepdim=True) * (channels // groups)
    mean = (grouped * weight).sum(dim=(-2, -1), keepdim=True) / count
    variance = (((grouped - mean) * weight) ** 2).sum(dim=(-2, -1), keepdim=True) / count
    normalised = ((grouped - mean) / torch.sqrt(variance + norm.eps)).reshape(batch, channels, steps)
    if norm.affine:
        normalised = normalised * norm.weight[None, :, None] + norm.bias[None, :, None]
    return normalised.type_as(x)


def conv_features(
    extractor: nn.Module, source: torch.Tensor, lengths: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """fairseq's ConvFeatureExtractionModel on a padded batch, GroupNorm restricted to valid steps.

    Returns (batch, channels, frames) features and each utterance's number of frames, on
    the device ``lengths`` are on (counted on the host, they cost the GPU nothing).
    """
    x = source.unsqueeze(1)
    for block in extractor.conv_layers:
        conv = block[0]
        x = conv(x)
        lengths = conv_output_length(lengths, conv.kernel_size[0], conv.stride[0])
        for module in block[1:]:
            x = masked_group_norm(x, lengths, module) if isinstance(module, nn.GroupNorm) else module(x)
    return x, lengths


def hubert_forward(
    model: HubertModel,
    source: torch.Tensor,
    lengths: Union[torch.Tensor, Sequence[int]],
    output_layer: Optional[int] = None,
    mask: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """HuBERT's features-only forward on a padded batch, independent of the batch's padding.

    ``lengths``: each utterance's samples. Given on the host (a list, or a tensor on the
    CPU), they tell whether any frame is padded without asking the GPU
    (``fast_paths.padding_known_on_host``). ``output_layer`` is 1-based as in fairseq (None:
    the last layer); ``mask`` applies the model's time/channel masking (fine-tuning-time
    augmentation). Returns (batch, frames, dim) outputs and the (batch, frames) padding
    mask, True on padded frames.
    """
    lengths = torch.as_tensor(lengths)
    # Waveforms are read and normalised in float32; a model in bf16/fp16 takes its own dtype.
    source = source.to(model.feature_extractor.conv_layers[0][0].weight.dtype)
    if model.feature_grad_mult > 0:
        features, utterance_frames = conv_features(model.feature_extractor, source, lengths)
        if model.feature_grad_mult != 1.0:
            features = GradMultiply.apply(features, model.feature_grad_mult)
    else:
        with torch.no_grad():
            features, utterance_frames = conv_features(model.feature_extractor, source, lengths)
    features = model.layer_norm(features.transpose(1, 2))
    if model.post_extract_proj is not None:
        features = model.post_extract_proj(features)
    features = model.dropout_input(features)
    padding_mask = padding_mask_from_lengths(to_device_without_waiting(utterance_frames, features.device),
                                             features.size(1))
    if utterance_frames.device.type == "cpu":
        padding_known_on_host(model, padding_mask, pads_nothing=bool((utterance_frames == features.size(1)).all()))
    if mask:
        features, _ = model.apply_mask(features, padding_mask, None)
    x, _ = model.encoder(
        features,
        padding_mask=padding_mask,
        layer=None if output_layer is None else output_layer - 1,
    )
    return x, padding_mask


def unpad_frames(x: torch.Tensor, padding_mask: torch.Tensor) -> List[torch.Tensor]:
    """Split a (batch, frames, dim) output into each utterance's valid frames."""
    return [row[~row_mask] for row, row_mask in zip(x, padding_mask)]
