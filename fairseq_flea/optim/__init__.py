"""What fairseq registers as optimizers: adamw (PyTorch's fused AdamW).
Imports nothing of fairseq_flea.
"""

from fairseq_flea.optim import adamw  # noqa: F401
