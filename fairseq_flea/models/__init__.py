"""What fairseq registers as models: ser_attention_classification and its pooling.
Imports io and hubert.
"""

from fairseq_flea.models import ser_attention_classification  # noqa: F401
