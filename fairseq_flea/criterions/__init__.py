"""fairseq criterions registered by the plugin."""

from fairseq_flea.criterions import emotion_cross_entropy  # noqa: F401
