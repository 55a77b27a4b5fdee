"""Faults performed for real: SIGKILL and Ctrl-C mid-training and mid-export, a diverging loss, two
runs on one folder, damaged models, every command's flags swept with values that cannot work, and
bit-identical reruns with --deterministic."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from mnist_lab.errors import UserError
from mnist_lab.evaluation import EvalConfig, evaluate
from mnist_lab.reader import SavedModelClassifier
from mnist_lab.startup import run
from tests.conftest import ROOT, run_in_process, synthetic_digits, write_idx_dataset

pytestmark = pytest.mark.slow  # real processes, real kills, real timing

EPOCHS = 4


@pytest.fixture
def larger_synthetic_dir(tmp_path):
    """Enough synthetic digits (3000 to train on) that an epoch lasts long enough to be interrupted."""
    rng = np.random.default_rng(1)
    x_train, y_train = synthetic_digits(4000, rng)
    x_test, y_test = synthetic_digits(500, rng)
    return write_idx_dataset(tmp_path / "digits", (x_train, y_train, x_test, y_test))


def train_command(data_dir, output, *extra):
    return [sys.executable, str(ROOT / "train.py"), "--model", "cnn", "--data-dir", str(data_dir),
            "--validation-size", "1000", "--output", str(output), *map(str, extra)]


def start(command, env_home, cwd=ROOT):
    env = dict(os.environ, KERAS_HOME=str(env_home))
    # As from a terminal, even when the tests themselves run as a background job, whose children
    # inherit an ignored SIGINT (and a Ctrl-C would then rightly be ignored).
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(command, env_home, cwd=ROOT):
    env = dict(os.environ, KERAS_HOME=str(env_home))
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def in_process(command, capsys):
    """A train_command (or evaluate.py command line) run in this process: see conftest.run_in_process."""
    return run_in_process(os.path.basename(command[1]), *command[2:], capsys=capsys)


def wait_for(condition, process, timeout=120, interval=0.01):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before the moment to interrupt it: {process.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting for the moment to interrupt"
        time.sleep(interval)


def completed_epochs(output):
    progress = output.parent / f".{output.name}.backup" / "training_metadata.json"
    try:
        return json.loads(progress.read_text())["epoch"]
    except (OSError, ValueError):
        return 0


def read_history(folder):
    with open(folder / "history.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["SIGKILL", "Ctrl-C", "SIGTERM"])
def test_a_run_killed_mid_training_resumes_where_it_stopped(tmp_path, larger_synthetic_dir, stop, capsys):
    output = tmp_path / "models" / "cnn"
    command = train_command(larger_synthetic_dir, output, "--epochs", EPOCHS)
    process = start(command, tmp_path / "keras")
    wait_for(lambda: completed_epochs(output) >= 1, process)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    if stop != signal.SIGKILL:  # a stop the run sees says how to go on
        assert stderr.strip().splitlines()[-1].startswith("interrupted; run the same command again to go on")
        assert "Traceback" not in stderr and process.returncode == 130
    assert not output.exists(), "nothing is exported by an interrupted run"
    done_before = completed_epochs(output)
    assert 1 <= done_before < EPOCHS

    done = in_process(command, capsys)
    assert done.returncode == 0, done.stderr
    assert f"resuming from epoch {done_before} of {EPOCHS}" in done.stdout
    assert f"Epoch {done_before + 1}/{EPOCHS}" in done.stdout and "Epoch 1/" not in done.stdout
    metadata = json.loads((output / "metadata.json").read_text())
    assert metadata["epochs_run"] == EPOCHS and metadata["resumed_after_epoch"] == done_before
    assert [row["epoch"] for row in read_history(output)] == [str(e) for e in range(1, EPOCHS + 1)]
    assert not (output.parent / ".cnn.backup").exists(), "the backup goes once the model is exported"


def test_fresh_starts_over_and_other_settings_are_not_resumed(tmp_path, larger_synthetic_dir, capsys):
    output = tmp_path / "models" / "cnn"
    command = train_command(larger_synthetic_dir, output, "--epochs", EPOCHS)
    process = start(command, tmp_path / "keras")
    wait_for(lambda: completed_epochs(output) >= 1, process)
    process.kill()
    process.wait()

    changed = in_process(train_command(larger_synthetic_dir, output, "--epochs", 2), capsys)
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert "interrupted run with other settings" in changed.stderr and "--fresh" in changed.stderr

    fresh = in_process(train_command(larger_synthetic_dir, output, "--epochs", 2, "--fresh"), capsys)
    assert fresh.returncode == 0, fresh.stderr
    assert "--fresh: removed" in fresh.stdout and "resuming" not in fresh.stdout
    assert json.loads((output / "metadata.json").read_text())["epochs_run"] == 2


def test_a_kill_during_export_leaves_the_previous_model_whole(tmp_path, synthetic_dir, capsys):
    output = tmp_path / "models" / "cnn"
    first = in_process(train_command(synthetic_dir, output, "--epochs", 1, "--validation-size", 200), capsys)
    assert first.returncode == 0, first.stderr
    good = json.loads((output / "metadata.json").read_text())

    process = start(train_command(synthetic_dir, output, "--epochs", 2, "--validation-size", 200), tmp_path / "keras")
    staging = output.parent / f".cnn.tmp-{process.pid}"
    wait_for(staging.exists, process, interval=0.002)
    process.kill()
    process.wait()

    assert json.loads((output / "metadata.json").read_text()) == good
    SavedModelClassifier(output).predict(np.zeros((2, 28, 28, 1), np.float32))
    rows, failures = evaluate(EvalConfig(models_dir=str(output.parent), data_dir=str(synthetic_dir),
                                         reports_dir=str(tmp_path / "reports")), log=lambda *_: None)
    assert [row["model"] for row in rows] == ["cnn"] and failures == []
    assert staging.exists(), "a reader leaves the models folder as it found it"
    # The interrupted run kept its backup: running it again finishes it from the last epoch, and
    # the writer cleans up what the dead run left.
    again = in_process(train_command(synthetic_dir, output, "--epochs", 2, "--validation-size", 200), capsys)
    assert again.returncode == 0 and "resuming from epoch 2 of 2" in again.stdout
    assert not staging.exists(), "the dead run's staging folder is cleaned up by the next writer"


def test_a_diverging_loss_stops_at_once_and_keeps_the_good_model(tmp_path, synthetic_dir, capsys):
    output = tmp_path / "models" / "cnn"
    assert in_process(train_command(synthetic_dir, output, "--epochs", 1), capsys).returncode == 0
    good = (output / "metadata.json").read_text()

    done = in_process(train_command(synthetic_dir, output, "--epochs", 3, "--learning-rate", "1e6"), capsys)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    # Checked after each call to TensorFlow: cnn's recipe runs 16 batches a call.
    assert re.match(r"error: training diverged: the loss became nan in epoch 1, batches \d+-\d+; ", line), line
    assert "nothing was exported" in line and "--learning-rate below 1e+06" in line
    assert "Epoch 2/3" not in done.stdout, "it stops at once, not at the end"
    assert (output / "metadata.json").read_text() == good


def writer_command(writer, data_dir, output, tmp_path, *extra):
    """A command line that writes `output`: each of the four writers, on the synthetic digits."""
    data = ["--data-dir", str(data_dir), "--validation-size", "1000", "--output", str(output), *map(str, extra)]
    if writer == "train":
        return [str(ROOT / "train.py"), "--model", "cnn", *data]
    if writer == "ensemble":
        return [str(ROOT / "train.py"), "--model", "cnn", "--ensemble", "2", *data]
    if writer == "scratch":
        return ["-m", "scratch.train", *data]
    return [str(ROOT / "tuning" / "search_mlp.py"), "--max-trials", "2", "--directory", str(tmp_path / "tuner"),
            "--reports-dir", str(tmp_path / "reports"), *data]


def main_of(command):
    """The main() of a writer_command's command, to run it in this process."""
    import train as train_cli
    from scratch import train as scratch_cli
    from tuning import search_mlp as search_cli

    return {"train.py": train_cli.main, "scratch.train": scratch_cli.main, "search_mlp.py": search_cli.main}[
        os.path.basename(command[1] if command[0] == "-m" else command[0])]


