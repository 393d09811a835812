"""Faster, exact ways through fairseq's HuBERT, applied to a built model by ``use_fast_paths`` as
the run's ``fast_paths`` names them (``fast_path_names``; the names in brackets below).

Each changes how a result is computed, never what it is (the time masks: never how they are
distributed), and leaves the weights, their names and the checkpoint format alone, so models
stay fairseq's own ``hubert``:

- Attention without a padding mask when nothing is padded (unmasked-attention, and
  padding-known-on-host for the answer from the host). fairseq's encoder pads every
  sequence to an even number of frames and always passes a key padding mask, which PyTorch's
  scaled-dot-product attention turns into an additive bias; with a bias it cannot use its
  flash kernel. HuBERT pretraining crops each batch to its shortest utterance, so its masks
  are all False: dropping them (and the extra frame) gives the same attention, and lets TAPT
  run the flash kernel once cuDNN's is out of the way (below).
- Self-attention without PyTorch's general ``multi_head_attention_forward`` (direct-attention). fairseq hands
  every layer's attention to that function, which checks its arguments, concatenates the
  three projection biases and builds an additive mask from the key padding mask, in every
  layer of every step. The direct path makes the same projections and the same
  scaled-dot-product attention call on tensors of the same shapes and strides, so the same
  kernel gives the same numbers bit for bit; the additive mask is built once per batch.
  7 operators fewer per layer, forward and backward, and less Python.
- Masked-prediction logits by one matrix product (matmul-label-logits). fairseq's ``compute_nce`` compares every
  frame with every label embedding by expanding them into a (labels + 1, frames, dim)
  float32 tensor (1.6 GB for an 80 s batch with 500 labels) and comparing it elementwise;
  here the same cosine similarities come from normalised vectors and one (frames, labels)
  product, and the positive label's duplicates are masked exactly as fairseq masks them.
  HuBERT-base TAPT on an H100: 1.7x the updates per second, peak memory 13.5 -> 3.0 GiB
  (BENCHMARKS.md).

- The positional convolution by FFT (fft-positional-conv, fast-fft-sizes). HuBERT base's ``Conv1d(768, 768, 128, groups=16)`` ran
  on cuDNN's generic kernels: 33 of 74 ms of kernel time in a TAPT step on an H100, for ~3 %
  of the step's FLOPs. As a product of Fourier transforms it needs ~50x fewer FLOPs; it is
  computed in float32 whatever the model's dtype, and matches the convolution to float32
  rounding. Its transforms are of sizes with prime factors up to 7 only (``fast_fft_size``):
  a batch's frame count decides the length, and a length with a large prime factor falls to a
  many times slower FFT.
- GELU in the input's dtype (``gelu_in_input_dtype``): fairseq's ``gelu`` copies a bf16 or
  fp16 input to float32 and back around PyTorch's GELU, which computes in float32 anyway.
- Time masks drawn on the device for the whole batch (``time_masks.py``): the same random
  procedure as fairseq's per-utterance numpy loop, without its waits for the GPU.
- Attention without PyTorch's cuDNN kernel, inside the model's forward only (no-cudnn-attention; flash, or memory-efficient where a padding mask
  remains, run instead; the same attention). torch 2.11 prefers cuDNN's kernel on Hopper,
  which builds a graph for every new batch shape on the CPU while the GPU waits.

Measured together on an H200 (bf16, base size, whole fairseq runs, BENCHMARKS.md): TAPT 471
-> 826 s of audio per second, fine-tuning 1,543 -> 2,138.
"""

from functools import partial
from typing import AbstractSet, Callable, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.models.hubert import HubertModel
from fairseq.models.wav2vec.wav2vec2 import TransformerSentenceEncoderLayer
from fairseq.modules import MultiheadAttention
from fairseq.modules.gelu import gelu as fairseq_gelu
from torch.nn.attention import SDPBackend, sdpa_kernel

from fairseq_flea.hubert.time_masks import time_masks_on_device

COSINE_EPS = 1e-8  # torch.cosine_similarity's default, which fairseq's compute_nce uses
FAST_FFT_FACTORS = (2, 3, 5, 7)


