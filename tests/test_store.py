"""The model record and the model store: metadata.json read back whatever its age, one answer to
"was this trained as this config would train it?", locks that leave nothing behind, and readers
that work on a read-only models folder without touching it."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest

from mnist_lab.config import TrainConfig
from mnist_lab.errors import UserError
from mnist_lab.writer import FolderLock, ModelWriter, is_locked
from mnist_lab.record import ModelRecord
from models import REGISTRY
from tests.conftest import ROOT

# A cnn's metadata.json as the project wrote it before the record had a definition of its own
# (commit ff8a12e): no `arguments`, a recipe without the fields added later.
OLD_CNN = {
    "model": "cnn", "summary": "the classic CNN", "source": "reference 003: ~98.9 %",
    "recipe": {"epochs": 5, "batch_size": 64, "learning_rate": 0.001, "optimizer": "adam",
               "schedule": "constant", "augment": False},
    "flags": {"model": "cnn", "seed": 42, "subset": None, "validation_size": 10000, "data_dir": None},
    "parameters": 225034, "epochs_run": 5, "resumed_after_epoch": None, "training_seconds": 37.2,
    "seconds_per_epoch": 7.44, "validation_accuracy": 0.9891, "test_accuracy": 0.9905, "test_loss": 0.03,
    "data": {"source": "cache", "fingerprint_sha256": "abc", "test_images": 10000},
    "a_field_from_the_future": 1,
}


class Data:
    fingerprint = "abc"


def write(folder, values):
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps(values))
    return folder


def test_an_older_record_loads_and_matches_what_would_train_it_today(tmp_path):
    record = ModelRecord.load(write(tmp_path / "cnn", OLD_CNN))
    assert record.model == "cnn" and record.test_accuracy == 0.9905 and record.arguments == {}
    assert record.seed == 42 and record.fingerprint == "abc"
    config, spec = TrainConfig(model="cnn"), REGISTRY["cnn"]
    assert record.matches(config, spec, Data())


@pytest.mark.parametrize("change", ["seed", "subset", "recipe", "data", "arguments", "model", "untested"])
def test_a_record_does_not_match_another_training(tmp_path, change):
    record = ModelRecord.load(write(tmp_path / "cnn", OLD_CNN))
    config, spec, data = TrainConfig(model="cnn"), REGISTRY["cnn"], Data()
    if change == "seed":
        config = replace(config, seed=43)
    elif change == "subset":
        config = replace(config, subset=1000)
    elif change == "recipe":
        config = replace(config, learning_rate=0.002)
    elif change == "data":
        data = type("Other", (), {"fingerprint": "def"})()
    elif change == "arguments":
        spec = replace(spec, arguments={"hidden_units": [64]})
    elif change == "model":
        config = replace(config, model="cnn_dropout")
    else:
        record.test_accuracy = None
    assert not record.matches(config, spec, data)


@pytest.mark.parametrize("content", ["", "{", "[]", '{"summary": "no model name"}'])
def test_an_unreadable_record_is_none(tmp_path, content):
    (tmp_path / "metadata.json").write_text(content)
    assert ModelRecord.load(tmp_path) is None
    assert ModelRecord.load(tmp_path / "missing") is None


@pytest.mark.parametrize("change", [
    {"test_accuracy": "abc"}, {"test_accuracy": [0.99]}, {"test_accuracy": 1.5}, {"test_accuracy": True},
    {"test_accuracy": float("nan")}, {"test_accuracy": float("inf")}, {"data": "x"}, {"data": None},
    {"flags": []}, {"flags": None}, {"parameters": "many"}, {"training_seconds": "slow"}, {"epochs_run": -1},
])
def test_a_record_whose_field_is_not_what_it_holds_is_unusable_not_a_crash(tmp_path, change):
    from mnist_lab.predictor import choose_model

    folder = write(tmp_path / "cnn", {**OLD_CNN, **change})
    (folder / "saved_model.pb").write_bytes(b"")
    assert ModelRecord.load(folder) is None
    with pytest.raises(UserError, match="no model in .* was tested on the full 10000-image test set"):
        choose_model(tmp_path)


def test_a_record_nested_200000_deep_is_unusable_not_a_crash(tmp_path):
    (tmp_path / "metadata.json").write_text("[" * 200_000 + "]" * 200_000)
    assert ModelRecord.load(tmp_path) is None


def test_a_record_round_trips_and_leaves_out_what_it_lacks(tmp_path):
    record = ModelRecord.load(write(tmp_path / "cnn", OLD_CNN))
    record.save(tmp_path / "cnn")
    saved = json.loads((tmp_path / "cnn" / "metadata.json").read_text())
    assert "resumed_after_epoch" not in saved and "ensemble" not in saved and "a_field_from_the_future" not in saved
    assert ModelRecord.load(tmp_path / "cnn") == record
    assert [path.name for path in (tmp_path / "cnn").iterdir()] == ["metadata.json"], "no partial file left"


def test_the_lock_refuses_a_second_writer_and_leaves_no_file(tmp_path):
    output = tmp_path / "models" / "cnn"
    with FolderLock(output):
        assert is_locked(output)
        assert f"pid {os.getpid()}" in (tmp_path / "models" / ".cnn.lock").read_text()
        with pytest.raises(UserError, match=f"is being written by another run \\(pid {os.getpid()}"):
            with FolderLock(output):
                pass
    assert not is_locked(output)
    assert list((tmp_path / "models").iterdir()) == []
    with FolderLock(output):  # and it can be taken again
        pass


def mount_read_only(source, target):
    target.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)


def snapshot(folder):
    return sorted((str(path.relative_to(folder)), path.stat().st_mtime_ns) for path in folder.rglob("*"))


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root (CI runs as root)")
def test_readers_work_on_a_read_only_models_folder_holding_a_dead_writers_leftovers(tmp_path, synthetic_dir):
    """As root, file modes do not stop a write: only a read-only mount proves that nothing is written."""
    from mnist_lab.training import train

    models = tmp_path / "models"
    train(TrainConfig(model="mlp", epochs=1, data_dir=str(synthetic_dir), validation_size=200,
                      output=str(models / "mlp"), verbose=0), log=lambda *_: None)
    (models / ".cnn.tmp-999999").mkdir()  # a killed writer's staging folder
    (models / ".cnn.lock").write_text("pid 999999")  # and its lock file, released by the kernel
    before = snapshot(models)
    image = tmp_path / "digit.png"
    image.write_bytes((ROOT / "docs" / "serve.png").read_bytes())
    read_only = tmp_path / "read_only"
    mount_read_only(models, read_only)
    try:
        commands = [["evaluate.py", "--models-dir", read_only, "--data-dir", synthetic_dir,
                     "--reports-dir", tmp_path / "reports"],
                    ["predict.py", image, "--models-dir", read_only, "--model", "mlp"]]
        for command in commands:
            done = subprocess.run([sys.executable, str(ROOT / command[0]), *map(str, command[1:])], cwd=tmp_path,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr
            assert "mlp" in done.stdout
        from fastapi.testclient import TestClient

        from mnist_lab.predictor import choose_model
        from mnist_lab.serving import create_app

        with TestClient(create_app(choose_model(read_only, "mlp")[0], read_only)) as client:  # serve.py's app
            assert [model["name"] for model in client.get("/models").json()["models"]] == ["mlp"]
            assert client.post("/predict", content=image.read_bytes()).status_code == 200
        assert snapshot(read_only) == before
    finally:
        subprocess.run(["umount", str(read_only)], check=True)
    assert snapshot(models) == before


def test_a_tuned_mlp_exported_before_records_had_arguments_is_still_recognised(tmp_path):
    from mnist_lab.record import as_json
    from mnist_lab.tuning.space import tuned_spec

    values = {"hidden_layers": 2, "units_1": 1024, "units_2": 512, "activation": "relu", "dropout": 0.0,
              "batch_norm": True, "learning_rate": 0.00076, "optimizer": "rmsprop", "augment": True}
    spec = tuned_spec(values, 30)
    old = {**OLD_CNN, "model": "mlp_tuned", "flags": {**OLD_CNN["flags"], "model": "mlp_tuned"},
           "recipe": spec.recipe.to_dict(), "hyperparameters": values,
           "build_mlp_arguments": {key: value for key, value in as_json(spec.arguments).items() if key != "name"}}
    record = ModelRecord.load(write(tmp_path / "mlp_tuned", old))
    assert record.matches(TrainConfig(model="mlp", name="mlp_tuned"), spec, Data())
    assert not record.matches(TrainConfig(model="mlp", name="mlp_tuned"), tuned_spec({**values, "units_2": 256}, 30), Data())


def test_a_smoke_run_gets_folders_of_its_own():
    from mnist_lab.config import MODELS_DIR
    from mnist_lab.tuning import SearchConfig

    assert TrainConfig(model="lenet5").output_dir() == MODELS_DIR / "lenet5"
    assert TrainConfig(model="lenet5", subset=500).output_dir() == MODELS_DIR / "lenet5_subset500"
    assert str(TrainConfig(model="lenet5", subset=500, output="x/y").output_dir()) == "x/y"
    search = SearchConfig(subset=2000)
    assert (search.project_name, search.output_dir()) == ("mlp_subset2000", MODELS_DIR / "mlp_tuned_subset2000")
    assert SearchConfig().project_name == "mlp" and SearchConfig(subset=2000, project_name="p").project_name == "p"


def model_folder(folder, **changes):
    write(folder, {**OLD_CNN, **changes})
    (folder / "saved_model.pb").write_bytes(b"")
    return folder


def test_a_run_never_replaces_a_model_trained_on_more_images_or_epochs_unless_told(tmp_path):
    folder = model_folder(tmp_path / "cnn", data={**OLD_CNN["data"], "train_images": 50000})
    for images, epochs in ((500, 5), (50000, 1)):
        with pytest.raises(UserError, match=r"holds cnn trained on 50000 images for 5 epochs, test accuracy 99.05 %; "
                                            rf"this run would replace it with {images} images and {epochs} epoch"):
            ModelWriter(folder).check_replaceable(images, epochs)
        ModelWriter(folder).check_replaceable(images, epochs, replace=True)
    ModelWriter(folder).check_replaceable(50000, 5)
    ModelWriter(folder).check_replaceable(60000, 30)
    ModelWriter(tmp_path / "nothing_there").check_replaceable(1, 1)


def test_predict_and_serve_choose_only_among_models_tested_on_the_full_test_set(tmp_path):
    from mnist_lab.predictor import choose_model

    model_folder(tmp_path / "cnn")
    model_folder(tmp_path / "cnn_subset500", test_accuracy=1.0, data={**OLD_CNN["data"], "test_images": 100})
    assert choose_model(tmp_path)[:1] == (tmp_path / "cnn",)
    assert choose_model(tmp_path)[1].startswith("the conv net with the best test accuracy, 99.05 %; ")
    assert choose_model(tmp_path, "cnn_subset500") == (tmp_path / "cnn_subset500", "chosen with --model")
    (tmp_path / "cnn" / "metadata.json").unlink()
    with pytest.raises(UserError, match="no model in .* was tested on the full 10000-image test set "
                                        r"\(found cnn, cnn_subset500\)"):
        choose_model(tmp_path)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, synthetic_dir_module):
    """An mlp and a simple_cnn trained for 1 epoch on the synthetic digits, each a whole model folder."""
    from mnist_lab.training import train

    models = tmp_path_factory.mktemp("two_models")
    for name in ("mlp", "simple_cnn"):
        train(TrainConfig(model=name, epochs=1, data_dir=str(synthetic_dir_module), validation_size=200,
                          output=str(models / name), verbose=0), log=lambda *_: None)
    return models


@pytest.fixture(scope="module")
def synthetic_dir_module(tmp_path_factory):
    import numpy as np

    from tests.conftest import synthetic_digits, write_idx_dataset

    rng = np.random.default_rng(0)
    return write_idx_dataset(tmp_path_factory.mktemp("digits"), (*synthetic_digits(1400, rng),
                                                                   *synthetic_digits(300, rng)))


SWAPPER = """
import shutil, sys, time
from pathlib import Path
from mnist_lab.writer import replace_folder
sources, final, seconds = [Path(sys.argv[1]), Path(sys.argv[2])], Path(sys.argv[3]), float(sys.argv[4])
print("swapping", flush=True)
end, swaps = time.monotonic() + seconds, 0
while time.monotonic() < end:
    staging = final.parent / f".{final.name}.tmp-1"
    shutil.copytree(sources[swaps % 2], staging)
    replace_folder(staging, final)
    swaps += 1
    time.sleep(0.5)  # a swap every half second: far more often than any training run writes
