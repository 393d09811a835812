"""``tools/export_model.py onnx``: a fine-tuned FLEA classifier as one ONNX graph.

Inputs ``waveform`` (batch x samples, float32, zero-padded on the right) and ``lengths``
(batch, int64 samples); outputs ``logits`` (batch x classes), ``frame_weights`` (batch x
frames, 0 on padding) and ``frame_logits`` (batch x frames x classes, 0 on padding); batch and
time axes are dynamic. The graph is that of ``modeling_flea_hubert`` (transformers' HuBERT
with our masked GroupNorm, so padding changes no file's result), with the waveform
normalisation of the checkpoint inside (over each utterance's valid samples). The classes,
sample rate and frame arithmetic are in the model's metadata (``flea.*`` keys), which marks the
file as ours. At export onnxruntime runs it on held-out generated audio, alone and padded in one
batch, against fairseq's probabilities: the maximum difference is printed, and above
``TOLERANCE`` the file is not written. ``--int8`` adds a dynamically quantised copy, kept only
if at least 99 % of the argmaxes agree and no probability moves by more than 0.02.
"""

import json
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from fairseq_flea.export.huggingface import build_huggingface_model, load_classifier
from fairseq_flea.inference.onnx_recognizer import ONNX_METADATA_FORMAT as METADATA_FORMAT
from fairseq_flea.io.atomic_files import atomic_outputs
from fairseq_flea.io.errors import FleaInputError

logger = logging.getLogger(__name__)

OPSET = 18
TOLERANCE = 1e-4
INT8_MIN_AGREEMENT = 0.99
INT8_MAX_PROBABILITY_CHANGE = 0.02
INPUT_NAMES = ["waveform", "lengths"]
OUTPUT_NAMES = ["logits", "frame_weights", "frame_logits"]


class OnnxClassifier(nn.Module):
    """(waveform, lengths) -> (logits, frame_weights, frame_logits), normalisation included."""

    def __init__(self, hf_model: nn.Module, normalize: bool):
        super().__init__()
        self.model = hf_model
        self.normalize = normalize

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor):
        valid = torch.arange(waveform.shape[1], device=waveform.device)[None, :] < lengths[:, None]
        if self.normalize:  # F.layer_norm of each utterance alone, as EmotionRecognizer does
            weight = valid.float()
            count = weight.sum(dim=-1, keepdim=True)
            mean = (waveform * weight).sum(dim=-1, keepdim=True) / count
            variance = (((waveform - mean) * weight) ** 2).sum(dim=-1, keepdim=True) / count
            waveform = (waveform - mean) / torch.sqrt(variance + 1e-5) * weight
        output = self.model(waveform, attention_mask=valid.long())
        return output.logits, output.frame_weights, output.frame_logits


