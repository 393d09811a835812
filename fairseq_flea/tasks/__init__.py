"""What fairseq registers for data: tasks emotion_hubert_pretraining and emotion_classification,
and the classification dataset. Imports io and hubert.
"""

from fairseq_flea.tasks import emotion_classification, emotion_hubert_pretraining  # noqa: F401
