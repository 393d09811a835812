"""What fairseq registers as optimizers: adamw (PyTorch's fused AdamW); and master_weights,
foreach loops for fairseq's mixed-precision optimizer. Imports nothing of fairseq_flea.
"""

from fairseq_flea.optim import adamw  # noqa: F401
