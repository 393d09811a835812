"""The HuBERT core: the padding-safe forward, frame arithmetic, checkpoint loading, encoders,
init_from weight transfer and checkpoint conversion. Imports only fairseq_flea.io.
"""