class EmptyMaskCheck:
    """Whether a key padding mask pads nothing, asked once per mask: every layer of the
    encoder receives the same mask tensor, and each ``any()`` waits for the GPU. A forward
    that knows the answer on the host hands it over first (``padding_known_on_host``): the
    GPU is then not asked at all. Asked, it would have to finish the feature extractor and
    the positional convolution queued before the first layer, while the CPU, which sets the
    pace of a step, waits instead of queueing the layers."""

    def __init__(self):
        self.last_mask: Optional[torch.Tensor] = None
        self.last_answer = False
        self.takes_host_answers = True

    def pads_nothing(self, mask: torch.Tensor) -> bool:
        if mask is not self.last_mask:
            self.last_mask, self.last_answer = mask, not bool(mask.any())
        return self.last_answer

    def known(self, mask: torch.Tensor, pads_nothing: bool) -> None:
        if self.takes_host_answers:
            self.last_mask, self.last_answer = mask, pads_nothing

    def drop_empty_mask(self, module: nn.Module, args: tuple, kwargs: dict):
        mask = kwargs.get("key_padding_mask")
        if mask is not None and self.pads_nothing(mask):
            return args, {**kwargs, "key_padding_mask": None}
        return None


def attend_without_empty_padding_masks(model: nn.Module, host_answers: bool = True) -> int:
    """Let every attention layer of ``model`` run unmasked when no key is padded, and stop
    its transformer encoders from padding sequences to an even length; returns the number
    of attention layers changed. ``host_answers``: a forward may tell the layers on the host
    whether a batch pads anything (``padding_known_on_host``); otherwise each mask is asked."""
    for module in model.modules():
        if hasattr(module, "required_seq_len_multiple"):
            # Padding to a multiple of 2 adds a masked frame to odd-length batches; the
            # frame is never attended to, so without it the valid frames are unchanged.
            module.required_seq_len_multiple = 1
    check = EmptyMaskCheck()
    check.takes_host_answers = host_answers
    model.empty_mask_check = check
    layers = [module for module in model.modules() if isinstance(module, MultiheadAttention)]
    for layer in layers:
        layer.register_forward_pre_hook(check.drop_empty_mask, with_kwargs=True)
    return len(layers)


def padding_known_on_host(model: nn.Module, mask: torch.Tensor, pads_nothing: bool) -> None:
    """Tell the attention layers of ``model`` (``attend_without_empty_padding_masks``) whether
    ``mask``, the key padding mask its encoder is about to receive, pads any key; a model
    without that fast path is left alone."""
    check = getattr(model, "empty_mask_check", None)
    if check is not None:
        check.known(mask, pads_nothing)


def batches_never_padded(model: HubertModel) -> HubertModel:
    """For a ``HubertModel`` whose batches are never padded: every frame mask its forward
    derives pads nothing, so its attention runs unmasked without asking the GPU.

    fairseq's ``HubertDataset`` without ``pad_audio`` (HuBERT pretraining's way, and ours)
    crops every utterance to the batch's shortest, and its sample mask is all False."""
    model.forward_padding_mask = frame_mask_padding_nothing.__get__(model)
    return model


def frame_mask_padding_nothing(
    model: HubertModel, features: torch.Tensor, padding_mask: torch.Tensor
) -> torch.Tensor:
    """fairseq's frame mask of a batch that is not padded, known to pad nothing."""
    frame_mask = HubertModel.forward_padding_mask(model, features, padding_mask)
    padding_known_on_host(model, frame_mask, pads_nothing=True)
    return frame_mask


class AdditivePaddingMasks:
    """The additive (batch, heads, 1, keys) mask PyTorch's ``multi_head_attention_forward``
    builds from a boolean key padding mask, built once per mask: every layer of the encoder
    receives the same mask tensor, and building it is three operations more per layer."""

    def __init__(self):
        self.last_key: Optional[tuple] = None
        self.last_mask: Optional[torch.Tensor] = None

    def additive(self, padding_mask: torch.Tensor, heads: int, dtype: torch.dtype) -> torch.Tensor:
        key = (padding_mask, heads, dtype)
        if self.last_key is None or any(a is not b for a, b in zip(key, self.last_key)):
            batch, keys = padding_mask.shape
            mask = torch.zeros_like(padding_mask, dtype=dtype).masked_fill_(padding_mask, float("-inf"))
            mask = mask.view(batch, 1, 1, keys).expand(-1, heads, -1, -1).reshape(batch * heads, 1, keys)
            self.last_key, self.last_mask = key, mask.view(batch, heads, -1, keys)
        return self.last_mask


