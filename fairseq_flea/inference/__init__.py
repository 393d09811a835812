"""Recognising emotion in recordings with a fine-tuned classifier, and the prediction report.
Imports io, hubert, models and units.
"""
