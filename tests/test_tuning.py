"""The MLP search: its space maps onto the project's MLP; a real 2-trial search on a subset of
MNIST reports, exports and resumes without repeating trials, survives a SIGKILL, refuses a
changed search, and runs distributed (a chief and 2 workers on loopback, one worker killed)."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from mnist_lab.evaluation import EvalConfig, evaluate
from mnist_lab.reader import SavedModelClassifier
from mnist_lab.startup import run
from mnist_lab.tuning import SearchConfig, report, space
from mnist_lab.tuning.roles import Role
from mnist_lab.tuning.search import load_splits, make_tuner
from tests.conftest import ROOT
from tuning import search_mlp

SEARCH = ROOT / "tuning" / "search_mlp.py"


def search_argv(data_dir, tmp_path, *extra):
    return ["--data-dir", str(data_dir), "--subset", "2000", "--epochs", "2", "--final-epochs", "1",
            "--directory", str(tmp_path / "state"), "--project-name", "mlp",
            "--output", str(tmp_path / "models" / "mlp_tuned"),
            "--reports-dir", str(tmp_path / "reports"), *map(str, extra)]


def trial_table(tmp_path):
    with open(tmp_path / "reports" / "tuning" / "mlp" / "trials.csv") as handle:
        return list(csv.DictReader(handle))


def trial_lines(output):
    """The 'trial N: ...' lines, one per finished trial, as (trial id, line)."""
    found = []
    for line in output.splitlines():
        text = line.split("] ", 1)[-1]  # a worker's lines come prefixed with its name
        if text.startswith("trial ") and ": " in text:
            found.append((text.split(":")[0].split()[1], text))
    return found


def start_search(argv, tmp_path):
    # Behind a proxy (here one that refuses every connection), which must not see the calls on loopback.
    env = dict(os.environ, KERAS_HOME=str(tmp_path / "keras_home"), PYTHONUNBUFFERED="1",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    return subprocess.Popen([sys.executable, str(SEARCH), *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def read_until(process, fragment, seen, timeout=300):
    """Read the process's output line by line into `seen` until a line contains `fragment`."""
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        seen.append(line)
        if fragment in line:
            return line
        assert time.monotonic() < deadline, f"no {fragment!r} in time: {''.join(seen)}"
    raise AssertionError(f"the search ended before {fragment!r}: {''.join(seen)}")


