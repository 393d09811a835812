"""fairseq models registered by the plugin."""

from fairseq_flea.models import ser_attention_classification  # noqa: F401
