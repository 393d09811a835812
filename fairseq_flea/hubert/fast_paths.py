"""Faster, exact ways through fairseq's HuBERT for training, applied to a built model.

Both change how a result is computed, never what it is, and leave the weights, their names
and the checkpoint format alone, so models stay fairseq's own ``hubert``:

- Attention without a padding mask when nothing is padded. fairseq's encoder pads every
  sequence to an even number of frames and always passes a key padding mask, which PyTorch's
  scaled-dot-product attention turns into an additive bias; with a bias it cannot use its
  flash kernel. HuBERT pretraining crops each batch to its shortest utterance, so its masks
  are all False: dropping them (and the extra frame) gives the same attention. (torch 2.11
  on an H100 ran its cuDNN kernel either way: no change measured there.)
- Masked-prediction logits by one matrix product. fairseq's ``compute_nce`` compares every
  frame with every label embedding by expanding them into a (labels + 1, frames, dim)
  float32 tensor (1.6 GB for an 80 s batch with 500 labels) and comparing it elementwise;
  here the same cosine similarities come from normalised vectors and one (frames, labels)
  product, and the positive label's duplicates are masked exactly as fairseq masks them.
  HuBERT-base TAPT on an H100: 1.7x the updates per second, peak memory 13.5 -> 3.0 GiB
  (BENCHMARKS.md).

One more is a candidate, not applied by the tasks until a GPU measures it faster
(``bench/bench_encoder_step.py`` compares it with fairseq's own path):

- The positional convolution by FFT. HuBERT base's ``Conv1d(768, 768, 128, groups=16)`` ran
  on cuDNN's generic kernels on an H100: 33 of 74 ms of kernel time in a TAPT step, for ~3 %
  of the step's FLOPs. As a product of Fourier transforms it needs ~50x fewer FLOPs; it is
  computed in float32 whatever the model's dtype, and matches the convolution to float32
  rounding.
"""

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.models.hubert import HubertModel
from fairseq.modules import MultiheadAttention

COSINE_EPS = 1e-8  # torch.cosine_similarity's default, which fairseq's compute_nce uses


class EmptyMaskCheck:
    """Whether a key padding mask pads nothing, asked once per mask: every layer of the
    encoder receives the same mask tensor, and each ``any()`` waits for the GPU."""

    def __init__(self):
        self.last_mask: Optional[torch.Tensor] = None
        self.last_answer = False

    def pads_nothing(self, mask: torch.Tensor) -> bool:
        if mask is not self.last_mask:
            self.last_mask, self.last_answer = mask, not bool(mask.any())
        return self.last_answer

    def drop_empty_mask(self, module: nn.Module, args: tuple, kwargs: dict):
        mask = kwargs.get("key_padding_mask")
        if mask is not None and self.pads_nothing(mask):
            return args, {**kwargs, "key_padding_mask": None}
        return None


def attend_without_empty_padding_masks(model: nn.Module) -> int:
    """Let every attention layer of ``model`` run unmasked when no key is padded, and stop
    its transformer encoders from padding sequences to an even length; returns the number
    of attention layers changed."""
    for module in model.modules():
        if hasattr(module, "required_seq_len_multiple"):
            # Padding to a multiple of 2 adds a masked frame to odd-length batches; the
            # frame is never attended to, so without it the valid frames are unchanged.
            module.required_seq_len_multiple = 1
    check = EmptyMaskCheck()
    layers = [module for module in model.modules() if isinstance(module, MultiheadAttention)]
    for layer in layers:
        layer.register_forward_pre_hook(check.drop_empty_mask, with_kwargs=True)
    return len(layers)


def label_logits_by_matmul(model: HubertModel, x: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor) -> torch.Tensor:
    """fairseq's ``HubertModel.compute_nce`` without the (labels, frames, dim) tensors.

    ``x``: (frames, dim) projected outputs; ``pos``: (frames, dim) each frame's label
    embedding; ``negs``: (labels, frames, dim), every label's embedding expanded over the
    frames as ``HubertModel.forward`` builds it. Returns (frames, 1 + labels) logits: the
    positive first, then every label, -inf where a label's embedding equals the positive.
    """
    if negs.dim() != 3 or negs.stride(1) != 0:  # not the expanded view (target_glu): fairseq's way
        return HubertModel.compute_nce(model, x, pos, negs)
    embeddings = negs[:, 0].float()
    unit_x = F.normalize(x.float(), dim=-1, eps=COSINE_EPS)
    positive = (unit_x * F.normalize(pos.float(), dim=-1, eps=COSINE_EPS)).sum(-1, keepdim=True)
    negative = unit_x @ F.normalize(embeddings, dim=-1, eps=COSINE_EPS).t()
    with torch.no_grad():
        # Exactly fairseq's (pos == negs).all(-1): the largest absolute difference is 0.
        same_as_positive = torch.cdist(pos.detach().float(), embeddings.detach(), p=float("inf")) == 0
    negative = negative.masked_fill(same_as_positive, float("-inf"))
    return torch.cat([positive, negative], dim=1).type_as(x) / model.logit_temp


def conv1d_by_fft(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a stride-1, undilated, zero-padded Conv1d, as a product of real FFTs in
    float32 (cast back to ``x``'s dtype). Cross-correlation with the kernel is a product with
    its conjugate transform; a transform as long as the padded input leaves every output
    frame free of wrap-around."""
    weight = conv.weight  # after the weight-norm pre-hook has set it
    out_channels, in_per_group, kernel = weight.shape
    groups, padding = conv.groups, conv.padding[0]
    batch, _, frames = x.shape
    length = frames + 2 * padding
    signal = torch.fft.rfft(F.pad(x.float(), (padding, padding)), n=length)
    signal = signal.view(batch, groups, in_per_group, -1)
    response = torch.fft.rfft(weight.float(), n=length).view(groups, out_channels // groups, in_per_group, -1)
    product = torch.einsum("bgif,goif->bgof", signal, response.conj())
    output = torch.fft.irfft(product.reshape(batch, out_channels, -1), n=length)[..., : length - kernel + 1]
    if conv.bias is not None:
        output = output + conv.bias.float()[:, None]
    return output.to(x.dtype)


def positional_convs_by_fft(model: nn.Module) -> int:
    """Run the positional convolution of every transformer encoder in ``model`` by FFT (a
    candidate: see the module's docstring); returns the number of convolutions changed."""
    changed = 0
    for module in model.modules():
        pos_conv = getattr(module, "pos_conv", None)
        convs = [layer for layer in pos_conv.modules() if isinstance(layer, nn.Conv1d)] if pos_conv is not None else []
        for conv in convs:
            if conv.stride != (1,) or conv.dilation != (1,) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
                continue
            conv.forward = conv1d_by_fft.__get__(conv)
            changed += 1
    return changed


def use_fast_training_paths(model: nn.Module) -> nn.Module:
    """Both fast paths on a HuBERT pretraining model (label logits only on a ``HubertModel``)."""
    attend_without_empty_padding_masks(model)
    if isinstance(model, HubertModel):
        model.compute_nce = label_logits_by_matmul.__get__(model)
    return model
