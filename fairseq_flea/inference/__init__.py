"""Recognising emotion in recordings with a fine-tuned classifier, its inference checkpoint
(conversion), and the prediction report. Imports io, hubert, models and units.
"""

from fairseq_flea.inference.recognizer import EmotionRecognizer  # noqa: E402,F401  (the public entry point)
