"""Library code behind train.py and evaluate.py: data, training, export, evaluation.

The entry points only parse flags and call into this package; the tests call the same functions.
"""
