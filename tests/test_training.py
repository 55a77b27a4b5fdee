"""End to end on small data: train, export, load the SavedModel as evaluate.py does, evaluate, replace."""

import csv
import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from mnist_lab import reader
from mnist_lab.config import TrainConfig
from mnist_lab.data.splits import to_model_input
from mnist_lab.errors import UserError
from mnist_lab.evaluation import EvalConfig, evaluate
from mnist_lab.reader import SavedModelClassifier
from mnist_lab.record import ModelRecord
from mnist_lab.training import train
from mnist_lab.writer import ModelWriter
from tests.conftest import synthetic_digits, write_idx_dataset


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """A cnn trained for 2 epochs on the synthetic digits (the same as synthetic_dir's), once for this file."""
    folder = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(0)
    arrays = (*synthetic_digits(1200, rng), *synthetic_digits(300, rng))
    config = TrainConfig(model="cnn", epochs=2, data_dir=str(write_idx_dataset(folder / "synthetic", arrays, compress=True)),
                         validation_size=200, output=str(folder / "models" / "cnn"), verbose=0)
    return config.output_dir(), train(config, log=quiet)


@pytest.fixture
def trained(trained_once, tmp_path):
    """trained_once's model folder, copied to tmp_path/models/cnn for a test to change."""
    source, record = trained_once
    shutil.copytree(source, tmp_path / "models" / "cnn")
    return tmp_path / "models" / "cnn", record


