"""One frame arithmetic for the forward, the audio checks and the frame length."""

import pytest
import torch
from fairseq.models.wav2vec.wav2vec2 import ConvFeatureExtractionModel

from fairseq_flea.io.frames import (
    FRAME_SECONDS,
    MIN_SAMPLES,
    parse_conv_layers,
    samples_for_one_frame,
)
from tone_corpus import conv_frame_count

TINY_CONV_LAYERS = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"


@pytest.mark.parametrize("num_samples", [400, 719, 720, 1000, 16000, 16321, 48000])
def test_frame_count_is_what_fairseqs_extractor_produces(num_samples):
    extractor = ConvFeatureExtractionModel(parse_conv_layers(TINY_CONV_LAYERS), mode="default")
    with torch.no_grad():
        frames = extractor(torch.zeros(1, num_samples)).shape[-1]
    assert conv_frame_count(num_samples, TINY_CONV_LAYERS) == frames


def test_one_frame_needs_the_receptive_field_and_frames_are_20_ms():
    assert MIN_SAMPLES == samples_for_one_frame() == 400
    assert conv_frame_count(MIN_SAMPLES) == 1 and conv_frame_count(MIN_SAMPLES - 1) == 0
    assert FRAME_SECONDS == pytest.approx(0.02)