def verification_waveforms(sample_rate: int, count: int = 6, seed: int = 1234) -> List[np.ndarray]:
    """Held-out audio of different lengths (0.5 to 3 s): tones with harmonics, noise, silence."""
    rng = np.random.default_rng(seed)
    waveforms = []
    for index in range(count):
        samples = int(sample_rate * rng.uniform(0.5, 3.0))
        t = np.arange(samples) / sample_rate
        pitch = rng.uniform(90, 600)
        tone = sum(rng.uniform(0.05, 0.3) / k * np.sin(2 * np.pi * k * pitch * t) for k in range(1, 4))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 4) * t)
        waveform = tone * envelope + rng.uniform(0.001, 0.05) * rng.standard_normal(samples)
        if index % 3 == 2:
            waveform[: samples // 4] = 0.0
        waveforms.append(waveform.astype(np.float32))
    return waveforms


def pad(waveforms: Sequence[np.ndarray]):
    lengths = np.array([len(w) for w in waveforms], dtype=np.int64)
    batch = np.zeros((len(waveforms), int(lengths.max())), dtype=np.float32)
    for row, waveform in enumerate(waveforms):
        batch[row, : len(waveform)] = waveform
    return batch, lengths


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def onnx_probabilities(session, waveforms: Sequence[np.ndarray], batched: bool) -> np.ndarray:
    if batched:
        batch, lengths = pad(waveforms)
        return softmax(session.run(["logits"], {"waveform": batch, "lengths": lengths})[0].astype(np.float64))
    return np.concatenate([onnx_probabilities(session, [w], True) for w in waveforms])


@dataclass
class Verification:
    max_difference_alone: float
    max_difference_batched: float
    max_frame_weight_difference: float

    @property
    def max_difference(self) -> float:
        return max(self.max_difference_alone, self.max_difference_batched)


def verify_against_fairseq(recognizer, path: str, waveforms: Sequence[np.ndarray]) -> Verification:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    predictions = recognizer.predict_waveforms(list(waveforms))
    expected = np.stack([p.probabilities for p in predictions]).astype(np.float64)
    batch, lengths = pad(waveforms)
    _, frame_weights, _ = session.run(None, {"waveform": batch, "lengths": lengths})
    weight_difference = max(float(np.abs(frame_weights[row][: len(p.frame_weights)] - p.frame_weights).max())
                            for row, p in enumerate(predictions))
    return Verification(
        max_difference_alone=float(np.abs(onnx_probabilities(session, waveforms, False) - expected).max()),
        max_difference_batched=float(np.abs(onnx_probabilities(session, waveforms, True) - expected).max()),
        max_frame_weight_difference=weight_difference,
    )


def metadata(recognizer, checkpoint_path: str) -> Dict[str, str]:
    conv_layers = [(block[0].out_channels, block[0].kernel_size[0], block[0].stride[0])
                   for block in recognizer.model.encoder.feature_extractor.conv_layers]
    return {
        "flea.format": METADATA_FORMAT,
        "flea.class_names": json.dumps(list(recognizer.class_names)),
        "flea.sample_rate": str(recognizer.sample_rate),
        "flea.normalize": json.dumps(bool(recognizer.normalize)),
        "flea.pooling": recognizer.pooling,
        "flea.conv_feature_layers": str(conv_layers),
        "flea.num_layers": str(len(recognizer.model.encoder.encoder.layers)),
        "flea.checkpoint": os.path.basename(checkpoint_path),
    }


def export_graph(module: nn.Module, path: str, sample_rate: int) -> None:
    example = (torch.zeros(2, sample_rate) + 0.01 * torch.randn(2, sample_rate), torch.tensor([sample_rate, sample_rate // 2]))
    batch = torch.export.Dim("batch", min=1)
    samples = torch.export.Dim("samples", min=800)
    torch.onnx.export(module, example, path, dynamo=True, opset_version=OPSET, input_names=INPUT_NAMES,
                      output_names=OUTPUT_NAMES, verbose=False, external_data=False,
                      dynamic_shapes={"waveform": {0: batch, 1: samples}, "lengths": {0: batch}})


def write_metadata(path: str, values: Dict[str, str]) -> None:
    import onnx

    model = onnx.load(path)
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, path)


class _NotKept(Exception):
    pass


def int8_copy(fp32_path: str, int8_path: str, waveforms: Sequence[np.ndarray]) -> Optional[str]:
    """Quantise; return None when kept, else why not. Prints agreement and the largest change."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with atomic_outputs(int8_path) as (partial,):
            # The matrix products (transformer and head); the convolutions stay in float32.
            quantize_dynamic(fp32_path, partial, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
            fp32 = onnx_probabilities(onnxruntime.InferenceSession(fp32_path, providers=["CPUExecutionProvider"]), waveforms, False)
            int8 = onnx_probabilities(onnxruntime.InferenceSession(partial, providers=["CPUExecutionProvider"]), waveforms, False)
            agreement = float((fp32.argmax(-1) == int8.argmax(-1)).mean())
            change = float(np.abs(fp32 - int8).max())
            print(f"int8: argmax agreement {agreement:.1%} on {len(waveforms)} utterances, largest probability "
                  f"change {change:.4f} (kept if >= {INT8_MIN_AGREEMENT:.0%} and <= {INT8_MAX_PROBABILITY_CHANGE})")
            if agreement < INT8_MIN_AGREEMENT or change > INT8_MAX_PROBABILITY_CHANGE:
                raise _NotKept(f"argmax agreement {agreement:.1%}, probability change {change:.4f}")
    except _NotKept as not_kept:
        return str(not_kept)
    return None


def int8_path_for(output_path: str) -> str:
    stem = output_path[: -len(".onnx")] if output_path.endswith(".onnx") else output_path
    return f"{stem}.int8.onnx"


def export_onnx(checkpoint_path: str, output_path: str, int8: bool = False,
                verify_audio: Sequence[np.ndarray] = ()) -> Verification:
    """Write ``output_path`` (and with ``int8`` its quantised copy) after checking it against fairseq."""
    outputs = [output_path] + ([int8_path_for(output_path)] if int8 else [])
    for path in outputs:
        if os.path.exists(path):
            raise FleaInputError(f"{path}: already exists; give a new file name")
    try:
        import onnxruntime  # noqa: F401
        import onnx  # noqa: F401
    except ImportError:
        raise FleaInputError("the onnx export needs onnx, onnxruntime and onnxscript: pip install -e '.[onnx]'") from None
    recognizer = load_classifier(checkpoint_path)
    hf_model, _ = build_huggingface_model(recognizer, stock_allowed=False)
    # The positional convolution's weight norm folded into a plain weight: one constant, not a
    # product at every run (and an initializer the quantiser can read).
    for module in hf_model.modules():
        if torch.nn.utils.parametrize.is_parametrized(module, "weight"):
            torch.nn.utils.parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    module = OnnxClassifier(hf_model, recognizer.normalize).eval()
    waveforms = list(verify_audio) or verification_waveforms(recognizer.sample_rate)
    with atomic_outputs(output_path) as (partial,):
        export_graph(module, partial, recognizer.sample_rate)
        write_metadata(partial, metadata(recognizer, checkpoint_path))
        check = verify_against_fairseq(recognizer, partial, waveforms)
        print(f"onnxruntime against fairseq on {len(waveforms)} held-out utterances: max probability difference "
              f"{check.max_difference_alone:.2e} alone, {check.max_difference_batched:.2e} padded in one batch; "
              f"frame weights {check.max_frame_weight_difference:.2e} (tolerance {TOLERANCE:g})")
        if not check.max_difference <= TOLERANCE:
            raise FleaInputError(f"{output_path}: not written, onnxruntime's probabilities differ from fairseq's by "
                                 f"{check.max_difference:.2e} (more than {TOLERANCE:g})")
    if int8:
        sample = waveforms + verification_waveforms(recognizer.sample_rate, count=24, seed=99)
        reason = int8_copy(output_path, outputs[1], sample)
        print(f"int8: not kept ({reason})" if reason else f"wrote {outputs[1]}")
    return check