print(swaps)
"""


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["savedmodel", "onnx"])
def test_a_model_read_while_the_writer_swaps_folders_is_always_one_whole_model(two_models, tmp_path, runtime):
    """The writer's own swap, in another process, replaces an mlp by a simple_cnn and back twice a second;
    every load here must succeed, and answer as the model its record names."""
    import numpy as np

    from mnist_lab.reader import load_classifier

    probe = np.random.default_rng(0).random((8, 28, 28, 1)).astype(np.float32)
    expected = {name: load_classifier(two_models / name, runtime).predict(probe) for name in ("mlp", "simple_cnn")}
    final = tmp_path / "models" / "cnn"
    final.parent.mkdir()
    shutil.copytree(two_models / "mlp", final)
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(two_models / "mlp"), str(two_models / "simple_cnn"),
                                str(final), "20"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert swapper.stdout.readline() == "swapping\n"
    loads = []
    while swapper.poll() is None:
        classifier = load_classifier(final, runtime)  # raises if it read a half-swapped folder
        loads.append(classifier.record.model)
        np.testing.assert_allclose(classifier.predict(probe), expected[classifier.record.model], atol=1e-6)
    swaps = int(swapper.stdout.read())
    assert swapper.returncode == 0 and swaps > 20 and len(loads) > 20, (swaps, len(loads))
    assert set(loads) == {"mlp", "simple_cnn"}


def test_a_model_set_aside_by_an_interrupted_export_is_named_with_the_command_that_puts_it_back(two_models, tmp_path,
                                                                                               capsys):
    import shlex

    from tests.conftest import run_in_process

    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(two_models / "mlp", models / ".cnn.old-999999")  # a writer killed between its two renames
    for script, args in [("evaluate.py", ["--reports-dir", tmp_path / "reports"]), ("predict.py", [ROOT / "docs" / "serve.png"])]:
        done = run_in_process(script, "--models-dir", models, *args, capsys=capsys)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert f"cnn was set aside by an interrupted export and not put back: `mv {models}/.cnn.old-999999 " \
               f"{models}/cnn` puts it back" in line
    shutil.copytree(two_models / "simple_cnn", models / "simple_cnn")  # with another model there: a warning
    record = json.loads((models / "simple_cnn" / "metadata.json").read_text())
    record["data"]["test_images"] = 10000  # as if tested on the full test set, which makes it a default
    (models / "simple_cnn" / "metadata.json").write_text(json.dumps(record))
    done = run_in_process("predict.py", "--models-dir", models, ROOT / "docs" / "serve.png", capsys=capsys)
    assert done.returncode == 0 and done.stderr.startswith("warning: cnn was set aside")
    command = line[line.index("`mv ") + 1:line.index("` puts")]
    subprocess.run(shlex.split(command), check=True)  # as the user would
    assert (models / "cnn" / "saved_model.pb").is_file() and not (models / ".cnn.old-999999").exists()