def self_attention_by_sdpa(layer: MultiheadAttention, masks: AdditivePaddingMasks, query: torch.Tensor,
                           key: Optional[torch.Tensor], value: Optional[torch.Tensor],
                           key_padding_mask: Optional[torch.Tensor] = None, incremental_state=None,
                           need_weights: bool = True, static_kv: bool = False, attn_mask=None,
                           before_softmax: bool = False, need_head_weights: bool = False):
    """fairseq's ``MultiheadAttention.forward`` for the encoder's self-attention, without the
    checks and reshapes of PyTorch's general ``multi_head_attention_forward`` that HuBERT's
    calls never need: the same projections, the same scaled-dot-product attention call on
    tensors of the same shapes and strides (so the same kernel and the same numbers), the
    same output projection. Any other call goes to fairseq's forward."""
    if (need_weights or need_head_weights or before_softmax or incremental_state is not None or static_kv
            or attn_mask is not None or query is not key or key is not value or query.device.type == "xla"):
        return MultiheadAttention.forward(layer, query, key, value, key_padding_mask, incremental_state,
                                          need_weights, static_kv, attn_mask, before_softmax, need_head_weights)
    frames, batch, channels = query.shape
    heads, head_dim = layer.num_heads, layer.head_dim
    q = F.linear(query, layer.q_proj.weight, layer.q_proj.bias)
    k = F.linear(query, layer.k_proj.weight, layer.k_proj.bias)
    v = F.linear(query, layer.v_proj.weight, layer.v_proj.bias)
    # (frames, batch, channels) -> (batch, heads, frames, head_dim) views, as PyTorch makes them
    q, k, v = (x.view(frames, batch * heads, head_dim).transpose(0, 1).view(batch, heads, frames, head_dim)
               for x in (q, k, v))
    mask = None if key_padding_mask is None else masks.additive(key_padding_mask.bool(), heads, query.dtype)
    training = layer.training or layer.dropout_module.apply_during_inference
    output = F.scaled_dot_product_attention(q, k, v, mask, layer.dropout_module.p if training else 0.0, False)
    output = output.permute(2, 0, 1, 3).reshape(frames * batch, channels)
    return F.linear(output, layer.out_proj.weight, layer.out_proj.bias).view(frames, batch, -1), None


def plain_self_attention(layer: MultiheadAttention) -> bool:
    """Whether ``self_attention_by_sdpa`` computes what fairseq's forward computes for ``layer``."""
    return (layer.self_attention and layer.qkv_same_dim and not layer.onnx_trace and not layer.skip_embed_dim_check
            and not getattr(layer, "use_xformers", False) and layer.bias_k is None and layer.bias_v is None
            and not layer.add_zero_attn and layer.kdim == layer.vdim == layer.embed_dim
            and all(proj.bias is not None for proj in (layer.q_proj, layer.k_proj, layer.v_proj)))


def self_attention_without_general_checks(model: nn.Module) -> int:
    """Run every plain self-attention layer of ``model`` by ``self_attention_by_sdpa``; returns
    the number of layers changed."""
    masks = AdditivePaddingMasks()
    layers = [module for module in model.modules()
              if isinstance(module, MultiheadAttention) and plain_self_attention(module)]
    for layer in layers:
        layer.forward = partial(self_attention_by_sdpa, layer, masks)
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


def fast_fft_size(length: int) -> int:
    """The smallest size from ``length`` up whose prime factors are all 2, 3, 5 or 7, the
    sizes cuFFT documents as fastest and PyTorch's CPU FFT also runs on its direct kernels.
    A size with a larger prime factor (a batch of 1031 frames pads to 1159 = 19 x 61) takes
    a slower path: on the development CPU, at HuBERT base's width, the transforms took 6-17x
    as long and the whole convolution 1.2-1.4x (BENCHMARKS.md, "Decided studies")."""
    size = length
    while True:
        rest = size
        for factor in FAST_FFT_FACTORS:
            while rest % factor == 0:
                rest //= factor
        if rest == 1:
            return size
        size += 1


