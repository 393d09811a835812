"""What fairseq registers for data: tasks emotion_hubert_pretraining and emotion_classification,
the classification dataset, and the end of data-loading workers kept between epochs. Imports
io, hubert and optim.
"""

from fairseq_flea.tasks import emotion_classification, emotion_hubert_pretraining, loader_workers  # noqa: F401
