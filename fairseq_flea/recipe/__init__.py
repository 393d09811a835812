"""The FLEA recipe: every phase over every fold, as resumable steps.
Imports everything below it (corpus, units, evaluation, ...), nothing above (demo).
"""
