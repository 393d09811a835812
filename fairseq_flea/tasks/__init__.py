"""What fairseq registers for data: tasks emotion_hubert_pretraining and emotion_classification,
the classification dataset, checkpoints written in the background, the end of data-loading
workers kept between epochs, datasets read by their loader only, and the trainer's per-step
seeding and mode switch made cheaper. Imports io, hubert and optim.
"""

# checkpoint_writes before loader_workers: its exit handler must run after theirs (atexit runs
# the last registered first), since it may end the process.
from fairseq_flea.tasks import checkpoint_writes  # noqa: F401, I001
from fairseq_flea.tasks import emotion_classification, emotion_hubert_pretraining, loader_workers, step_bookkeeping  # noqa: F401
