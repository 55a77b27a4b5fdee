"""The benchmarks: the speed benchmark's FLOP count on a model small enough to count by hand and its
quick mode; the photos benchmark's scoring of the unsure flag and its report; the recipe screen's
copy of the pipeline's augmentation, and one run of it."""

import json

import keras
import numpy as np
import pytest

from benchmarks import screen, speed
from mnist_lab.data.geometry import random_warp, warp
from mnist_lab.errors import UserError
from mnist_lab.machine import SPEED_FLAGS


def test_flop_count_of_a_tiny_model_equals_the_hand_count():
    inputs = keras.Input((6, 5, 2))
    x = keras.layers.Conv2D(3, (3, 2))(inputs)  # 4x4 outputs x 3 filters, each 3*2*2 multiply-adds
    x = keras.layers.MaxPooling2D(2)(x)  # no multiply-adds counted
    x = keras.layers.Flatten()(x)  # 2*2*3 = 12 features
    outputs = keras.layers.Dense(7)(x)  # 12*7 multiply-adds
    model = keras.Model(inputs, outputs)
    forward = 2 * (4 * 4 * 3 * (3 * 2 * 2) + 12 * 7)
    assert speed.forward_flops(model) == forward == 1320
    assert speed.training_flops(model) == 3 * forward


def test_the_step_clock_counts_the_steps_after_the_first_call_under_steps_per_execution():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse", steps_per_execution=4)
    clock = speed.StepClock()
    model.fit(np.zeros((12, 3)), np.zeros((12, 2)), batch_size=1, epochs=1, verbose=0, callbacks=[clock])
    assert (clock.first, clock.last, clock.steps) == (3, 11, 8)  # calls end after steps 4, 8 and 12
    assert clock.seconds > 0


@pytest.mark.slow
def test_quick_mode_writes_every_field(real_mnist, tmp_path, capsys):
    from tests.conftest import write_idx_dataset

    data_dir = write_idx_dataset(tmp_path / "mnist", real_mnist)
    assert speed.main(["--quick", "--output", str(tmp_path), "--data-dir", str(data_dir)]) == 0
    result = json.loads((tmp_path / "benchmark.json").read_text())
    assert result["quick"] is True and result["machine"]["cores"] >= 1 and result["matmul_gflops_per_second"] > 0
    assert {"python", "tensorflow", "keras", "numpy"} <= set(result["versions"])
    fast = result["fast_cnn_time_to_accuracy"]
    assert len(fast["runs"]) == 1 and fast["runs"][0]["seconds"] > 0 and 0 <= fast["mean_test_accuracy"] <= 1
    assert fast["min_seconds"] <= fast["median_seconds"] <= fast["max_seconds"]
    assert [row["model"] for row in result["models"]] == ["fast_cnn", "mlp"]
    for row in result["models"]:
        assert row["train_images_per_second"] > 0 and row["training_flops_per_image"] > 0
        assert row["gflops_per_second"] == pytest.approx(
            row["train_images_per_second"] * row["training_flops_per_image"] / 1e9, rel=0.01)
        assert 0 < row["fraction_of_matmul"] and row["inference_images_per_second_batch_1000"] > 0
        assert 0 < row["single_image_ms_median"] <= row["single_image_ms_p99"]
    markdown = (tmp_path / "benchmark.md").read_text()
    assert "| fast_cnn |" in markdown and "| mlp |" in markdown and "GFLOP/s" in markdown


@pytest.mark.slow
def test_vs_pytorch_without_pytorch_says_how_to_install_it_and_measures_the_rest(real_mnist, tmp_path, monkeypatch):
    from tests.conftest import write_idx_dataset

    real_find_spec = speed.importlib.util.find_spec
    monkeypatch.setattr(speed.importlib.util, "find_spec",
                        lambda name, *args: None if name == "torch" else real_find_spec(name, *args))
    data_dir = write_idx_dataset(tmp_path / "mnist", real_mnist)
    lines = []
    result = speed.run(quick=True, models=["fast_cnn"], data_dir=str(data_dir), log=lines.append, compare=True)
    assert any("pip install -r requirements-bench.txt" in line for line in lines)
    assert [row["model"] for row in result["models"]] == ["fast_cnn"]
    assert "vs_pytorch" not in result["models"][0] and "torch" not in result["versions"]
    assert "PyTorch" not in speed.to_markdown(result)
    assert set(result["cpu_flags"]) <= set(SPEED_FLAGS)


