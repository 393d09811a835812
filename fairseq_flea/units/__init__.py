"""Frame-level units: layer features and MFCC in the HuBERT recipe's shard format, k-means and
its labels. Imports io, hubert and the registered models (a classifier's registered name).
"""
