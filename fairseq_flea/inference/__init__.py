"""Recognising emotion in recordings with a fine-tuned classifier, its inference checkpoint
(conversion), the prediction report, and an exported .onnx model run on onnxruntime
without torch (onnx_recognizer). Imports io, hubert, models and units.
"""

from fairseq_flea.inference.onnx_recognizer import OnnxEmotionRecognizer, load_recognizer  # noqa: F401


def __getattr__(name):
    """``EmotionRecognizer`` (the public entry point) imported when asked for: it imports torch,
    which the ONNX path (``load_recognizer("model.onnx")``) and the segment code never need."""
    if name == "EmotionRecognizer":
        from fairseq_flea.inference.recognizer import EmotionRecognizer

        return EmotionRecognizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