def test_the_unsure_flag_is_scored_by_precision_and_recall():
    from benchmarks import photos

    flagged = np.array([True, True, False, False, True, False])
    wrong = np.array([True, False, True, False, False, False])
    assert photos.flag_figures(flagged, wrong) == {"flagged": 0.5, "precision": 1 / 3, "recall": 0.5, "errors": 2}
    probabilities = np.array([[0.5, 0.4, 0.1], [0.9, 0.05, 0.05], [0.3, 0.3, 0.4]])
    np.testing.assert_allclose(photos.margins(probabilities), [0.1, 0.85, 0.1])
    rows = photos.sweep(np.array([0.5, 0.9, 0.4]), np.array([True, False, True]), (0.45, 0.6, 0.95))
    assert [(row["threshold"], row["flagged"], row["precision"], row["recall"]) for row in rows] == \
        [(0.45, 1 / 3, 1.0, 0.5), (0.6, 2 / 3, 1.0, 1.0), (0.95, 1.0, 2 / 3, 1.0)]
    assert rows[1]["f1"] == 1.0


@pytest.mark.slow
def test_photos_benchmark_writes_its_tables(real_mnist_dir, tmp_path, capsys):
    from benchmarks import photos
    from mnist_lab.writer import export_savedmodel
    from models import REGISTRY

    export_savedmodel(REGISTRY["simple_cnn"].build(), tmp_path / "models" / "simple_cnn")
    assert photos.main(["--per-lighting", "12", "--seed", "1", "--models-dir", str(tmp_path / "models"),
                        "--data-dir", str(real_mnist_dir), "--reports-dir", str(tmp_path / "reports")]) == 0
    result = json.loads((tmp_path / "reports" / "photos.json").read_text())
    assert result["per_lighting"] == 12 and result["seed"] == 1
    row, = result["models"]
    assert row["model"] == "simple_cnn" and {"plain", "shadow", "gradient", "mnist_validation", "photos"} <= set(row)
    assert 0 <= row["unsure"]["flagged"] <= 1 and len(row["sweep"]["top_probability"]) == len(photos.TOP_THRESHOLDS)
    markdown = (tmp_path / "reports" / "photos.md").read_text()
    assert "| `simple_cnn` |" in markdown and "| margin |" in markdown
    assert "| `simple_cnn` |" in capsys.readouterr().out
    with pytest.raises(photos.UserError, match="no trained model nothing"):
        photos.main(["--model", "nothing", "--models-dir", str(tmp_path / "models")])


def test_the_profile_sorts_ops_into_kinds_by_their_names():
    from benchmarks.profile_training import kind_of

    prefix = "StatefulPartitionedCall/gradient_tape/deep_cnn_1/conv2d_1/convolution/"
    assert kind_of(prefix + "Conv2DBackpropFilter:_MklNativeConv2DBackpropFilter") == "convolution, filter gradient"
    assert kind_of(prefix + "Conv2DBackpropInput:Conv2DBackpropInput") == "convolution, input gradient"
    assert kind_of("StatefulPartitionedCall/deep_cnn_1/conv2d_1/convolution:_MklNativeConv2D") == "convolution, forward"
    assert kind_of("StatefulPartitionedCall/gradient_tape/cnn_1/max_pooling2d_1/MaxPool2d/MaxPoolGrad:MaxPoolGrad") \
        == "pooling (forward and gradient)"
    assert kind_of("StatefulPartitionedCall/deep_cnn_1/batch_normalization_1/batchnorm/mul_1/Mul:Mul") \
        == "BatchNorm (forward and gradient)"
    assert kind_of("StatefulPartitionedCall/adam/Sqrt_9:Sqrt") == "optimizer update"
    assert kind_of("StatefulPartitionedCall/cnn_1/flatten_1/Reshape:Reshape") == "other ops"


def test_the_screens_elastic_field_and_test_time_views_move_where_each_pixel_is_read_from():
    from mnist_lab.evaluation import TTA_SHIFTS, shift

    images = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")
    still, one = np.zeros(2, "float32"), np.ones(2, "float32")
    down_a_row = np.zeros((2, 28, 28, 2), "float32")
    down_a_row[..., 0] = 1  # every pixel read from one row lower: the image moves up a row
    np.testing.assert_allclose(warp(images, still, still, still, one, down_a_row), shift(images, -1, 0),
                               atol=1e-6)
    tta_shifts = [(0, rows, columns, 1) for rows, columns in TTA_SHIFTS if (rows, columns) != (0, 0)]
    assert screen.VIEW_SETS["shift1"] == tta_shifts  # evaluate.py --tta's views
    for _, rows, columns, _ in screen.VIEW_SETS["shift2"]:
        np.testing.assert_allclose(screen.view(images, 0, rows, columns, 1), shift(images, rows, columns), atol=1e-6)
    plain, elastic = (random_warp(10, 0.1, 0.1, seed=1, elastic=amount) for amount in (0.0, 1.0))
    assert np.abs(np.asarray(elastic(images, training=True)) - np.asarray(plain(images, training=True))).max() > 0.1
    np.testing.assert_array_equal(elastic(images, training=False), images)


