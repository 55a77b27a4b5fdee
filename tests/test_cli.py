"""The command lines as a user runs them: --help, bad flags and files get one line and a non-zero exit."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_in_process


def run(script, *args, cwd=ROOT, env_home=None):
    env = dict(os.environ)
    if env_home is not None:
        env["KERAS_HOME"] = str(env_home)
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env=env)


def assert_one_line_error(done, *fragments):
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("script, expected", [
    ("train.py", ["--model", "(default: cnn)", "--data-dir", "--subset", "--tensorboard", "recipes"]),
    ("evaluate.py", ["--models-dir", "(default: saved_models)", "--reports-dir", "--data-dir"]),
])
def test_help_states_the_flags_and_defaults(script, expected):
    done = run(script, "--help")
    assert done.returncode == 0 and done.stderr == ""
    for fragment in expected:
        assert fragment in done.stdout


# Commands that can answer without TensorFlow must not load it: --help and flag errors are instant.
@pytest.mark.parametrize("command", [
    ["train.py", "--help"], ["train.py", "--epochs", "0"], ["evaluate.py", "--help"], ["predict.py", "--help"],
    ["serve.py", "--port", "0"], ["tuning/search_mlp.py", "--help"], ["tuning/search_mlp.py", "--tuner", "grid"],
    ["-m", "scratch.train", "--help"], ["-m", "mnist_lab.data", "--help"],
], ids=" ".join)
def test_help_and_flag_errors_answer_without_loading_tensorflow(command):
    script = [str(ROOT / command[0])] if command[0].endswith(".py") else command[:2]
    args = command[1:] if command[0].endswith(".py") else command[2:]
    done = subprocess.run([sys.executable, "-X", "importtime", *script, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == (0 if "--help" in args else 2)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "argparse" in imported, "the import log was read"
    assert not imported & {"tensorflow", "keras", "keras_tuner", "sklearn"}


def test_a_missing_package_is_one_line_naming_it_and_how_to_install_it(tmp_path):
    """As when the virtual environment is not activated: here `python -S`, without site-packages."""
    (tmp_path / "digit.png").write_bytes(b"")
    done = subprocess.run([sys.executable, "-S", str(ROOT / "predict.py"), str(tmp_path / "digit.png")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert_one_line_error(done, "is not installed for", "activate the project's virtual environment",
                          "python -m pip install -e .")


# The full sweep of bad values runs in-process in test_reliability.py; these fail after
# TensorFlow has loaded and go through a real interpreter, so its start-up output is part of what
# they check.
@pytest.mark.slow
@pytest.mark.parametrize("args, fragments", [
    (["--data-dir", "/no/such/folder"], ["--data-dir /no/such/folder: no such folder"]),
    (["--output", "/proc/version"], ["--output /proc/version", "a file"]),
])
def test_train_rejects_bad_flags_in_one_line(args, fragments, tmp_path, synthetic_dir):
    if "--data-dir" not in args:
        args = [*args, "--data-dir", synthetic_dir]
    if "--output" not in args:
        args = [*args, "--output", tmp_path / "out"]
    done = run("train.py", *args, env_home=tmp_path / "keras")
    assert_one_line_error(done, *fragments)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_train_names_a_broken_data_file(tmp_path, synthetic_dir, capsys):
    damaged = synthetic_dir / "train-labels-idx1-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:40])
    done = run_in_process("train.py", "--data-dir", synthetic_dir, "--output", tmp_path / "out", capsys=capsys)
    assert_one_line_error(done, "train-labels-idx1-ubyte.gz", "broken gzip")


@pytest.mark.slow
def test_train_then_evaluate_from_the_command_line(tmp_path, synthetic_dir):
    models = tmp_path / "models"
    done = run("train.py", "--model", "lenet5", "--epochs", "1", "--data-dir", synthetic_dir,
               "--validation-size", "200", "--output", models / "lenet5", env_home=tmp_path / "keras")
    assert done.returncode == 0, done.stderr
    assert re.search(r"^\d+/\d+ - .* - val_accuracy: ", done.stdout, re.MULTILINE), "one line per epoch"
    assert "data: IDX files in" in done.stdout
    assert "lenet5: test accuracy" in done.stdout.strip().splitlines()[-1]

    done = run("evaluate.py", "--models-dir", models, "--data-dir", synthetic_dir,
               "--reports-dir", tmp_path / "reports", env_home=tmp_path / "keras")
    assert done.returncode == 0, done.stderr
    assert "| lenet5 |" in done.stdout and "macro avg" in done.stdout, "each model's report is printed, and kept"
    assert re.search(r"^lenet5: test accuracy \d+\.\d\d %, \d+ mistakes; report in ", done.stdout, re.MULTILINE)
    assert (tmp_path / "reports" / "lenet5" / "confusion_matrix.png").is_file()


@pytest.mark.slow
def test_evaluate_with_nothing_trained_says_what_to_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    done = run_in_process("evaluate.py", "--models-dir", tmp_path / "empty", capsys=capsys)
    assert_one_line_error(done, "no trained models", "python train.py --model cnn")


@pytest.mark.slow
def test_evaluate_names_a_missing_model(tmp_path, capsys):
    (tmp_path / "models" / "mlp").mkdir(parents=True)
    done = run_in_process("evaluate.py", "--models-dir", tmp_path / "models", "--model", "lenet5", capsys=capsys)
    assert_one_line_error(done, "no trained model lenet5", "found: mlp", "python train.py --model lenet5")


@pytest.mark.slow
def test_evaluate_rejects_an_unwritable_reports_folder_in_one_line(tmp_path, capsys):
    (tmp_path / "models" / "cnn").mkdir(parents=True)
    done = run_in_process("evaluate.py", "--reports-dir", "/proc/reports", "--models-dir", tmp_path / "models",
                          capsys=capsys)
    assert_one_line_error(done, "--reports-dir /proc/reports", "cannot write")


@pytest.mark.slow
def test_evaluate_reports_each_broken_model_in_one_line(tmp_path, synthetic_dir, capsys):
    (tmp_path / "models" / "junk").mkdir(parents=True)
    (tmp_path / "models" / "empty_pb").mkdir()
    (tmp_path / "models" / "empty_pb" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "models" / "experiments" / "cnn-30epochs").mkdir(parents=True)  # a folder of models: not one
    (tmp_path / "models" / "experiments" / "cnn-30epochs" / "saved_model.pb").write_bytes(b"")
    done = run_in_process("evaluate.py", "--models-dir", tmp_path / "models", "--data-dir", synthetic_dir,
                          "--reports-dir", tmp_path / "reports", capsys=capsys)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("error: empty_pb: cannot load the SavedModel")
    assert lines[1].startswith("error: junk: ") and "not a SavedModel" in lines[1]


@pytest.mark.slow
@pytest.mark.parametrize("args, fragment", [
    (["--data-dir", "NONE"], "no such folder"),
])
def test_the_data_command_rejects_bad_flags_in_one_line(tmp_path, args, fragment):
    args = [str(tmp_path / "none") if arg == "NONE" else arg for arg in args]
    done = subprocess.run([sys.executable, "-m", "mnist_lab.data", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert_one_line_error(done, fragment)
