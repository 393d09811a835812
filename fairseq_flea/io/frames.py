"""HuBERT's frame arithmetic, from its ``conv_feature_layers``: the steps each convolution
leaves (applied layer by layer, how many 20 ms frames a waveform gives), the shortest
waveform that gives one frame, and the frame length in seconds. The padding-safe forward,
the audio checks and the prediction report all use these."""

import ast
from typing import List, Tuple, TypeVar

# HuBERT base (and our tiny models): 20 ms frames (320x down-sampling), 25 ms receptive field.
HUBERT_BASE_CONV_LAYERS = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"

Length = TypeVar("Length")  # an int, or a tensor of lengths


def parse_conv_layers(conv_feature_layers: str) -> List[Tuple[int, int, int]]:
    """Parse fairseq's ``conv_feature_layers`` string, e.g. ``[(512,10,5)] + [(512,3,2)] * 4``."""
    layers = []
    for term in conv_feature_layers.split("+"):
        layer_list, _, repeat = term.partition("*")
        layers += ast.literal_eval(layer_list.strip()) * (int(repeat) if repeat else 1)
    return [tuple(layer) for layer in layers]


def conv_output_length(length: Length, kernel: int, stride: int) -> Length:
    """Steps an unpadded convolution leaves of ``length`` input steps (ints or tensors)."""
    return (length - kernel) // stride + 1


def samples_for_one_frame(conv_feature_layers: str = HUBERT_BASE_CONV_LAYERS) -> int:
    """The receptive field of one frame: shorter waveforms give no frame at all."""
    samples = 1
    for _, kernel, stride in reversed(parse_conv_layers(conv_feature_layers)):
        samples = (samples - 1) * stride + kernel
    return samples


def frame_seconds(conv_feature_layers: str = HUBERT_BASE_CONV_LAYERS, sample_rate: int = 16000) -> float:
    """Seconds between frames: the product of the strides over the sample rate."""
    hop = 1
    for _, _, stride in parse_conv_layers(conv_feature_layers):
        hop *= stride
    return hop / sample_rate


MIN_SAMPLES = samples_for_one_frame()  # 400
FRAME_SECONDS = frame_seconds()  # 0.02