def test_the_screen_scores_each_change_and_their_average():
    y_val = np.array([0, 1, 2, 3])
    a = np.eye(10)[[0, 1, 2, 0]]  # wrong on the last image
    a[3, [0, 3]] = 0.6, 0.4
    b = np.eye(10)[[0, 1, 0, 3]]  # wrong on the third
    b[2, [0, 2]] = 0.6, 0.4
    rows = [{"change": "base", "seed": 43, "val_probabilities": screen.encode(b)},
            {"change": "base", "seed": 42, "val_probabilities": screen.encode(a)},
            {"change": "wide", "seed": 42, "val_probabilities": screen.encode(np.eye(10)[[0, 1, 2, 3]])}]
    np.testing.assert_allclose(screen.decode(rows[1]["val_probabilities"]), a, atol=1e-3)
    assert screen.score(rows, y_val) == [
        # each one's mistake outvoted; each missed digit is missed by one run of two: half
        "base: 2 runs, 75.00 % on average, 100.00 % averaged into one; 0 digits missed by every run, 2 by half or more",
        "wide: 1 run, 100.00 % on average, 100.00 % averaged into one; 0 digits missed by every run, 0 by half or more",
        "all of them: 3 runs, 83.33 % on average, 100.00 % averaged into one; 0 digits missed by every run, "
        "0 by half or more",
    ]
    assert screen.score(rows, y_val, group_size=1)[1:3] == ["  seeds 42-42: 75.00 % averaged into one",
                                                            "  seeds 43-43: 75.00 % averaged into one"]
    assert screen.score(rows + rows[:1], y_val) != screen.score(rows, y_val)  # score() counts what it is given...
    assert screen.unique_runs(rows + rows[:1]) == rows  # ...read_rows() keeps each run once
    with pytest.raises(UserError, match="other than the 3 validation images"):
        screen.score(rows, y_val[:3])


def test_a_bagged_screen_run_trains_on_its_own_80_percent():
    assert screen.training_rows(50_000, 1.0, seed=42).tolist() == list(range(50_000))
    bags = [screen.training_rows(50_000, screen.CHANGES["bag"]["bag"], seed) for seed in (42, 42, 43)]
    assert all(len(bag) == len(set(bag.tolist())) == 40_000 for bag in bags)
    assert (bags[0] == bags[1]).all() and not (bags[0] == bags[2]).all()


def test_the_screens_wider_net_has_its_pinned_parameter_count():
    from models.deep_cnn import build_deep_cnn

    assert [build_deep_cnn(width=screen.CHANGES[change]["width"]).count_params() for change in ("width15", "width2")] \
        == [732_922, 1_300_810]


@pytest.mark.slow
@pytest.mark.parametrize("change, params", [("bag", 326_826), ("elastic", 326_826)])
def test_a_screen_run_appends_its_row(real_mnist, tmp_path, capsys, change, params):
    train_npz = tmp_path / "train.npz"
    np.savez(train_npz, x=real_mnist[0][:10_160], y=real_mnist[1][:10_160])  # 160 to train on: 2 batches, 1 bagged
    results = tmp_path / "screen.jsonl"
    argv = ["--change", change, "--seed", "3", "--epochs", "1", "--train-npz", str(train_npz),
            "--results", str(results)]
    assert screen.main(argv) == 0
    row = json.loads(results.read_text())
    assert row["change"] == change and row["epochs"] == 1 and row["params"] == params
    assert 0 <= row["val_accuracy"] <= 1 and row["backend"] == "tensorflow"
    out = capsys.readouterr().out
    assert f"{change} seed 3: validation accuracy" in out
    assert ("1/1 " if change == "bag" else "2/2 ") in out  # 128 of 160 images bagged: one batch, else two
    assert screen.main(["--score", "--train-npz", str(train_npz), "--results", str(results)]) == 0
    # one line, one run: its own accuracy twice (kept as float16, so near-ties after one batch may differ)
    line, = (line for line in capsys.readouterr().out.splitlines() if line.startswith(change))
    single, averaged = (float(word) for word in line.split() if word.replace(".", "").isdigit() and "." in word)
    assert line.startswith(f"{change}: 1 run, ") and single == averaged and abs(single - 100 * row["val_accuracy"]) < 1


