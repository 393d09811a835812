"""Files in and out: audio reading and checks, fairseq manifests, text inputs read as UTF-8,
atomic writes, plots, the one user-input error type, HuBERT's frame arithmetic (frames) and
length-sorted batches (batches).
Imports nothing else of fairseq_flea.
"""
