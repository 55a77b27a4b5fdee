"""Regenerate the README's model table: train every model with its recipe, evaluate, write the table.

    python benchmarks/accuracy.py                  # from scratch: every model, the seeds, the ensemble, the MLP search
    python benchmarks/accuracy.py --skip-trained   # only what is not trained yet with today's recipe and data
    python benchmarks/accuracy.py --quick          # every step in about 2 minutes, on a subset, in a temporary folder

Trains each registered model (`python train.py --model NAME`), the NumPy net (`python -m
scratch.train`), the seeds behind the top row (`python train.py --model deep_cnn --seeds 5`), the
ensemble of those seeds (`--ensemble 5`), both again as final fits on all 60000 training images
(`--validation-size 0`), and the tuned MLP (`python tuning/search_mlp.py`);
then evaluates every SavedModel, plain and with test-time augmentation (`python evaluate.py --tta`),
writes reports/model_table.md and puts the table into README.md between its markers.
"""

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: benchmarks/ imports its own modules

from mnist_lab.flags import ArgumentParser  # noqa: E402
from mnist_lab.startup import quiet_tensorflow_import, run  # noqa: E402

quiet_tensorflow_import()

from benchmarks import model_table  # noqa: E402
from mnist_lab import ensemble, tuning  # noqa: E402
from mnist_lab.config import MODELS_DIR, TrainConfig, folder_parts  # noqa: E402
from mnist_lab.data import load_mnist  # noqa: E402
from mnist_lab.errors import UserError  # noqa: E402
from mnist_lab.evaluation import EvalConfig, evaluate, evaluate_folder  # noqa: E402
from mnist_lab.machine import cpu_name  # noqa: E402
from mnist_lab.reader import trained_as  # noqa: E402
from mnist_lab.record import ModelRecord  # noqa: E402
from mnist_lab.training import train  # noqa: E402
from mnist_lab.tuning.search import search  # noqa: E402
from models import REGISTRY  # noqa: E402
from scratch.train import NAME as SCRATCH_NAME  # noqa: E402
from scratch.train import SPEC as SCRATCH_SPEC  # noqa: E402
from scratch.train import scratch_config  # noqa: E402
from scratch.training import train_scratch  # noqa: E402

DEFAULT_README = Path(__file__).resolve().parents[1] / "README.md"

SEEDS = {"deep_cnn": 5}  # rows given as mean ± std over this many seeds: the ensemble's members
ENSEMBLES = {"deep_cnn": 5}
FINAL_FITS = ("deep_cnn",)  # its seeds and ensemble again on all training images (--validation-size 0)
QUICK_SUBSET = 1000  # --quick: every step on this many training images, one epoch, two seeds


@dataclass
class Plan:
    """What to train: the full recipes, or --quick's smoke run of every step."""

    quick: bool = False

    def train_config(self, name, final_fit=False):
        config = TrainConfig(model=name, subset=QUICK_SUBSET, epochs=1) if self.quick else TrainConfig(model=name)
        return dataclasses.replace(config, validation_size=0) if final_fit else config

    def scratch_config(self):
        return scratch_config(subset=QUICK_SUBSET, epochs=1) if self.quick else scratch_config()

    def search_config(self, fresh):
        if self.quick:
            return tuning.SearchConfig(subset=QUICK_SUBSET, max_trials=2, epochs=1, final_epochs=1, fresh=fresh)
        return tuning.SearchConfig(fresh=fresh)

    def seeds(self):
        """(config, count) of each seeded row: on the split, and as a final fit."""
        return self.runs(SEEDS)

    def ensembles(self):
        """(config, count) of each ensemble: on the split, and as a final fit."""
        return self.runs(ENSEMBLES)

    def row_models(self):
        """The folders the table's rows are evaluated from (the seeded rows come from their members):
        a model trained there by hand, or an experiment, gets no row."""
        configs = [self.train_config(name) for name in sorted(REGISTRY) if name not in SEEDS]
        configs += [self.scratch_config(), self.search_config(fresh=False)]
        configs += [ensemble.ensemble_config(config, count) for config, count in self.ensembles()]
        return [config.output_dir().name for config in configs]

    def runs(self, counts):
        return [(self.train_config(name, final_fit), 2 if self.quick else count) for name, count in counts.items()
                for final_fit in ((False, True) if name in FINAL_FITS else (False,))]


def sources(plan):
    """What the rows that are not registry models are measured against."""
    return {SCRATCH_NAME: REGISTRY["simple_cnn"].source,
            tuning.MODEL_NAME: "aim: ≥ 98.8 %, above `mlp` and `advanced_mlp`",
            **{ensemble.ensemble_name(config.model, count): "aim: ≥ 99.80 %; published CNN ensembles: 99.75-99.8 %"
               for config, count in plan.ensembles()}}


