"""Seeds and ensembles on tiny members, and test-time augmentation: the ensemble's SavedModel takes
`image` and returns the mean of its members' probabilities; members are reused, never retrained
for nothing; TTA with identity transforms is the plain prediction."""

import dataclasses
import json

import numpy as np
import pytest

import train as train_cli
from mnist_lab import ensemble, training
from mnist_lab.config import TrainConfig
from mnist_lab.errors import UserError
from mnist_lab.evaluation import TTA_SHIFTS, EvalConfig, evaluate, shift, tta_probabilities
from mnist_lab.reader import SavedModelClassifier
from mnist_lab.training import train


def quiet(*_):
    pass


@pytest.fixture
def tiny(tmp_path, synthetic_dir, monkeypatch):
    """simple_cnn for one epoch on the synthetic digits, with saved_models/ and reports/ in tmp_path."""
    monkeypatch.chdir(tmp_path)
    return TrainConfig(model="simple_cnn", epochs=1, data_dir=str(synthetic_dir), validation_size=200, verbose=0)


@pytest.mark.slow
def test_an_ensemble_serves_image_and_averages_its_members_probabilities(tiny, tmp_path, synthetic_arrays,
                                                                          monkeypatch):
    loads = []
    for module in (ensemble, training):  # every place a command could load MNIST from
        monkeypatch.setattr(module, "load_mnist", lambda *args, real=module.load_mnist, **kwargs:
                            loads.append(args) or real(*args, **kwargs))
    record = ensemble.run_ensemble(tiny, 3, log=quiet)
    assert len(loads) == 1, "MNIST is loaded once per command, not once per member"
    folder = tmp_path / "saved_models" / "simple_cnn_ensemble3"
    assert record.model == "simple_cnn_ensemble3"
    assert [member["seed"] for member in record.ensemble["members"]] == [42, 43, 44]

    images = synthetic_arrays[2][:50, ..., None].astype(np.float32) / 255
    combined = SavedModelClassifier(folder)  # through the SavedModel API, as evaluate.py and serve.py load it
    members = [SavedModelClassifier(tmp_path / "saved_models" / "members" / "simple_cnn" / f"seed-{seed}")
               for seed in (42, 43, 44)]
    member_probabilities = [member.predict(images) for member in members]
    assert not np.allclose(member_probabilities[0], member_probabilities[1])  # different seeds, different models
    np.testing.assert_allclose(combined.predict(images), np.mean(member_probabilities, axis=0), atol=1e-6)
    assert record.parameters == 3 * 54_170
    from mnist_lab.reader import load_classifier

    for runtime in ("onnx", "litert"):  # an ensemble is one model in every format too
        np.testing.assert_allclose(load_classifier(folder, runtime).predict(images), combined.predict(images),
                                   atol=1e-5)

    rows, failures = evaluate(EvalConfig(models_dir="saved_models", data_dir=tiny.data_dir, reports_dir="eval"),
                              log=quiet)
    assert failures == [] and [row["model"] for row in rows] == ["simple_cnn_ensemble3"]  # members are not listed


@pytest.mark.slow
def test_seeds_reuse_members_and_report_their_spread(tiny, tmp_path, capsys):
    ensemble.run_ensemble(tiny, 2, log=quiet)
    stamp = (tmp_path / "saved_models" / "members" / "simple_cnn" / "seed-42" / "metadata.json").stat().st_mtime_ns
    argv = ["--model", "simple_cnn", "--epochs", "1", "--data-dir", tiny.data_dir, "--validation-size", "200",
            "--seeds", "3"]
    assert train_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("trained before") == 2 and "seed 44: training simple_cnn" in out
    assert (tmp_path / "saved_models" / "members" / "simple_cnn" / "seed-42" / "metadata.json").stat().st_mtime_ns == stamp

    summary = json.loads((tmp_path / "reports" / "seeds" / "simple_cnn.json").read_text())
    figures = [member["test_accuracy"] for member in summary["members"]]
    spread = ensemble.spread(figures)
    assert spread["mean"] == pytest.approx(np.mean(figures)) and spread["std"] == pytest.approx(np.std(figures, ddof=1))
    assert (spread["min"], spread["max"]) == (min(figures), max(figures))

    assert train_cli.main(argv) == 0  # all reused now
    assert capsys.readouterr().out.count("trained before") == 3