@pytest.mark.slow
def test_a_model_trained_on_the_split_joins_the_screen_as_a_run(real_mnist, tmp_path, capsys):
    from mnist_lab.config import TrainConfig
    from mnist_lab.data import load_mnist
    from mnist_lab.reader import SavedModelClassifier
    from mnist_lab.training import train
    from tests.conftest import write_idx_dataset

    x_train, y_train = real_mnist[0][:10_128], real_mnist[1][:10_128]  # one batch to train on, 10000 held out
    data_dir = write_idx_dataset(tmp_path / "data", (x_train, y_train, real_mnist[2][:100], real_mnist[3][:100]))
    folder = tmp_path / "simple_cnn"
    train(TrainConfig(model="simple_cnn", epochs=1, data_dir=str(data_dir), output=str(folder)),
          load_mnist(str(data_dir), log=lambda *_: None), log=lambda *_: None)
    train_npz, results = tmp_path / "train.npz", tmp_path / "screen.jsonl"
    np.savez(train_npz, x=x_train, y=y_train)
    argv = ["--add-model", str(folder), "--train-npz", str(train_npz), "--results", str(results)]
    assert screen.main(argv) == 0
    row = json.loads(results.read_text())
    assert (row["change"], row["seed"], row["folder"]) == ("simple_cnn", 42, str(folder))
    x_val = x_train[-10_000:, ..., None].astype("float32") / 255
    np.testing.assert_allclose(screen.decode(row["val_probabilities"]), SavedModelClassifier(folder).predict(x_val),
                               atol=1e-3)
    assert f"simple_cnn seed 42: validation accuracy {100 * row['val_accuracy']:.2f} % from {folder}" in \
        capsys.readouterr().out
    # With test-time views: "shift1" averages what evaluate.py --tta does.
    from mnist_lab.evaluation import tta_probabilities
    assert screen.main(argv + ["--views", "shift1"]) == 0
    with_views = json.loads(results.read_text().splitlines()[-1])
    assert with_views["views"] == "shift1"
    np.testing.assert_allclose(screen.decode(with_views["val_probabilities"]),
                               tta_probabilities(SavedModelClassifier(folder).predict, x_val), atol=1e-3)
    # Other images than it was trained beside: its validation figure would mean nothing, so it is refused.
    np.savez(train_npz, x=x_train[:10_100], y=y_train[:10_100])
    with pytest.raises(UserError, match="trained on 128 images with 10000 held out; only a model trained on all "
                                        "but the last 10000 of these 10100"):
        screen.main(argv)
    assert len(results.read_text().splitlines()) == 2


@pytest.mark.parametrize("script, args, line", [
    ("screen.py", ["--change", "base", "--seed", "-1"], "error: argument --seed: expected a whole number from 0 to "
                                                         "4294967295, got -1"),
    ("screen.py", ["--change", "base", "--seed", "99999999999"], "got 99999999999"),
    ("screen.py", ["--score", "--results", "{results}"], "error: --results {results}: a run's change, seed is not "
                                                         "what this script writes"),
    ("screen.py", ["--add-model", "{model}"], "error: --add-model {model}: no trained model there (no metadata.json "
                                              "that this project wrote and that reads whole)"),
    ("profile_training.py", ["--model", "cnn", "--logdir", "/proc/x"], "error: --logdir /proc/x/cnn: cannot write "
                                                                        "there (No such file or directory)"),
], ids=["seed -1", "seed too large", "malformed rows", "a record with flags null", "logdir in /proc"])
def test_the_benchmarks_refuse_bad_input_in_one_line(script, args, line, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    results, model = tmp_path / "screen.jsonl", tmp_path / "cnn"
    results.write_text('{"change": ["base"], "seed": "x", "val_probabilities": "AAAA"}\n')
    model.mkdir()
    (model / "metadata.json").write_text(json.dumps({"model": "cnn", "flags": None}))
    fill = {"results": results, "model": model}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *(arg.format(**fill) for arg in args)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    (said,) = done.stderr.strip().splitlines()
    assert line.format(**fill) in said
