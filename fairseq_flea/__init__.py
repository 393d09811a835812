"""fairseq-flea: frame-level emotional state alignment (FLEA) as a fairseq plugin.

Importing this package (directly, or through fairseq's ``common.user_dir``) registers
its tasks, models and criterions with fairseq and lets torch>=2.6 load fairseq
checkpoints without switching torch's safe-loading check off.
"""

from fairseq_flea.hubert.checkpoints import allow_fairseq_checkpoint_types

allow_fairseq_checkpoint_types()

from fairseq_flea import criterions, models, tasks  # noqa: E402,F401  (registers with fairseq on import)
