"""`make demo`: the recipe on a generated corpus with a stand-in HuBERT trained on the spot.
The top of the package: it may import anything in it.
"""
