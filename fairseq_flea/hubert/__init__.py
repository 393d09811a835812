"""The HuBERT core: the padding-safe forward (forward), checkpoint loading and kinds
(checkpoints), encoders (encoder), init_from weight transfer (init_from), checkpoint conversion
(conversion), and the faster, exact ways through fairseq's HuBERT that training takes
(fast_paths; time_masks, masks drawn on the device). Imports only fairseq_flea.io, where the
frame arithmetic lives.
"""