@pytest.mark.slow
def test_final_fits_train_on_every_image_beside_the_models_of_the_split(tiny, tmp_path, capsys):
    """--validation-size 0: all 1200 training images, no validation figure, folders of their own."""
    ensemble.run_ensemble(tiny, 2, log=quiet)
    split_member = tmp_path / "saved_models" / "members" / "simple_cnn" / "seed-42" / "metadata.json"
    stamp = split_member.stat().st_mtime_ns
    argv = ["--model", "simple_cnn", "--epochs", "1", "--data-dir", tiny.data_dir, "--validation-size", "0"]
    assert train_cli.main([*argv, "--ensemble", "2"]) == 0
    out = capsys.readouterr().out
    assert "1200 training, no validation (a final fit)" in out and "trained before" not in out
    record = json.loads((tmp_path / "saved_models" / "simple_cnn_ensemble2_full" / "metadata.json").read_text())
    assert record["data"]["train_images"] == 1200 and record["data"]["validation_images"] == 0
    assert "validation_accuracy" not in record and 0 < record["test_accuracy"] <= 1
    members = record["ensemble"]["members"]
    assert [member["folder"] for member in members] == [f"saved_models/members/simple_cnn_full/seed-{seed}"
                                                        for seed in (42, 43)]
    assert split_member.stat().st_mtime_ns == stamp, "the split's member is left as it was"

    assert train_cli.main([*argv, "--seeds", "2"]) == 0  # reused, and reported without a validation column figure
    out = capsys.readouterr().out
    assert out.count("trained before") == 2 and "| 42 | - |" in out


@pytest.mark.slow
def test_a_changed_recipe_is_not_mistaken_for_a_trained_member(tiny, capsys):
    ensemble.run_seeds(tiny, 2, log=print)
    capsys.readouterr()
    ensemble.run_seeds(TrainConfig(**{**tiny.__dict__, "learning_rate": 0.002}), 2, log=print)
    assert "trained before" not in capsys.readouterr().out


def test_spread_of_given_figures():
    assert ensemble.spread([0.9960, 0.9970, 0.9980]) == pytest.approx(
        {"mean": 0.9970, "std": 0.0010, "min": 0.9960, "max": 0.9980})


def test_tta_with_identity_transforms_is_the_plain_prediction(synthetic_arrays):
    images = synthetic_arrays[0][:20, ..., None].astype(np.float32) / 255

    def predict(batch):  # depends on where the ink is, as a classifier does
        return batch[:, :14].sum(axis=(1, 2, 3), keepdims=False)[:, None] * np.array([[1.0, -1.0]])

    np.testing.assert_array_equal(tta_probabilities(predict, images, shifts=((0, 0), (0, 0))), predict(images))
    expected = np.mean([predict(shift(images, rows, columns)) for rows, columns in TTA_SHIFTS], axis=0)
    np.testing.assert_allclose(tta_probabilities(predict, images), expected)
    assert not np.allclose(expected, predict(images))  # the default shifts do change what is seen


def test_shift_moves_pixels_and_fills_the_border_with_background():
    image = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    np.testing.assert_array_equal(shift(image, 1, 0)[0, ..., 0], [[0, 0, 0], [1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(shift(image, 0, -1)[0, ..., 0], [[2, 3, 0], [5, 6, 0], [8, 9, 0]])
    np.testing.assert_array_equal(shift(image, 0, 0), image)


@pytest.mark.slow
def test_evaluate_reports_tta_beside_the_plain_figure(tiny, synthetic_arrays):
    train(TrainConfig(**{**tiny.__dict__, "epochs": 2}), log=quiet)
    plain, _ = evaluate(EvalConfig(data_dir=tiny.data_dir, reports_dir="eval"), log=quiet)
    assert "tta_accuracy" not in plain[0]
    rows, _ = evaluate(EvalConfig(data_dir=tiny.data_dir, reports_dir="eval", tta=True), log=quiet)
    assert rows[0]["test_accuracy"] == plain[0]["test_accuracy"]  # the plain figure is never mixed with TTA
    classifier = SavedModelClassifier("saved_models/simple_cnn")
    images = synthetic_arrays[2][..., None].astype(np.float32) / 255
    augmented = tta_probabilities(classifier.predict, images)
    assert rows[0]["tta_accuracy"] == pytest.approx(np.mean(augmented.argmax(axis=1) == synthetic_arrays[3]))
    with open("eval/summary.md") as summary:
        assert "| model | test accuracy | with TTA | macro F1 |" in summary.read()


@pytest.mark.slow
def test_an_ensemble_checks_every_member_before_training_any(tiny, tmp_path):
    """Seed 44 holds a model trained longer: a rerun with another batch size is refused before it replaces
    seeds 42 and 43, not after."""
    ensemble.run_seeds(tiny, 2, log=quiet)
    ensemble.run_seeds(dataclasses.replace(tiny, seed=44, epochs=2), 1, log=quiet)
    members = tmp_path / "saved_models" / "members" / "simple_cnn"
    stamps = [(members / f"seed-{seed}" / "metadata.json").stat().st_mtime_ns for seed in (42, 43)]
    with pytest.raises(UserError, match=r"seed-44 holds simple_cnn trained on \d+ images for 2 epochs"):
        ensemble.run_ensemble(dataclasses.replace(tiny, batch_size=64), 3, log=quiet)
    assert [(members / f"seed-{seed}" / "metadata.json").stat().st_mtime_ns for seed in (42, 43)] == stamps
    assert not (tmp_path / "saved_models" / "simple_cnn_ensemble3").exists()
