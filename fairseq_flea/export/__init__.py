"""A fine-tuned classifier outside fairseq: a transformers directory (``huggingface``, with
its own modelling file ``modeling_flea_hubert``, which imports torch and transformers only) and
an ONNX graph verified with onnxruntime (``onnx_export``).
Imports io, hubert and inference (the classifier is loaded as EmotionRecognizer loads it).
"""
