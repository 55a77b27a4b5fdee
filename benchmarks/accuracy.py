"""Regenerate the README's model table: train every model with its recipe, evaluate, write the table.

    python benchmarks/accuracy.py                  # from scratch: every model, the seeds, the ensemble, the MLP search
    python benchmarks/accuracy.py --skip-trained   # only what is not trained yet with today's recipe and data
    python benchmarks/accuracy.py --quick          # every step in about 2 minutes, on a subset, in a temporary folder

Trains each registered model (`python train.py --model NAME`), the NumPy net (`python -m
scratch.train`), the seeds behind the top row (`python train.py --model deep_cnn --seeds 5`), the
ensemble of those seeds (`--ensemble 5`) and the tuned MLP (`python tuning/search_mlp.py`);
then evaluates every SavedModel, plain and with test-time augmentation (`python evaluate.py --tta`),
writes reports/model_table.md and puts the table into README.md between its markers.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_README = ROOT / "README.md"
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the project's modules are one level up

from mnist_lab.cli import ArgumentParser, quiet_tensorflow_import, run  # noqa: E402

quiet_tensorflow_import()

from mnist_lab import ensemble, export, model_table, tuning  # noqa: E402
from mnist_lab.data import load_mnist  # noqa: E402
from mnist_lab.errors import UserError  # noqa: E402
from mnist_lab.evaluation import EvalConfig, evaluate, evaluate_folder  # noqa: E402
from mnist_lab.machine import cpu_name  # noqa: E402
from mnist_lab.training import TrainConfig, recipe_from_metadata, train  # noqa: E402
from models import REGISTRY  # noqa: E402
from scratch.train import NAME as SCRATCH_NAME  # noqa: E402
from scratch.train import ScratchConfig, train_scratch  # noqa: E402

SEEDS = {"deep_cnn": 5}  # rows given as mean ± std over this many seeds: the ensemble's members
ENSEMBLES = {"deep_cnn": 5}
QUICK_SUBSET = 1000  # --quick: every step on this many training images, one epoch, two seeds


@dataclass
class Plan:
    """What to train: the full recipes, or --quick's smoke run of every step."""

    quick: bool = False

    def train_config(self, name):
        return TrainConfig(model=name, subset=QUICK_SUBSET, epochs=1) if self.quick else TrainConfig(model=name)

    def scratch_config(self):
        return ScratchConfig(subset=QUICK_SUBSET, epochs=1) if self.quick else ScratchConfig()

    def search_config(self, fresh):
        if self.quick:
            return tuning.SearchConfig(subset=QUICK_SUBSET, max_trials=2, epochs=1, final_epochs=1, fresh=fresh)
        return tuning.SearchConfig(fresh=fresh)

    def seeds(self):
        return {name: 2 if self.quick else count for name, count in SEEDS.items()}

    def ensembles(self):
        return {name: 2 if self.quick else count for name, count in ENSEMBLES.items()}


def sources(plan):
    """What the rows that are not registry models are measured against."""
    return {SCRATCH_NAME: REGISTRY["simple_cnn"].source,
            tuning.MODEL_NAME: "aim: ≥ 98.8 %, above `mlp` and `advanced_mlp`",
            **{ensemble.ensemble_name(name, count): "aim: ≥ 99.80 %; published CNN ensembles: 99.75-99.8 %"
               for name, count in plan.ensembles().items()}}


def exported(folder, fingerprint, subset, matches=lambda metadata: True):
    """Whether `folder` holds a model trained on this data and subset that also `matches`."""
    folder = Path(folder)
    if not (folder / "saved_model.pb").is_file():
        return False
    metadata = export.read_metadata(folder)
    return (metadata.get("data", {}).get("fingerprint_sha256") == fingerprint
            and metadata.get("flags", {}).get("subset") == subset and matches(metadata))


