"""What fairseq registers as criterions: emotion_cross_entropy.
Imports nothing else of fairseq_flea.
"""

from fairseq_flea.criterions import emotion_cross_entropy  # noqa: F401