# Each writer takes its lock before it loads any data, so every other writer is refused at once; the
# search before its first trial, not after them all at its final fit. The first writer is a real
# process; the others run in this one, as the lock is the kernel's either way.
@pytest.mark.parametrize("first_writer", ["train", "ensemble", "scratch", "search"])
def test_every_other_writer_of_the_same_folder_is_refused_before_any_work(tmp_path, larger_synthetic_dir,
                                                                          first_writer, monkeypatch, capsys):
    output = tmp_path / "out" / "cnn"
    lock = output.parent / ".cnn.lock"
    monkeypatch.chdir(tmp_path)  # an ensemble's members go to ./saved_models/members/
    first = start([sys.executable, *writer_command(first_writer, larger_synthetic_dir, output, tmp_path, "--epochs",
                                                   50)], tmp_path / "keras", cwd=tmp_path)
    try:
        wait_for(lambda: lock.is_file() and f"pid {first.pid}" in lock.read_text(), first)
        for second_writer in ("train", "ensemble", "scratch", "search"):
            command = writer_command(second_writer, larger_synthetic_dir, output, tmp_path, "--epochs", 1)
            assert run(lambda: main_of(command)(command[2 if command[0] == "-m" else 1:])) == 2, second_writer
            out, err = capsys.readouterr()
            (line,) = err.strip().splitlines()
            assert f"is being written by another run (pid {first.pid}" in line and "--epochs 50" in line, line
            assert "trial" not in out and "training" not in out, "refused before any work"
    finally:
        first.kill()
        first.wait()
    assert not output.exists()
    assert not (tmp_path / "tuner" / "mlp").exists() or first_writer == "search", "only the first writer worked"
    assert not (tmp_path / "saved_models").exists() or first_writer == "ensemble"