def test_training_exports_a_complete_model_folder(trained):
    folder, record = trained
    for name in ("saved_model.pb", "variables", "model.keras", "model.onnx", "model.tflite", "metadata.json",
                 "history.csv", "curves.png"):
        assert (folder / name).exists(), name
    hidden = [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]
    assert hidden == [], "no staging folder, backup or lock file left behind"

    assert ModelRecord.load(folder) == record, "the record reads back as it was written"
    saved = json.loads((folder / "metadata.json").read_text())
    assert saved["model"] == "cnn" and saved["epochs_run"] == 2 and saved["parameters"] == 225_034
    assert saved["recipe"]["epochs"] == 2 and saved["recipe"]["batch_size"] == 64
    assert saved["data"]["verified_mnist"] is False
    assert (saved["data"]["train_images"], saved["data"]["validation_images"], saved["data"]["test_images"]) == (1000, 200, 300)
    assert {"tensorflow", "keras", "numpy"} <= set(saved["versions"])
    assert saved["test_accuracy"] > 0.9, "the synthetic digits are easy: a working pipeline learns them"

    with open(folder / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"} <= set(rows[0])


def test_the_onnx_and_litert_files_load_on_their_own_runtimes_and_agree_with_the_savedmodel(trained,
                                                                                            synthetic_arrays):
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    folder, record = trained
    assert set(record.formats) == {"onnx", "litert"}
    assert all(values["max_difference"] <= 1e-5 for values in record.formats.values()), record.formats
    images = to_model_input(synthetic_arrays[2][:50])
    expected = SavedModelClassifier(folder).predict(images)
    # Each runtime as a user's own code would call it: no project code.
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": images})[0], expected, atol=1e-5)
    interpreter = Interpreter(model_path=str(folder / "model.tflite"))
    (given,), (answer,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(given["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], images)
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(answer["index"]), expected, atol=1e-5)


def test_a_format_file_that_is_not_the_one_exported_is_refused_in_one_line(trained, synthetic_dir, tmp_path):
    from mnist_lab.errors import ModelError
    from mnist_lab.reader import load_classifier

    folder, _ = trained
    other = tmp_path / "other"
    train(TrainConfig(model="mlp", epochs=1, data_dir=str(synthetic_dir), validation_size=200,
                      output=str(other), verbose=0), log=quiet)
    (folder / "model.onnx").write_bytes((other / "model.onnx").read_bytes())  # a retrained model's, left behind
    (folder / "model.tflite").write_bytes((folder / "model.tflite").read_bytes()[:1000])  # cut short
    for runtime in ("onnx", "litert"):
        with pytest.raises(ModelError, match=r"^cnn: model\.\w+ is not the file exported with this model .*"
                                             r"python -m mnist_lab.export"):
            load_classifier(folder, runtime)


def test_a_model_trained_before_the_formats_gets_them_in_one_command_and_evaluate_measures_them(
        trained, synthetic_dir, tmp_path, capsys):
    from mnist_lab.export import main as export_main
    from mnist_lab.startup import run

    folder, _ = trained
    (folder / "model.onnx").unlink()
    (folder / "model.tflite").unlink()
    values = json.loads((folder / "metadata.json").read_text())
    del values["formats"]
    (folder / "metadata.json").write_text(json.dumps(values))  # as a model trained before this change
    assert run(lambda: export_main(["--models-dir", str(folder.parent)])) == 0
    assert f"{folder}: model.onnx (largest difference " in capsys.readouterr().out
    assert ModelRecord.load(folder).formats["onnx"]["sha256"] and (folder / "model.tflite").is_file()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["cnn"], "swapped in whole, nothing left beside"

    config = EvalConfig(models_dir=str(folder.parent), data_dir=str(synthetic_dir), reports_dir=str(tmp_path / "r"),
                        formats=True)
    (row,), failures = evaluate(config, log=quiet)
    assert failures == [] and row["onnx_accuracy"] == row["litert_accuracy"] == row["test_accuracy"]
    assert row["onnx_difference"] <= 1e-5 and row["litert_difference"] <= 1e-5


@pytest.mark.slow
def test_the_savedmodel_serves_image_and_agrees_with_the_keras_model(trained, synthetic_arrays):
    folder, _ = trained
    signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    assert list(inputs) == ["image"]
    assert inputs["image"].shape.as_list() == [None, 28, 28, 1] and inputs["image"].dtype == tf.float32
    assert list(signature.structured_outputs) == ["probabilities"]

    images = to_model_input(synthetic_arrays[2][:50])
    served = SavedModelClassifier(folder).predict(images)
    keras_model = keras.saving.load_model(folder / "model.keras")
    np.testing.assert_allclose(served, keras_model.predict(images, verbose=0), atol=1e-5)


@pytest.mark.slow
def test_a_model_trained_with_augmentation_serves_without_it(tmp_path, synthetic_dir, synthetic_arrays):
    """Augmentation and dropout act only in training: the served graph answers the same twice."""
    config = TrainConfig(model="cnn_dropout", epochs=1, augment=True, data_dir=str(synthetic_dir),
                         validation_size=200, output=str(tmp_path / "aug"), verbose=0)
    record = train(config, log=quiet)
    assert record.recipe["augment"] is True
    images = to_model_input(synthetic_arrays[2][:100])
    classifier = SavedModelClassifier(tmp_path / "aug")
    first = classifier.predict(images)
    np.testing.assert_array_equal(first, classifier.predict(images))
    keras_model = keras.saving.load_model(tmp_path / "aug" / "model.keras")
    np.testing.assert_allclose(first, keras_model(images, training=False), atol=1e-5)


@pytest.mark.slow
def test_evaluate_writes_reports_and_the_table(trained, synthetic_dir, tmp_path):
    folder, record = trained
    config = EvalConfig(models_dir=str(folder.parent), data_dir=str(synthetic_dir), reports_dir=str(tmp_path / "reports"))
    lines = []
    rows, failures = evaluate(config, log=lines.append)
    assert failures == []
    (row,) = rows
    assert row["model"] == "cnn" and row["parameters"] == 225_034
    assert row["test_accuracy"] == pytest.approx(record.test_accuracy, abs=1e-6)
    reports = tmp_path / "reports"
    for name in ("classification_report.txt", "confusion_matrix.png", "predictions.png", "mistakes.png"):
        assert (reports / "cnn" / name).stat().st_size > 0, name
    assert "macro avg" in (reports / "cnn" / "classification_report.txt").read_text()
    assert "| cnn |" in (reports / "summary.md").read_text()
    assert lines[0].startswith("data: IDX files in ")
    assert lines[1] == "evaluating 1 model on 300 test images" and lines[2] == "cnn: loading its SavedModel and predicting"
    assert lines[3].startswith(f"cnn: test accuracy {100 * row['test_accuracy']:.2f} %, ")
    assert len(lines) == 5 and "| cnn |" in lines[4], "a line per model, then the table"


@pytest.mark.slow
def test_a_damaged_model_is_named_and_the_others_still_evaluated(trained, synthetic_dir, tmp_path):
    folder, _ = trained
    broken = folder.parent / "broken_model"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"")
    (folder.parent / "notes").mkdir()
    config = EvalConfig(models_dir=str(folder.parent), data_dir=str(synthetic_dir), reports_dir=str(tmp_path / "r"))
    rows, failures = evaluate(config, log=quiet)
    assert [row["model"] for row in rows] == ["cnn"]
    assert len(failures) == 2
    assert failures[0].startswith("broken_model: cannot load the SavedModel")
    assert failures[1].startswith("notes:") and "not a SavedModel" in failures[1]


def test_a_model_with_the_wrong_input_is_refused(tmp_path):
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    model.export(str(tmp_path / "rgb"), format="tf_saved_model", verbose=False)
    with pytest.raises(UserError, match="rgb: its input does not fit MNIST"):
        SavedModelClassifier(tmp_path / "rgb")


@pytest.mark.slow
def test_retraining_replaces_the_model_whole(trained, synthetic_dir):
    folder, first = trained
    config = TrainConfig(model="cnn", epochs=1, data_dir=str(synthetic_dir), validation_size=200,
                         output=str(folder), replace=True, verbose=0)  # shorter than the model there: asked for
    train(config, log=quiet)
    assert json.loads((folder / "metadata.json").read_text())["epochs_run"] == 1 != first.epochs_run
    assert sorted(p.name for p in folder.parent.iterdir()) == ["cnn"]


@pytest.mark.slow
def test_a_swap_cut_short_is_left_alone_by_readers_and_undone_by_the_next_writer(trained, synthetic_dir, tmp_path):
    """A kill between "set the old model aside" and "move the new one in" leaves the old one hidden."""
    folder, first = trained
    aside = folder.parent / ".cnn.old-1"  # pid 1 is alive: only the lock file's state says the run is over
    folder.rename(aside)
    (folder.parent / ".cnn.tmp-1").mkdir()  # a dead run's half-written staging folder
    (folder.parent / "mlp").mkdir()  # something else to evaluate, so the reader has work
    leftovers = sorted(p.name for p in folder.parent.iterdir())
    assert reader.model_folders(folder.parent) == []
    config = EvalConfig(models_dir=str(folder.parent), data_dir=str(synthetic_dir), reports_dir=str(tmp_path / "r"))
    rows, failures = evaluate(config, log=quiet)
    assert rows == [] and len(failures) == 2 and "mlp" in failures[1]
    assert failures[0] == (f"cnn was set aside by an interrupted export and not put back: `mv {aside} {folder}` puts "
                           f"it back (as any train.py run writing to {folder.parent} does)")  # named, not left silent
    assert sorted(p.name for p in folder.parent.iterdir()) == leftovers, "a reader changes nothing"

    with ModelWriter(folder, log=quiet):  # what every writer does first, holding its own lock
        pass
    assert sorted(p.name for p in folder.parent.iterdir()) == ["cnn", "mlp"]
    assert json.loads((folder / "metadata.json").read_text())["created"] == first.created


def test_a_smoke_run_never_replaces_a_fuller_model(tmp_path, synthetic_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real = train(TrainConfig(model="mlp", epochs=2, data_dir=str(synthetic_dir), validation_size=200, verbose=0),
                 log=quiet)
    shorter = TrainConfig(model="mlp", epochs=1, data_dir=str(synthetic_dir), validation_size=200, verbose=0)
    with pytest.raises(UserError, match="saved_models/mlp holds mlp trained on 1000 images for 2 epochs.*--replace"):
        train(shorter, log=quiet)
    lines = []
    smoke = train(TrainConfig(model="mlp", epochs=1, subset=500, data_dir=str(synthetic_dir), validation_size=200,
                              verbose=0), log=lines.append)
    # Run from outside the project: the models go under this folder, and the run says where, in full.
    assert f"mlp: no --output, so the model goes under this folder, to {tmp_path / 'saved_models' / 'mlp_subset500'}, " \
           "not under the project" in "\n".join(lines)
    assert ModelRecord.load("saved_models/mlp") == real, "the real model is untouched"
    assert ModelRecord.load("saved_models/mlp_subset500") == smoke
    assert train(TrainConfig(**{**shorter.__dict__, "replace": True}), log=quiet).epochs_run == 1


def test_output_that_is_not_a_model_folder_is_never_overwritten(tmp_path, synthetic_dir):
    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    config = TrainConfig(model="mlp", epochs=1, data_dir=str(synthetic_dir), output=str(precious), verbose=0)
    with pytest.raises(UserError, match="not a saved model"):
        train(config, log=quiet)
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_bad_data_fails_before_anything_is_written(tmp_path, synthetic_dir):
    (synthetic_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    config = TrainConfig(model="mlp", epochs=1, data_dir=str(synthetic_dir), output=str(tmp_path / "out" / "mlp"), verbose=0)
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz"):
        train(config, log=quiet)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_the_cnn_learns_real_mnist(real_mnist, tmp_path):
    """On 10000 real digits and two epochs the classic CNN already passes 95 % on held-out images
    (a broken pipeline, say labels shuffled apart from images, stays near 10 %)."""
    from tests.conftest import write_idx_dataset

    data_dir = write_idx_dataset(tmp_path / "mnist", real_mnist)
    config = TrainConfig(model="cnn", epochs=2, subset=10000, data_dir=str(data_dir),
                         output=str(tmp_path / "cnn"), verbose=0)
    record = train(config, log=quiet)
    assert record.data["verified_mnist"] is True
    assert record.validation_accuracy > 0.95 and record.test_accuracy > 0.95


@pytest.mark.slow
def test_the_one_cycle_bfloat16_recipe_trains_saves_and_reloads(tmp_path, synthetic_dir, synthetic_arrays,
                                                                 monkeypatch):
    """fast_cnn: custom schedule in model.keras, bfloat16 compute, float32 probabilities served."""
    from mnist_lab import training

    monkeypatch.setattr(training, "native_bfloat16", lambda: True)  # bfloat16 even where it is emulated
    config = TrainConfig(model="fast_cnn", data_dir=str(synthetic_dir), validation_size=200,
                         output=str(tmp_path / "fast"), verbose=0)
    record = train(config, log=quiet)
    assert record.recipe["schedule"] == "one_cycle" and record.recipe["mixed_bfloat16"] is True
    assert keras.mixed_precision.global_policy().name == "float32", "the global policy is restored"
    reloaded = keras.saving.load_model(tmp_path / "fast" / "model.keras")
    assert reloaded.layers[1].compute_dtype == "bfloat16"
    images = to_model_input(synthetic_arrays[2][:32])
    served = SavedModelClassifier(tmp_path / "fast").predict(images)
    assert served.dtype == np.float32
    eager = np.asarray(reloaded(images, training=False))
    np.testing.assert_allclose(served, eager, atol=0.03)  # bfloat16 keeps about 3 significant digits
    np.testing.assert_array_equal(served.argmax(axis=1), eager.argmax(axis=1))


def test_bfloat16_is_asked_for_by_the_recipe_and_used_only_where_the_cpu_computes_it(monkeypatch):
    from mnist_lab import machine, training
    from models import REGISTRY

    recipe = REGISTRY["fast_cnn"].recipe
    for native, dtype in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(training, "native_bfloat16", lambda native=native: native)
        model = training.build_model(REGISTRY["fast_cnn"], recipe)
        assert model.layers[1].compute_dtype == dtype and model.output.dtype == "float32"
    monkeypatch.setattr(machine, "cpuinfo", lambda field: "fpu avx2 fma avx512_bf16" if field == "flags" else None)
    machine.native_bfloat16.cache_clear()
    try:
        assert machine.native_bfloat16()
    finally:
        machine.native_bfloat16.cache_clear()


def test_on_a_gpu_bfloat16_follows_its_compute_capability_not_the_cpu(monkeypatch):
    from mnist_lab import training

    gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
    monkeypatch.setattr(training.tf.config, "list_physical_devices", lambda kind=None: [gpu] if kind == "GPU" else [])
    monkeypatch.setattr(training, "native_bfloat16", lambda: False)  # an AVX2-only host CPU
    for capability, native in (((9, 0), True), ((8, 0), True), ((7, 5), False)):
        monkeypatch.setattr(training.tf.config.experimental, "get_device_details",
                            lambda device, capability=capability: {"compute_capability": capability})
        assert training.bfloat16_is_native() is native


def test_one_cycle_rises_then_falls_to_zero():
    from mnist_lab.optimizers import OneCycle

    schedule = OneCycle(0.01, total_steps=100)
    rates = [float(schedule(step)) for step in (0, 15, 30, 65, 100)]
    assert rates[0] == pytest.approx(0.01 / 25) and rates[2] == pytest.approx(0.01)
    assert rates[0] < rates[1] < rates[2] > rates[3] > rates[4] == 0.0
    assert OneCycle.from_config(schedule.get_config()).get_config() == schedule.get_config()


def test_the_exponential_schedule_falls_by_0_95_an_epoch():
    from mnist_lab.optimizers import make_optimizer
    from models import Recipe

    optimizer = make_optimizer(Recipe(epochs=30, batch_size=8, schedule="exponential"), steps_per_epoch=10)
    rates = []
    for step in (0, 9, 10, 25):
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3 * 0.95, 1e-3 * 0.95 ** 2])


def test_a_finite_but_exploding_loss_is_a_diverged_run_and_keeps_the_good_model(tmp_path, synthetic_dir):
    """--learning-rate 1e6 leaves some models' loss finite (1e5 to 1e20) at chance accuracy."""
    config = TrainConfig(model="mlp", epochs=1, data_dir=str(synthetic_dir), validation_size=200,
                         output=str(tmp_path / "mlp"), verbose=0)
    good = train(config, log=quiet)
    with pytest.raises(UserError, match=r"^training diverged: the loss became \S+ as epoch 1's mean; nothing was "
                                        r"exported; try a --learning-rate below 1e\+06"):
        train(TrainConfig(**{**config.__dict__, "learning_rate": 1e6, "replace": True}), log=quiet)
    assert ModelRecord.load(tmp_path / "mlp") == good


@pytest.mark.parametrize("bad_step, where", [(6, "batches 5-8"), (10, "batches 9-10")])
def test_a_nan_loss_names_the_call_it_appeared_in_under_steps_per_execution(bad_step, where):
    from mnist_lab.training import Diverged, StopOnDivergence

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse", steps_per_execution=4)  # calls of steps 1-4, 5-8, then 9-10
    x = np.zeros((10, 3), np.float32)
    x[bad_step - 1] = np.inf
    with pytest.raises(Diverged, match=f"^the loss became nan in epoch 1, {where}$"):
        model.fit(x, np.zeros((10, 2)), batch_size=1, epochs=1, verbose=0, shuffle=False,
                  callbacks=[StopOnDivergence()])


def test_a_foreign_savedmodel_without_variables_is_evaluated_beside_the_others(tmp_path, synthetic_dir):
    """A plain tf.Module taking (None, 28, 28, 1) and giving 10 probabilities: no Keras, no variables, no record."""
    class Foreign(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.float32)])
        def serve(self, image):
            return {"probabilities": tf.nn.softmax(tf.reduce_mean(image, axis=[1, 2]) * tf.ones([1, 10]))}

    foreign = Foreign()
    tf.saved_model.save(foreign, str(tmp_path / "models" / "foreign"), signatures={"serving_default": foreign.serve})
    config = EvalConfig(models_dir=str(tmp_path / "models"), data_dir=str(synthetic_dir),
                        reports_dir=str(tmp_path / "reports"))
    rows, failures = evaluate(config, log=quiet)
    assert failures == [] and [(row["model"], row["parameters"]) for row in rows] == [("foreign", None)]
    assert "| foreign | " in (tmp_path / "reports" / "summary.md").read_text()


def test_a_ctrl_c_is_noted_and_raised_where_training_can_stop_cleanly():
    import os
    import signal

    from mnist_lab.training import CtrlC

    # Python's own handler, as in a terminal, even when the tests run as a background job (SIGINT ignored).
    outside = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = signal.getsignal(signal.SIGINT)
        with CtrlC() as ctrl_c:
            ctrl_c.check()
            os.kill(os.getpid(), signal.SIGINT)  # delivered now, wherever the main thread is: only noted
            assert ctrl_c.pressed
            with pytest.raises(KeyboardInterrupt):
                ctrl_c.on_train_batch_end(0)
            assert signal.getsignal(signal.SIGINT) is before, "a second Ctrl-C stops at once"
        assert signal.getsignal(signal.SIGINT) is before
    finally:
        signal.signal(signal.SIGINT, outside)
