"""Scores of a fine-tuned classifier on a split, and the Table-1 results file.
Imports io, tasks (the label files), inference.
"""
