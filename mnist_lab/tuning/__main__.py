"""Search MLP hyperparameters with keras-tuner, then retrain the best and export it.

    python tuning/search_mlp.py                       # the default search, then saved_models/mlp_tuned/
    python tuning/search_mlp.py --subset 2000 --max-trials 2 --epochs 1 --final-epochs 1   # a smoke run
    python tuning/search_mlp.py --workers 2           # a chief and 2 worker processes on this machine

Trials are chosen and ranked on the validation split; the test set is used once, by the final
model. The search's state lives in --directory/--project-name: the same command resumes an
interrupted search; --fresh discards it. Reports go to reports/tuning/<project-name>/.

On several machines (keras-tuner's distributed mode), with the same flags everywhere:
    KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=0.0.0.0 KERASTUNER_ORACLE_PORT=8470 python tuning/search_mlp.py
    KERASTUNER_TUNER_ID=worker1 KERASTUNER_ORACLE_IP=<chief's address> KERASTUNER_ORACLE_PORT=8470 python tuning/search_mlp.py

`python -m mnist_lab.tuning` is the same command; `--workers` starts its chief and workers so.
"""

import argparse
import sys

from mnist_lab import tuning
from mnist_lab.flags import ArgumentParser, add_run_flags, non_negative_int, port_number, positive_int
from mnist_lab.startup import quiet_tensorflow_import, run


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tuner", choices=tuning.TUNERS, default=tuning.DEFAULT_TUNER,
                        help="bayesian (default): a Gaussian process proposes each trial from the finished ones, "
                             "which needs fewer trials than random when each trial is a full training; random: "
                             "independent draws; hyperband: many short trials, the best promoted to more epochs")
    parser.add_argument("--max-trials", type=positive_int,
                        help=f"trials to run (default: {tuning.DEFAULT_MAX_TRIALS}; hyperband sets its own)")
    parser.add_argument("--epochs", type=positive_int, default=tuning.DEFAULT_EPOCHS,
                        help=f"epochs per trial, hyperband's largest (default: {tuning.DEFAULT_EPOCHS})")
    parser.add_argument("--final-epochs", type=positive_int, default=tuning.DEFAULT_FINAL_EPOCHS,
                        help=f"epochs to retrain the best values before export (default: {tuning.DEFAULT_FINAL_EPOCHS})")
    add_run_flags(parser, output_default=f"saved_models/{tuning.MODEL_NAME}")
    parser.add_argument("--directory", default=tuning.STATE_DIR,
                        help=f"keras-tuner's state folder, not committed (default: {tuning.STATE_DIR})")
    parser.add_argument("--project-name",
                        help=f"the search's folder inside --directory (default: {tuning.PROJECT_NAME}, or "
                             f"{tuning.PROJECT_NAME}_subsetN with --subset N)")
    parser.add_argument("--reports-dir", default=tuning.REPORTS_DIR,
                        help="trial tables and plot go to REPORTS_DIR/tuning/<project-name>/ "
                             f"(default: {tuning.REPORTS_DIR})")
    parser.add_argument("--fresh", action="store_true",
                        help="discard the search in --project-name and start afresh (default: resume it)")
    parser.add_argument("--workers", type=non_negative_int, default=0,
                        help="run a keras-tuner chief and N worker processes on this machine (default: 0, one process)")
    parser.add_argument("--port", type=port_number(0), default=0,
                        help="the chief's port with --workers (default: 0, any free port)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2),
                        help="Keras' output inside each trial: 0 none, 1 a progress bar, 2 a line per epoch "
                             "(default: a progress bar on a terminal, else none: a line per trial)")
    parser.add_argument("--worker-restarts", type=non_negative_int, default=tuning.DEFAULT_WORKER_RESTARTS,
                        help="restarts of a worker that dies before the search ends it "
                             f"(default: {tuning.DEFAULT_WORKER_RESTARTS})")
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    config = tuning.SearchConfig(**vars(parse_args(argv)))
    config.check()  # flag combinations too answer before TensorFlow loads
    quiet_tensorflow_import()
    from mnist_lab.tuning.search import search  # TensorFlow and keras-tuner: only once the flags are good

    search(config, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