def test_the_space_maps_onto_the_projects_mlp_builder():
    values = {"hidden_layers": 2, "units_1": 512, "units_2": 128, "units_3": 1024, "activation": "gelu",
              "dropout": 0.30000000000000004, "batch_norm": True, "learning_rate": 3e-3, "optimizer": "rmsprop",
              "augment": True, "tuner/epochs": 4}
    assert space.search_values(values) == {key: values[key] for key in
                                           ("hidden_layers", "units_1", "units_2", "activation", "dropout",
                                            "batch_norm", "learning_rate", "optimizer", "augment")}
    assert space.mlp_arguments(values) == {"hidden_units": (512, 128), "activation": "gelu", "dropout": 0.3,
                                           "batch_norm": True}
    spec = space.tuned_spec(values, epochs=7)
    assert (spec.recipe.epochs, spec.recipe.learning_rate, spec.recipe.optimizer, spec.recipe.augment) == \
        (7, 3e-3, "rmsprop", True)
    model = spec.build()
    # With batch norm the hidden Dense layers have no bias and BatchNorm has 4 numbers per unit.
    dense = [layer.units for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert dense == [512, 128, 10]
    assert model.count_params() == (784 * 512 + 4 * 512) + (512 * 128 + 4 * 128) + (128 * 10 + 10)
    assert model.output_shape == (None, 10)


def test_influence_ranks_the_hyperparameter_that_decides_the_score_first():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        values = {"augment": bool(i % 2), "activation": str(rng.choice(["relu", "tanh"])),
                  "learning_rate": float(rng.uniform(1e-4, 1e-2))}
        rows.append({"val_accuracy": 0.90 + 0.05 * values["augment"] + rng.uniform(0, 0.005), "values": values})
    ranking = dict(report.influence(rows))
    assert list(ranking)[0] == "augment" and ranking["augment"] > 0.9
    assert ranking["activation"] < 0.2 and ranking["learning_rate"] < 0.5
    assert report.influence(rows[:4]) == []  # too few trials to say anything


def test_each_process_reads_its_role_once_from_keras_tuners_environment():
    single, supervisor = SearchConfig(), SearchConfig(workers=2)
    alone = Role.from_environment({})
    assert (alone.distributed, alone.finishes, alone.supervises(single), alone.supervises(supervisor)) == \
        (False, True, False, True)
    address = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8470"}
    chief = Role.from_environment({**address, "KERASTUNER_TUNER_ID": "chief"})
    assert (chief.is_chief, chief.is_worker, chief.finishes, chief.oracle_port) == (True, False, True, "8470")
    supervised = Role.from_environment({**address, "KERASTUNER_TUNER_ID": "chief", "MNIST_LAB_SUPERVISED": "1"})
    assert (supervised.is_chief, supervised.finishes) == (True, False)
    worker = Role.from_environment({**address, "KERASTUNER_TUNER_ID": "worker1"})
    assert (worker.is_chief, worker.is_worker, worker.finishes) == (False, True, False)
    # A chief or a worker runs the supervisor's own flags, --workers included, and starts nobody.
    assert not any(role.supervises(supervisor) for role in (chief, supervised, worker))


@pytest.mark.slow
def test_a_two_trial_search_reports_exports_and_resumes_without_repeating(real_mnist_dir, tmp_path, capsys):
    argv = search_argv(real_mnist_dir, tmp_path, "--max-trials", 2)
    assert search_mlp.main(argv) == 0
    first = capsys.readouterr().out
    assert sorted(trial for trial, _ in trial_lines(first)) == ["0", "1"]
    assert "plan: 2 bayesian trials of 2 epochs on 2000 images (scored on 400 validation images), then the best " \
           f"values retrained for 1 epoch, tested once and exported to {tmp_path / 'models' / 'mlp_tuned'}" in first
    assert [line.split(":")[0] for _, line in trial_lines(first)] == ["trial 0 (1 of 2)", "trial 1 (2 of 2)"]
    assert "Epoch " not in first and first.count("/step") == 1, \
        "off a terminal, a trial is one line, and the final fit (1 epoch) a line per epoch"
    rows = trial_table(tmp_path)
    assert [row["status"] for row in rows] == ["completed", "completed"]
    assert all(0 < float(row["val_accuracy"]) <= 1 and float(row["seconds"]) > 0 for row in rows)
    reports = tmp_path / "reports" / "tuning" / "mlp"
    assert (reports / "trials.md").read_text().startswith("| trial | status | val_accuracy |")
    assert (reports / "search.png").stat().st_size > 10_000

    model_dir = tmp_path / "models" / "mlp_tuned"
    metadata = json.loads((model_dir / "metadata.json").read_text())
    best = max(rows, key=lambda row: float(row["val_accuracy"]))
    assert metadata["search"]["best_trial"] == best["trial"]
    assert metadata["hyperparameters"]["optimizer"] == best["optimizer"]
    assert metadata["recipe"]["epochs"] == 1 and metadata["data"]["train_images"] == 2000
    probabilities = SavedModelClassifier(model_dir).predict(np.zeros((3, 28, 28, 1), np.float32))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    table, failures = evaluate(EvalConfig(models_dir=str(tmp_path / "models"), data_dir=str(real_mnist_dir),
                                          reports_dir=str(tmp_path / "eval")), log=lambda *_: None)
    assert failures == [] and [row["model"] for row in table] == ["mlp_tuned"]

    seconds_files = sorted((tmp_path / "state" / "mlp").glob("trial_*/seconds.json"))
    stamps = [path.stat().st_mtime_ns for path in seconds_files]
    assert search_mlp.main(argv) == 0  # the same command again: nothing to repeat
    again = capsys.readouterr().out
    assert trial_lines(again) == [] and "nothing to retrain" in again
    assert [path.stat().st_mtime_ns for path in seconds_files] == stamps
    assert len(trial_table(tmp_path)) == 2

    assert search_mlp.main(search_argv(real_mnist_dir, tmp_path, "--max-trials", 3)) == 0  # one more trial
    more = capsys.readouterr().out
    assert [trial for trial, _ in trial_lines(more)] == ["2"]
    assert "2 of 3 trials finished, 1 to go; an unfinished one runs again" in more
    assert len(trial_table(tmp_path)) == 3


@pytest.mark.slow
def test_a_changed_search_is_refused_until_fresh(real_mnist_dir, tmp_path, capsys):
    argv = search_argv(real_mnist_dir, tmp_path, "--max-trials", 1)
    assert search_mlp.main(argv) == 0
    oracle = tmp_path / "state" / "mlp" / "oracle.json"
    kept = oracle.read_bytes()
    capsys.readouterr()
    for change in (["--tuner", "random"], ["--seed", "7"], ["--epochs", "3"]):
        assert run(lambda: search_mlp.main(argv + change)) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and "holds a search with other settings" in error[0] and "--fresh" in error[0]
        assert oracle.read_bytes() == kept
    assert search_mlp.main(argv + ["--tuner", "random", "--fresh"]) == 0
    assert "--fresh: discarding the search" in capsys.readouterr().out
    assert json.loads((tmp_path / "state" / "mlp" / "search.json").read_text())["tuner"] == "random"


@pytest.mark.slow
def test_a_search_begun_in_one_process_is_continued_by_a_chief_and_back(real_mnist_dir, tmp_path, monkeypatch):
    """keras-tuner reloads only from its own tuner_<ID>.json; the search must not start over."""
    argv = search_argv(real_mnist_dir, tmp_path, "--max-trials", 1)
    assert search_mlp.main(argv) == 0
    config = SearchConfig(epochs=2, final_epochs=1, subset=2000, directory=str(tmp_path / "state"),
                          project_name="mlp", data_dir=str(real_mnist_dir))
    _, splits = load_splits(config, log=lambda *_: None)
    hypermodel = space.MlpHyperModel(splits, config.epochs, config.seed, verbose=0)
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "1")
    as_chief = make_tuner(config, hypermodel, Role.from_environment())
    assert list(as_chief.oracle.trials) == ["0"]
    as_chief.save()  # what a chief does first: now both tuner files exist
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(name)
    (tmp_path / "state" / "mlp" / "tuner0.json").unlink()  # as if the search had begun under a chief
    assert list(make_tuner(config, hypermodel, Role.from_environment()).oracle.trials) == ["0"]