def train_everything(plan, skip_trained, data, log):
    """Train what the table needs; with `skip_trained`, only what is missing or out of date."""
    for name in sorted(REGISTRY):
        config = plan.train_config(name)
        if name in SEEDS:
            continue  # its rows come from its seeds
        if skip_trained and trained_as(config.output_dir(), config, REGISTRY[name], data):
            log(f"{name}: trained with today's recipe and data, skipped")
            continue
        train(config, data, log)
    if not (skip_trained and trained_as(plan.scratch_config().output_dir(), plan.scratch_config(), SCRATCH_SPEC, data)):
        train_scratch(plan.scratch_config(), data, log)
    for config, count in plan.seeds():
        ensemble.run_seeds(config, count, data, log=log, reuse=skip_trained)
    for config, count in plan.ensembles():
        combined = ensemble.ensemble_config(config, count)
        if skip_trained and trained_as(combined.output_dir(), combined, config.spec(), data):
            log(f"{combined.output_dir().name}: exported from seeds {config.seed}-{config.seed + count - 1}, skipped")
            continue
        ensemble.run_ensemble(config, count, data, log=log)  # its members are the seeds just trained
    # From scratch, a new search; otherwise the one in tuner_state/ goes on where it stopped, and a
    # finished one only checks that its best values are exported.
    search(plan.search_config(fresh=not skip_trained), log)


def measure_rows(plan, models_dir, reports_dir, data, log):
    """Table rows: each planned row's SavedModel evaluated plain and with TTA; seeded models over their seeds."""
    rows, failures = evaluate(EvalConfig(models_dir=str(models_dir), models=plan.row_models(),
                                         reports_dir=str(reports_dir), tta=True), data, log)
    if failures:
        raise UserError(f"could not evaluate: {'; '.join(failures)}")
    table = []
    for row in rows:
        record = ModelRecord.load(models_dir / row["model"])
        kind = folder_parts(row["model"])[0]  # a final fit or a --quick run has the words of its recipe's row
        spec = REGISTRY.get(kind)  # today's words for a registry model, whenever it was trained
        table.append(model_table.table_row(record, [row["test_accuracy"]], [row["tta_accuracy"]],
                                           spec.source if spec else sources(plan).get(kind),
                                           spec.summary if spec else None, name=row["model"]))
    for config, count in plan.seeds():
        members = ensemble.train_members(config, count, data, log)  # all found: trained above
        name, spec = config.output_dir().name, REGISTRY[config.model]
        member_config = EvalConfig(reports_dir=str(Path(reports_dir) / "members" / name), tta=True)
        evaluated = [evaluate_folder(folder, data, member_config, log) for folder, _ in members]
        records = [record for _, record in members]
        row = model_table.table_row(records[0], [r["test_accuracy"] for r in evaluated],
                                    [r["tta_accuracy"] for r in evaluated], spec.source, spec.summary, name=name)
        row["training_seconds"] = sum(record.training_seconds for record in records) / count
        row["seconds_per_epoch"] = sum(record.seconds_per_epoch for record in records) / count
        table.append(row)
    return table


def training_minutes(rows, models_dir):
    """What training every row from scratch costs: the recorded training times, each seed counted, and the search."""
    seconds = sum(row["training_seconds"] * len(row["test_accuracy"]) for row in rows
                  if row["training_seconds"] is not None and not row["ensemble_of"])
    tuned = ModelRecord.load(models_dir / tuning.MODEL_NAME)  # the full search's model
    if tuned and tuned.search:
        seconds += tuned.search.get("trial_seconds_total", 0)
    return seconds / 60


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run of every step: {QUICK_SUBSET} training images, one epoch, two seeds, a "
                             "2-trial search, all in a new temporary folder with a copy of the README (default: off)")
    parser.add_argument("--skip-trained", action="store_true",
                        help="keep models already trained with today's recipe and data (default: retrain all)")
    parser.add_argument("--readme", default=str(DEFAULT_README),
                        help="the README whose table to replace (default: the project's README.md)")
    parser.add_argument("--reports-dir", default="reports", help="where the table and reports go (default: reports)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.readme = str(Path(args.readme).resolve())
    if args.quick:  # a smoke run must not touch the real models, reports, search or README
        workdir = Path(tempfile.mkdtemp(prefix="mnist-quick-"))
        if Path(args.readme).resolve() == DEFAULT_README:
            args.readme = str(shutil.copy(DEFAULT_README, workdir / "README.md"))
        os.chdir(workdir)
        print(f"--quick: working in {workdir}")
    readme = Path(args.readme)
    if not readme.is_file():
        raise UserError(f"--readme {readme}: no such file")
    text = readme.read_text()
    try:
        model_table.replace_section(text, "")  # the markers are there: fail now, not after hours of training
    except ValueError as error:
        raise UserError(f"--readme {readme}: {error}") from None
    start = time.perf_counter()
    models_dir = MODELS_DIR
    plan = Plan(quick=args.quick)
    data = load_mnist(None)
    train_everything(plan, args.skip_trained, data, print)
    trained_seconds = time.perf_counter() - start
    rows = measure_rows(plan, models_dir, Path(args.reports_dir), data, print)
    table = model_table.format_model_table(rows)
    flags = "".join(f" --{flag.replace('_', '-')}" for flag in ("quick", "skip_trained") if getattr(args, flag))
    footer = (f"\n\nRegenerated by `python benchmarks/accuracy.py{flags}` "
              f"on {cpu_name()}: this run spent {trained_seconds / 60:.0f} min training and searching and "
              f"{(time.perf_counter() - start - trained_seconds) / 60:.0f} min evaluating; from scratch, the "
              f"recorded training times and search trials add up to {training_minutes(rows, models_dir):.0f} min.")
    Path(args.reports_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.reports_dir) / "model_table.md").write_text(table + footer + "\n")
    readme.write_text(model_table.replace_section(readme.read_text(), table))
    print(f"\n{table}{footer}\n\nwritten to {args.reports_dir}/model_table.md and {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