@pytest.mark.parametrize("damage", ["missing variables", "empty variables index", "empty saved_model.pb"])
def test_a_damaged_savedmodel_is_named_and_the_rest_evaluated(tmp_path, synthetic_dir, damage, capsys):
    from mnist_lab.config import TrainConfig
    from mnist_lab.training import train

    models = tmp_path / "models"
    train(TrainConfig(model="mlp", epochs=1, data_dir=str(synthetic_dir), validation_size=200,
                      output=str(models / "good"), verbose=0), log=lambda *_: None)
    damaged = models / "damaged"
    shutil.copytree(models / "good", damaged)
    if damage == "missing variables":
        for path in (damaged / "variables").iterdir():
            path.unlink()
        (damaged / "variables").rmdir()
    elif damage == "empty variables index":
        (damaged / "variables" / "variables.index").write_bytes(b"")
    else:
        (damaged / "saved_model.pb").write_bytes(b"")
    done = in_process([sys.executable, str(ROOT / "evaluate.py"), "--models-dir", str(models),
                       "--data-dir", str(synthetic_dir), "--reports-dir", str(tmp_path / "reports")], capsys)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: damaged: ")
    assert "| good |" in done.stdout


def test_deterministic_runs_are_bit_identical(tmp_path, synthetic_dir):
    """With augmentation and dropout on, the parts that would otherwise vary from run to run."""
    runs = []
    for index in range(2):
        output = tmp_path / f"run{index}" / "m"
        command = [*train_command(synthetic_dir, output, "--epochs", 2, "--validation-size", 200),
                   "--seed", 3, "--deterministic", "--augment"]
        command[command.index("cnn")] = "cnn_dropout"
        done = finish(list(map(str, command)), tmp_path / "keras")
        assert done.returncode == 0, done.stderr
        runs.append(output)
    first, second = (keras.saving.load_model(run / "model.keras").get_weights() for run in runs)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    metrics = [[{k: v for k, v in row.items() if k != "seconds"} for row in read_history(run)] for run in runs]
    assert metrics[0] == metrics[1]
    accuracies = [json.loads((run / "metadata.json").read_text())["test_accuracy"] for run in runs]
    assert accuracies[0] == accuracies[1]


