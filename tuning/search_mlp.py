"""Search MLP hyperparameters with keras-tuner, then retrain the best and export it.

    python tuning/search_mlp.py                       # the default search, then saved_models/mlp_tuned/
    python tuning/search_mlp.py --subset 2000 --max-trials 2 --epochs 1 --final-epochs 1   # a smoke run
    python tuning/search_mlp.py --workers 2           # a chief and 2 worker processes on this machine

`--help` lists every flag. The flags and `main` are in mnist_lab/tuning/__main__.py (also run by
`python -m mnist_lab.tuning`); the search itself is the package mnist_lab/tuning/.
"""

import sys

from mnist_lab.startup import run
from mnist_lab.tuning.__main__ import main

if __name__ == "__main__":
    sys.exit(run(main, sigterm_stops=True))