def train_everything(plan, skip_trained, models_dir, log):
    """Train what the table needs; with `skip_trained`, only what is missing or out of date."""
    fingerprint = load_mnist(None, log=log).fingerprint
    for name in sorted(REGISTRY):
        config = plan.train_config(name)
        if name in SEEDS:
            continue  # its rows come from its seeds
        if skip_trained and ensemble.find_trained(config, fingerprint, [models_dir / name]):
            log(f"{name}: trained with today's recipe and data, skipped")
            continue
        train(config, log)
    subset = plan.scratch_config().subset
    if not (skip_trained and exported(models_dir / SCRATCH_NAME, fingerprint, subset)):
        train_scratch(plan.scratch_config(), log)
    for name, count in plan.seeds().items():
        ensemble.run_seeds(plan.train_config(name), count, log=log, reuse=skip_trained)
    for name, count in plan.ensembles().items():
        config = plan.train_config(name)
        seeds = list(range(config.seed, config.seed + count))

        def same_members(metadata):
            members = metadata.get("ensemble", {}).get("members", [])
            return ([member["seed"] for member in members] == seeds
                    and recipe_from_metadata(metadata.get("recipe", {})) == config.recipe())

        if skip_trained and exported(models_dir / ensemble.ensemble_name(name, count), fingerprint, subset,
                                     same_members):
            log(f"{ensemble.ensemble_name(name, count)}: exported from seeds {seeds[0]}-{seeds[-1]}, skipped")
            continue
        ensemble.run_ensemble(config, count, log=log)  # its members are the seeds just trained
    if not (skip_trained and exported(models_dir / tuning.MODEL_NAME, fingerprint, subset)):
        # From scratch, a new search; otherwise the one in tuner_state/ goes on where it stopped.
        tuning.search(plan.search_config(fresh=not skip_trained), log)


def measure_rows(plan, models_dir, reports_dir, log):
    """Table rows: every model's SavedModel evaluated plain and with TTA; seeded models over their seeds."""
    rows, failures = evaluate(EvalConfig(models_dir=str(models_dir), reports_dir=str(reports_dir), tta=True), log)
    if failures:
        raise UserError(f"could not evaluate: {'; '.join(failures)}")
    table = []
    for row in rows:
        if row["model"] in SEEDS:
            continue
        metadata = export.read_metadata(models_dir / row["model"])
        spec = REGISTRY.get(row["model"])  # today's words for a registry model, whenever it was trained
        table.append(model_table.table_row(metadata, [row["test_accuracy"]], [row["tta_accuracy"]],
                                           spec.source if spec else sources(plan).get(row["model"]),
                                           spec.summary if spec else None))
    for name, count in plan.seeds().items():
        members = ensemble.train_members(plan.train_config(name), count, log)  # all found: trained above
        config = EvalConfig(reports_dir=str(Path(reports_dir) / "members" / name), tta=True)
        data = load_mnist(None, log=log)
        seeded = [evaluate_folder(folder, data, config, log) for folder, _ in members]
        metadatas = [metadata for _, metadata in members]
        row = model_table.table_row(metadatas[0], [r["test_accuracy"] for r in seeded],
                                    [r["tta_accuracy"] for r in seeded], REGISTRY[name].source, REGISTRY[name].summary)
        row["training_seconds"] = sum(m["training_seconds"] for m in metadatas) / count
        row["seconds_per_epoch"] = sum(m["seconds_per_epoch"] for m in metadatas) / count
        table.append(row)
    return table


def training_minutes(rows, models_dir):
    """What training every row from scratch costs: the recorded training times, each seed counted, and the search."""
    seconds = sum(row["training_seconds"] * len(row["test_accuracy"]) for row in rows
                  if row["training_seconds"] is not None and not row["ensemble_of"])
    tuned = models_dir / tuning.MODEL_NAME
    if (tuned / export.METADATA_FILE).is_file():
        seconds += export.read_metadata(tuned).get("search", {}).get("trial_seconds_total", 0)
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
    models_dir = Path(export.MODELS_DIR)
    plan = Plan(quick=args.quick)
    train_everything(plan, args.skip_trained, models_dir, print)
    trained_seconds = time.perf_counter() - start
    rows = measure_rows(plan, models_dir, Path(args.reports_dir), print)
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
