"""What a search reports: one line per trial as it ends, then every trial in reports/tuning/<project>/.

`ReportingTuner` is mixed into keras-tuner's tuners (see `search.make_tuner`): it times each trial
into the trial's folder (`seconds.json`) and prints the trial's line. `write_report` writes
trials.csv, trials.md and search.png, and ranks the hyperparameters by their influence on the
objective, corrected for what chance alone would explain.
"""

import csv
import json
import time
from pathlib import Path

import keras_tuner
import numpy as np
from scipy import stats

from mnist_lab import plots
from mnist_lab.text import write_json
from mnist_lab.tuning import OBJECTIVE, SECONDS_FILE
from mnist_lab.tuning.space import describe, search_values

INFLUENCE_MIN_TRIALS = 15  # fewer finished trials cannot tell a hyperparameter's effect from chance


class ReportingTuner:
    """Mixed into a keras-tuner Tuner: times each trial, prints one line when it ends, and says when
    the Bayesian oracle is choosing (fitting its Gaussian process takes many seconds)."""

    def pre_create_trial(self):
        super().pre_create_trial()
        oracle = self.oracle
        if not isinstance(oracle, keras_tuner.oracles.BayesianOptimizationOracle):
            return  # random and hyperband choose at once; a worker's chief does the choosing
        finished = sum(trial.status == "COMPLETED" for trial in oracle.trials.values())
        if finished >= oracle.num_initial_points and len(oracle.trials) < oracle.max_trials:
            print(f"choosing trial {len(oracle.trials)}'s values: a Gaussian process fitted to {finished} "
                  "finished trials (seconds to a minute)", flush=True)

    def run_trial(self, trial, *args, **kwargs):
        start = time.perf_counter()
        results = super().run_trial(trial, *args, **kwargs)
        seconds = time.perf_counter() - start
        write_json({"seconds": round(seconds, 2)}, Path(self.get_trial_dir(trial.trial_id)) / SECONDS_FILE)
        return results

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        ended = self.oracle.get_trial(trial.trial_id)
        best = self.oracle.get_best_trials(1)
        score = f"{OBJECTIVE} {ended.score:.4f}" if ended.score is not None else ended.status.lower()
        best_so_far = f"{best[0].score:.4f}" if best and best[0].score is not None else "none yet"
        seconds = read_seconds(Path(self.get_trial_dir(trial.trial_id)))
        planned = getattr(self, "planned_trials", None)
        number = f" ({int(trial.trial_id) + 1} of {planned})" if planned and trial.trial_id.isdigit() else ""
        print(f"trial {trial.trial_id}{number}: {score} in {seconds if seconds is not None else '?'} s "
              f"(best so far {best_so_far}) | {describe(search_values(ended.hyperparameters.values))}",
              flush=True)


def read_seconds(trial_dir):
    try:
        return json.loads((trial_dir / SECONDS_FILE).read_text())["seconds"]
    except (OSError, ValueError, KeyError):
        return None


def trial_rows(tuner):
    """One dict per trial in start order: id, status, objective, best epoch, seconds, values."""
    rows = []
    for trial in sorted(tuner.oracle.trials.values(), key=lambda trial: int(trial.trial_id)):
        rows.append({"trial": trial.trial_id, "status": trial.status.lower(), OBJECTIVE: trial.score,
                     "best_epoch": None if trial.best_step is None else int(trial.best_step) + 1,
                     "seconds": read_seconds(Path(tuner.get_trial_dir(trial.trial_id))),
                     "values": search_values(trial.hyperparameters.values)})
    return rows


def influence(rows, least=5):
    """Hyperparameters ranked by how much of the objective's spread they explain, in [0, 1].

    A number with many distinct values: Spearman's rank correlation squared (a monotonic trend);
    anything else: epsilon squared, the share of variance between its values' groups. Both are
    corrected for what chance alone would explain with that many trials and groups. Needs `least`
    finished trials with the hyperparameter, and at least 3 more than it has distinct values.
    """
    scored = [row for row in rows if row[OBJECTIVE] is not None]
    ranking = {}
    for name in sorted({name for row in scored for name in row["values"]}):
        pairs = [(row["values"][name], row[OBJECTIVE]) for row in scored if name in row["values"]]
        values, objective = [value for value, _ in pairs], np.array([score for _, score in pairs])
        levels = set(values)
        if len(pairs) < least or len(levels) < 2 or objective.std() == 0:
            continue
        if isinstance(values[0], float) and len(levels) > 3:
            squared = float(stats.spearmanr(values, objective).statistic ** 2)
            ranking[name] = max(0.0, 1 - (1 - squared) * (len(pairs) - 1) / (len(pairs) - 2))  # adjusted, as below
            continue
        if len(pairs) - len(levels) < 3:
            continue  # too few trials per value to tell an effect from chance
        total = ((objective - objective.mean()) ** 2).sum()
        groups = [objective[[value == level for value in values]] for level in levels]
        between = sum(len(group) * (group.mean() - objective.mean()) ** 2 for group in groups)
        within_mean_square = (total - between) / (len(pairs) - len(levels)) if len(pairs) > len(levels) else total
        ranking[name] = max(0.0, float((between - (len(levels) - 1) * within_mean_square) / total))
    return sorted(ranking.items(), key=lambda item: -item[1])


def format_value(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def write_trial_tables(rows, folder):
    """trials.csv and trials.md: every trial with its values, objective and seconds."""
    names = sorted({name for row in rows for name in row["values"]})
    header = ["trial", "status", OBJECTIVE, "best_epoch", "seconds", *names]
    table = [[row["trial"], row["status"], "" if row[OBJECTIVE] is None else f"{row[OBJECTIVE]:.4f}",
              row["best_epoch"] or "", row["seconds"] if row["seconds"] is not None else "",
              *(format_value(row["values"][name]) if name in row["values"] else "" for name in names)]
             for row in rows]
    with open(folder / "trials.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, line)) + " |" for line in table]
    (folder / "trials.md").write_text("\n".join(lines) + "\n")


def write_report(tuner, config, log):
    """The trial tables and the plot; returns the trial rows."""
    rows = trial_rows(tuner)
    folder = config.reports_path()
    folder.mkdir(parents=True, exist_ok=True)
    finished = sum(row[OBJECTIVE] is not None for row in rows)
    write_trial_tables(rows, folder)
    ranking = influence(rows) if finished >= INFLUENCE_MIN_TRIALS else []
    plots.search_results(rows, OBJECTIVE, [name for name, _ in ranking[:2]], folder / "search.png",
                         f"{config.tuner} search, {len(rows)} trials")
    if finished < INFLUENCE_MIN_TRIALS:
        log(f"influence of each hyperparameter: not reported, {finished} finished trials are too few to tell "
            f"an effect from chance (it takes {INFLUENCE_MIN_TRIALS})")
    else:
        log(f"hyperparameters by influence on {OBJECTIVE}, corrected for chance: "
            + (", ".join(f"{name} {share:.2f}" for name, share in ranking) or "none stands out"))
    log(f"trial table and plot written to {folder}/ (trials.csv, trials.md, search.png)")
    return rows
