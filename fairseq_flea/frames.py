"""Frame arithmetic of HuBERT's convolutional feature extractor."""

import ast
from typing import List, Tuple

# HuBERT base: 20 ms frames (320x down-sampling) from a 25 ms receptive field.
HUBERT_BASE_CONV_LAYERS = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"


def parse_conv_layers(conv_feature_layers: str) -> List[Tuple[int, int, int]]:
    """Parse fairseq's ``conv_feature_layers`` string, e.g. ``[(512,10,5)] + [(512,3,2)] * 4``."""
    layers = []
    for term in conv_feature_layers.split("+"):
        layer_list, _, repeat = term.partition("*")
        layers += ast.literal_eval(layer_list.strip()) * (int(repeat) if repeat else 1)
    return [tuple(layer) for layer in layers]


def conv_frame_count(num_samples: int, conv_feature_layers: str = HUBERT_BASE_CONV_LAYERS) -> int:
    """Number of feature frames the extractor produces for ``num_samples`` samples."""
    length = num_samples
    for _, kernel, stride in parse_conv_layers(conv_feature_layers):
        length = (length - kernel) // stride + 1
    return max(length, 0)
