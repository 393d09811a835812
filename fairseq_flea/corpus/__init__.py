"""Phase 0: IEMOCAP and CSV corpora into fold manifests, the leakage guard, the demo corpus.
Imports only fairseq_flea.io.
"""
