"""What fairseq registers as criterions: emotion_cross_entropy.
Imports io only.
"""

from fairseq_flea.criterions import emotion_cross_entropy  # noqa: F401