# Every command's flags with values that cannot work: one line on stderr, exit status 2, no
# traceback, nothing written. Run in-process through the same `run()` wrapper as the scripts.

def sweep_cases():
    import evaluate as evaluate_cli
    import predict as predict_cli
    import serve as serve_cli
    import train as train_cli
    from mnist_lab.data import __main__ as data_cli
    from scratch import train as scratch_cli
    from tuning import search_mlp as search_cli

    number_flags = {"train": ["--epochs", "--batch-size", "--subset", "--validation-size"],
                    "scratch": ["--epochs", "--batch-size", "--subset", "--validation-size"],
                    "evaluate": ["--batch-size"],
                    "search": ["--max-trials", "--epochs", "--final-epochs", "--subset", "--validation-size"]}
    mains = {"train": train_cli.main, "scratch": scratch_cli.main, "evaluate": evaluate_cli.main,
             "data": data_cli.main, "predict": predict_cli.main, "serve": serve_cli.main, "search": search_cli.main}
    cases = []
    for command, flags in number_flags.items():
        for flag in flags:
            for value in ("-1", "0", "3.5", "many", ""):
                if (command, flag, value) != ("train", "--validation-size", "0"):  # a final fit on every image
                    cases.append((command, [flag, value], flag))
    for command in ("train", "scratch", "search"):
        cases += [
            (command, ["--seed", "-5"], "--seed"),
            (command, ["--data-dir", "/no/such/folder"], "--data-dir /no/such/folder: no such folder"),
            (command, ["--output", "/proc/cannot/write"], "--output /proc/cannot"),
            (command, ["--subset", "1000000000"], "--subset 1000000000: more than the"),
            (command, ["--validation-size", "1000000000"], "--validation-size 1000000000"),
            (command, ["--no-such-flag"], "unrecognized arguments"),
        ]
    for command in ("train", "scratch"):
        cases += [
            (command, ["--learning-rate", "-0.1"], "--learning-rate"),
            (command, ["--learning-rate", "inf"], "--learning-rate"),
            (command, ["--batch-size", "1000000000"], "--batch-size 1000000000: larger than the"),
        ]
    cases += [
        ("search", ["--tuner", "grid"], "--tuner"),
        ("search", ["--tuner", "hyperband", "--max-trials", "5"], "--max-trials does not apply to --tuner hyperband"),
        ("search", ["--directory", "/proc/cannot/write"], "--directory /proc/cannot/write: cannot write"),
        ("search", ["--reports-dir", "/proc/cannot/write"], "--reports-dir /proc/cannot/write: cannot write"),
        ("search", ["--workers", "-1"], "--workers"),
        ("search", ["--port", "70000"], "a port from 0 to 65535, got 70000"),
        ("search", ["--worker-restarts", "many"], "--worker-restarts"),
        ("train", ["--model", "gpt"], "--model"),
        ("train", ["--model", "mlp_tuned"], "train it with `python tuning/search_mlp.py`"),
        ("train", ["--model", "deep_cnn_ensemble5"], "train it with `python train.py --model deep_cnn --ensemble 5`"),
        ("train", ["--optimizer", "lion"], "--optimizer"),
        ("train", ["--schedule", "linear"], "--schedule"),
        ("train", ["--tensorboard", "/proc/cannot/write"], "--tensorboard /proc/cannot"),
        ("evaluate", ["--models-dir", "/no/such/models"], "--models-dir /no/such/models"),
        ("evaluate", ["--reports-dir", "/proc/cannot/write"], "--reports-dir /proc/cannot"),
        ("evaluate", ["--data-dir", "/no/such/folder"], "--data-dir /no/such/folder"),
        ("evaluate", ["--model", "nothing_here"], "no trained model nothing_here"),
        ("data", ["--data-dir", "/no/such/folder"], "--data-dir /no/such/folder"),
        ("data", ["--no-such-flag"], "unrecognized arguments"),
        ("predict", ["--models-dir", "/no/such/models"], "no trained models in /no/such/models/"),
        ("predict", ["--model", "nothing_here"], "--model nothing_here: no trained model"),
        ("predict", ["--json", "--show", "--no-such-flag"], "unrecognized arguments"),
        ("serve", ["--port", "0"], "--port"),
        ("serve", ["--port", "70000"], "a port from 1 to 65535, got 70000"),
        ("serve", ["--port", "http"], "--port"),
        ("serve", ["--model", "nothing_here"], "--model nothing_here: no trained model"),
        ("serve", ["--models-dir", "/no/such/models"], "no trained models in /no/such/models/"),
    ]
    return mains, cases


