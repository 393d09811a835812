"""fairseq tasks registered by the plugin."""

from fairseq_flea.tasks import emotion_classification, emotion_hubert_pretraining  # noqa: F401
