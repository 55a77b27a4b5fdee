"""The speed benchmark: its FLOP count on a model small enough to count by hand, and its quick mode."""

import json

import keras
import pytest

from benchmarks import speed
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