MAINS, CASES = sweep_cases()


@pytest.mark.parametrize("command, args, fragment", CASES,
                         ids=[f"{c}:{' '.join(a) or 'empty'}" for c, a, _ in CASES])
def test_every_flag_rejects_values_that_cannot_work(command, args, fragment, tmp_path, synthetic_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # defaults such as saved_models/ and reports/ land here, not in the repo
    defaults = {"train": ["--data-dir", str(synthetic_dir), "--validation-size", "200", "--epochs", "1"],
                "scratch": ["--data-dir", str(synthetic_dir), "--validation-size", "200", "--epochs", "1"],
                "evaluate": ["--models-dir", str(tmp_path / "models"), "--data-dir", str(synthetic_dir)],
                "data": [],
                "predict": ["--models-dir", str(tmp_path / "models")],
                "serve": ["--models-dir", str(tmp_path / "models")],
                "search": ["--data-dir", str(synthetic_dir), "--validation-size", "200", "--epochs", "1",
                           "--directory", str(tmp_path / "tuner_state")]}[command]
    given = {arg for arg in args if arg.startswith("--")}
    argv = [*args] + [item for flag, value in zip(defaults[::2], defaults[1::2]) if flag not in given
                      for item in (flag, value)]
    if command == "predict":
        argv.append(str(tmp_path / "digit.png"))  # the positional IMAGE
    (tmp_path / "models" / "model_a").mkdir(parents=True)
    try:
        status = run(lambda: MAINS[command](argv))
    except SystemExit as exit_:  # argparse exits on its own
        status = exit_.code
    captured = capsys.readouterr()
    assert status == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert fragment in lines[0]
    written = [path for folder in ("saved_models", "reports") for path in (tmp_path / folder).rglob("*")
               if path.is_file() and not path.name.startswith(".")]  # a held lock file is hidden
    assert written == []


@pytest.fixture(scope="module")
def killed_after_two_epochs(tmp_path_factory):
    """A 3-epoch cnn run SIGKILLed after its second epoch: its models folder, backup included."""
    folder = tmp_path_factory.mktemp("killed")
    rng = np.random.default_rng(2)
    data_dir = write_idx_dataset(folder / "digits", (*synthetic_digits(5000, rng), *synthetic_digits(300, rng)))
    output = folder / "models" / "cnn"
    process = start(train_command(data_dir, output, "--epochs", 3), folder / "keras")
    wait_for(lambda: completed_epochs(output) >= 2, process)
    process.kill()
    process.wait()
    assert completed_epochs(output) == 2 and not output.exists()
    return data_dir, output.parent


def truncate(path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


DAMAGE = {  # what a kill while Keras writes its backup can leave, and what an edit can
    "an empty epoch record": lambda backup: (backup / "training_metadata.json").write_text(""),
    "an epoch record past the run": lambda backup: (backup / "training_metadata.json").write_text('{"epoch": 99}'),
    "newest weights cut short": lambda backup: truncate(backup / "latest.weights.h5"),
    "newest weights written, their record not": lambda backup: os.utime(  # a kill between Keras' two writes
        backup / "latest.weights.h5", ns=(time.time_ns(), (backup / "training_metadata.json").stat().st_mtime_ns + 1)),
    "both weight copies cut short": lambda backup: [truncate(backup / name)
                                                    for name in ("latest.weights.h5", "latest.weights.h5.bkp")],
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_backup_falls_back_to_its_good_copy_or_stops_in_one_line(killed_after_two_epochs, tmp_path,
                                                                            damage, capsys):
    data_dir, models = killed_after_two_epochs
    shutil.copytree(models, tmp_path / "models")
    output, backup = tmp_path / "models" / "cnn", tmp_path / "models" / ".cnn.backup"
    DAMAGE[damage](backup)
    done = in_process(train_command(data_dir, output, "--epochs", 3), capsys)
    assert "Traceback" not in done.stderr
    if damage == "both weight copies cut short":
        assert done.returncode == 2
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"error: {backup}: the interrupted run's backup is damaged (") and "--fresh" in line
        assert not output.exists()
        return
    assert done.returncode == 0, done.stderr
    assert "the backup's newest copy is damaged" in done.stdout and "resuming from epoch 1 of 3" in done.stdout
    metadata = json.loads((output / "metadata.json").read_text())
    assert metadata["epochs_run"] == 3 and metadata["resumed_after_epoch"] == 1
    assert [row["epoch"] for row in read_history(output)] == ["1", "2", "3"]


def test_a_symbolic_link_as_output_is_refused_before_training(tmp_path, synthetic_dir):
    from mnist_lab.config import TrainConfig
    from mnist_lab.errors import UserError
    from mnist_lab.training import train

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for link, fragment in (("link", f"to {tmp_path / 'real'})"), ("dangling", "which does not exist")):
        config = TrainConfig(model="mlp", epochs=1, data_dir=str(synthetic_dir), output=str(tmp_path / link), verbose=0)
        with pytest.raises(UserError, match=f"--output {tmp_path / link}: a symbolic link .*{re.escape(fragment)}"):
            train(config, log=lambda *_: None)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dangling", "link", "real", "synthetic"]
    assert list((tmp_path / "real").iterdir()) == [] and not (tmp_path / "nowhere").exists()


def mount_tmpfs(folder, size):
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_full_disk_is_one_line_in_train_and_evaluate(tmp_path, synthetic_dir, capsys):
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "32k")
    try:
        done = in_process(train_command(synthetic_dir, disk / "cnn", "--epochs", 1, "--validation-size", 200), capsys)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"error: --output {disk / 'cnn'}: 0.0 MB free on its disk, and this run needs about")
        assert list(disk.iterdir()) == []

        models = tmp_path / "models"
        assert in_process(train_command(synthetic_dir, models / "cnn", "--epochs", 1, "--validation-size", 200),
                          capsys).returncode == 0
        done = in_process([sys.executable, str(ROOT / "evaluate.py"), "--models-dir", str(models),
                           "--data-dir", str(synthetic_dir), "--reports-dir", str(disk / "reports")], capsys)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("error: cannot write") and "No space left on device" in line
        written = [path for path in (disk / "reports").rglob("*") if path.is_file()]
        assert not [path for path in written if path.stat().st_size == 0 or ".partial" in path.name], \
            "a report is written whole or not at all"
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_full_disk_is_one_line_for_an_ensemble_and_during_any_export(tmp_path, synthetic_dir, capsys, monkeypatch):
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "64k")
    try:
        monkeypatch.chdir(tmp_path)  # the members' folders, saved_models/members/, are on the roomy disk
        done = in_process(train_command(synthetic_dir, disk / "cnn_ensemble2", "--epochs", 1,
                                        "--validation-size", 200, "--ensemble", 2), capsys)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"error: --output {disk / 'cnn_ensemble2'}: 0.1 MB free on its disk, and this run "
                               "needs about")
        assert not (tmp_path / "saved_models").exists(), "refused before any member trained"

        # The disk fills during the export itself (after the check, as when something else writes there):
        # one line, and nothing half-written is left.
        from mnist_lab.writer import ModelWriter
        from models import REGISTRY

        with pytest.raises(UserError) as refused, ModelWriter(disk / "cnn") as writer:
            writer.write(REGISTRY["cnn"].build(), None)
        assert str(refused.value).startswith(f"cannot write {disk / 'cnn'}: its disk is full (")
        assert [path.name for path in disk.iterdir()] == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)