@pytest.mark.slow
def test_a_killed_search_resumes_and_retries_only_the_interrupted_trial(real_mnist_dir, tmp_path):
    argv = search_argv(real_mnist_dir, tmp_path, "--max-trials", 3, "--epochs", 3, "--verbose", 2)
    process, seen = start_search(argv, tmp_path), []
    read_until(process, "trial 0 (1 of 3):", seen)
    read_until(process, "Epoch 2/3", seen)  # inside trial 1
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "models" / "mlp_tuned").exists()
    trial_0 = (tmp_path / "state" / "mlp" / "trial_0" / "seconds.json").read_bytes()

    again = start_search(argv, tmp_path)
    output = again.communicate(timeout=600)[0]
    assert again.returncode == 0, output
    assert sorted(trial for trial, _ in trial_lines(output)) == ["1", "2"]
    assert [row["status"] for row in trial_table(tmp_path)] == ["completed"] * 3
    assert (tmp_path / "state" / "mlp" / "trial_0" / "seconds.json").read_bytes() == trial_0
    assert (tmp_path / "models" / "mlp_tuned" / "saved_model.pb").is_file()


def child_pid(parent, tuner_id):
    """The pid of `parent`'s child process running with KERASTUNER_TUNER_ID=tuner_id."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent_pid = int(handle.read().rsplit(")", 1)[1].split()[1])
            environ = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if parent_pid == parent and f"KERASTUNER_TUNER_ID={tuner_id}".encode() in environ:
            return int(entry)
    raise AssertionError(f"no child {tuner_id} of {parent}")


@pytest.mark.slow
@pytest.mark.distributed
def test_a_distributed_search_records_every_trial_once_and_restarts_a_killed_worker(real_mnist_dir, tmp_path):
    argv = search_argv(real_mnist_dir, tmp_path, "--max-trials", 4, "--epochs", 3, "--workers", 2, "--verbose", 2)
    process, seen = start_search(argv, tmp_path), []
    read_until(process, "[worker1] Epoch 2/3", seen)
    os.kill(child_pid(process.pid, "worker1"), signal.SIGKILL)
    rest = process.communicate(timeout=600)[0]
    output = "".join(seen) + rest
    assert process.returncode == 0, output
    assert "worker1 died (exit code -9); restarting it (1 of 2)" in output
    finished = [trial for trial, _ in trial_lines(output)]
    assert sorted(finished) == ["0", "1", "2", "3"]  # the killed worker's trial finished once, after its restart
    assert {line.split("]")[0] for line in output.splitlines() if ": val_accuracy" in line} == {"[worker1", "[worker2"}
    rows = trial_table(tmp_path)
    assert [row["trial"] for row in rows] == ["0", "1", "2", "3"]
    assert [row["status"] for row in rows] == ["completed"] * 4
    assert (tmp_path / "models" / "mlp_tuned" / "saved_model.pb").is_file()


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.distributed
def test_killing_the_workers_parent_takes_its_chief_and_workers_with_it(real_mnist_dir, tmp_path):
    argv = search_argv(real_mnist_dir, tmp_path, "--max-trials", 4, "--epochs", 3, "--workers", 1, "--verbose", 2)
    process, seen = start_search(argv, tmp_path), []
    read_until(process, "[worker1] Epoch 1/3", seen)
    children = [child_pid(process.pid, "chief"), child_pid(process.pid, "worker1")]
    process.kill()
    process.wait()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in children), "no orphaned chief or worker holds the port and memory"


def test_keras_tuners_state_is_written_whole_and_a_damaged_one_refused_in_one_line(tmp_path):
    from keras_tuner.src import utils as keras_tuner_utils

    from mnist_lab.errors import UserError
    from mnist_lab.tuning.search import check_state_files, state_written_whole

    config = SearchConfig(directory=str(tmp_path / "state"))
    (config.project_dir / "trial_3").mkdir(parents=True)
    original = keras_tuner_utils.save_json
    with state_written_whole():
        keras_tuner_utils.save_json(str(config.project_dir / "oracle.json"), {"ongoing_trials": {}})
        keras_tuner_utils.save_json(str(config.project_dir / "trial_3" / "trial.json"), {"trial_id": "3"})
    assert keras_tuner_utils.save_json is original
    assert sorted(path.name for path in config.project_dir.rglob("*")) == ["oracle.json", "trial.json", "trial_3"]
    check_state_files(config)
    (config.project_dir / "trial_3" / "trial.json").write_text("")  # what a kill mid-write used to leave
    with pytest.raises(UserError, match=r"trial_3/trial.json: keras-tuner's state is damaged \(.*\), so the "
                                        r"search cannot resume from it; --fresh starts it afresh"):
        check_state_files(config)


def test_a_port_in_use_is_refused_in_one_line_and_the_search_kept(real_mnist_dir, tmp_path, capsys):
    state = tmp_path / "state" / "mlp"
    state.mkdir(parents=True)
    (state / "keep.txt").write_text("an earlier search")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = search_argv(real_mnist_dir, tmp_path, "--workers", 1, "--port", port, "--fresh")
        assert run(lambda: search_mlp.main(argv)) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"port {port}: cannot listen on 127.0.0.1:{port}" in error[0]
    assert (state / "keep.txt").read_text() == "an earlier search"