def conv1d_by_fft(conv: nn.Conv1d, x: torch.Tensor, fft_size: Callable[[int], int] = fast_fft_size) -> torch.Tensor:
    """``conv(x)`` for a stride-1, undilated, zero-padded Conv1d, as a product of real FFTs in
    float32 (cast back to ``x``'s dtype). Cross-correlation with the kernel is a product with
    its conjugate transform; any transform at least as long as the padded input leaves every
    output frame free of wrap-around, so ``fft_size`` picks one from that length up."""
    weight = conv.weight  # after the weight-norm pre-hook has set it
    out_channels, in_per_group, kernel = weight.shape
    groups, padding = conv.groups, conv.padding[0]
    batch, _, frames = x.shape
    length = frames + 2 * padding
    size = fft_size(length)
    signal = torch.fft.rfft(F.pad(x.float(), (padding, padding)), n=size)
    signal = signal.view(batch, groups, in_per_group, -1)
    response = torch.fft.rfft(weight.float(), n=size).view(groups, out_channels // groups, in_per_group, -1)
    product = torch.einsum("bgif,goif->bgof", signal, response.conj())
    output = torch.fft.irfft(product.reshape(batch, out_channels, -1), n=size)[..., : length - kernel + 1]
    if conv.bias is not None:
        output = output + conv.bias.float()[:, None]
    return output.to(x.dtype)


def positional_convs(model: nn.Module) -> List[nn.Conv1d]:
    """The positional convolutions of every transformer encoder in ``model`` that FFT can run:
    stride 1, undilated, zero-padded."""
    convs = []
    for module in model.modules():
        pos_conv = getattr(module, "pos_conv", None)
        if pos_conv is not None:
            convs += [layer for layer in pos_conv.modules() if isinstance(layer, nn.Conv1d)
                      and layer.stride == (1,) and layer.dilation == (1,) and layer.padding_mode == "zeros"
                      and not isinstance(layer.padding, str)]
    return convs


def positional_convs_by_fft(model: nn.Module, fft_size: Callable[[int], int] = fast_fft_size) -> int:
    """Run the positional convolution of every transformer encoder in ``model`` by FFT, of
    sizes picked by ``fft_size``; returns the number of convolutions changed."""
    convs = positional_convs(model)
    for conv in convs:
        conv.forward = partial(conv1d_by_fft, conv, fft_size=fft_size)
    return len(convs)


def padded_input_length(length: int) -> int:
    """FFTs exactly as long as the padded input, as the FFT path first ran (to measure the
    choice of fast sizes)."""
    return length


def gelu_in_input_dtype(model: nn.Module) -> int:
    """Let every transformer layer of ``model`` apply PyTorch's GELU in its input's dtype
    instead of fairseq's ``gelu``, which copies a bf16 or fp16 input to float32 and the result
    back. In bf16 the values and gradients are the same (on CPU, results of at most bf16's
    smallest normal number, 1.2e-38, come out as -0); in fp16 some CPUs' kernels put about 1 %
    of them one or two fp16 steps away, as exact on average. Saved: the two copies, their two
    backward copies and the float32 copy kept for the backward (a quarter of a layer's
    feed-forward activations); returns the number of layers changed."""
    layers = [layer for layer in model.modules()
              if isinstance(layer, TransformerSentenceEncoderLayer) and layer.activation_fn is fairseq_gelu]
    for layer in layers:
        layer.activation_fn = F.gelu
    return len(layers)


SDPA_WITHOUT_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def forward_without_cudnn_attention(module: nn.Module, *args, **kwargs):
    """``module``'s own forward with PyTorch's cuDNN attention kernel out of the choice
    (``sdpa_kernel`` restores PyTorch's setting on the way out). torch 2.11 prefers cuDNN's kernel
    on Hopper, which builds a graph for every new batch shape on the CPU while the GPU waits;
    flash or memory-efficient attention compute the same attention. The backward runs the
    kernel its forward chose."""
    with sdpa_kernel(SDPA_WITHOUT_CUDNN):
        return type(module).forward(module, *args, **kwargs)


def attention_without_cudnn(module: nn.Module) -> nn.Module:
    """Run ``module``'s forward by ``forward_without_cudnn_attention``."""
    module.forward = partial(forward_without_cudnn_attention, module)
    return module


def compiled_encoder_layers(model: nn.Module) -> int:
    """Compile each transformer layer's forward (``torch.compile``, dynamic shapes: every
    batch has a length of its own), so that a step launches fused kernels instead of one per
    operator; returns how many layers. Opt-in, not in ``all``: fused arithmetic rounds
    differently, dropout draws differently, and each process compiles first."""
    layers = [module for module in model.modules() if isinstance(module, TransformerSentenceEncoderLayer)]
    for layer in layers:
        for module in layer.modules():
            # The empty-mask check reads its answer from the device once per batch; traced, it
            # would split the graph and recompile for each new mask.
            for key, hook in module._forward_pre_hooks.items():
                module._forward_pre_hooks[key] = torch.compiler.disable(hook)
        layer.compile(dynamic=True)
    return len(layers)


def use_fast_paths(model: nn.Module, names: AbstractSet[str]) -> nn.Module:
    """The encoder paths among ``names`` (``fast_path_names``) on ``model``, a HuBERT
    pretraining model or encoder; without any of them it stays fairseq's own. The cuDNN choice
    is applied by the caller around the forward it owns (``attention_without_cudnn``)."""
    if "unmasked-attention" in names:
        attend_without_empty_padding_masks(model, host_answers="padding-known-on-host" in names)
    if "direct-attention" in names:
        self_attention_without_general_checks(model)
    if "fft-positional-conv" in names:
        positional_convs_by_fft(model, fft_size=fast_fft_size if "fast-fft-sizes" in names else padded_input_length)
    if "gelu-in-input-dtype" in names:
        gelu_in_input_dtype(model)
    if "device-time-masks" in names:
        time_masks_on_device(model)
    if "matmul-label-logits" in names and isinstance(model, HubertModel):
        model.compute_nce = label_logits_by_matmul.__get__(model)
    if "compiled-layers" in names:
        compiled_encoder_layers(model)
    return model
