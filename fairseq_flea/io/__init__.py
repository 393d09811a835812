"""Files in and out: audio reading and checks, fairseq manifests, atomic writes, plots, the
one user-input error type. Imports nothing else of fairseq_flea.
"""
