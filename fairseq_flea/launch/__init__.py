"""Starting training processes fairseq cannot start itself (multi-process on CPU).
Imports only fairseq_flea.io.
"""
