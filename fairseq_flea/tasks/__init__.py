"""What fairseq registers for data: tasks emotion_hubert_pretraining and emotion_classification,
the classification dataset, and the training process's fast paths (training_paths: checkpoints
written in the background, the end of kept loader workers, datasets read by their loader only,
cheaper per-step bookkeeping), applied only when a task trains. Imports io, hubert and optim.
"""

from fairseq_flea.tasks import emotion_classification, emotion_hubert_pretraining  # noqa: F401
