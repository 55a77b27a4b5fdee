"""Hyperparameter searches; `python tuning/search_mlp.py` runs the MLP one (logic in mnist_lab/tuning.py)."""
