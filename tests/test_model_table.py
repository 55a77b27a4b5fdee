"""The README table writer: rows from given records become the expected Markdown, and the table
replaces exactly what lies between the README's markers."""

import pytest

from benchmarks import model_table
from mnist_lab.record import ModelRecord
from mnist_lab.startup import run

CNN = {"model": "cnn", "summary": "the classic CNN", "parameters": 225034, "epochs_run": 5,
       "seconds_per_epoch": 7.4, "training_seconds": 37.2, "source": "reference 003: ~98.9 %",
       "data": {"train_images": 50000, "validation_images": 10000}}
DEEP = {"model": "deep_cnn", "summary": "7 conv layers", "parameters": 326826, "epochs_run": 20,
        "seconds_per_epoch": 32.75, "training_seconds": 654.9, "source": "aim: ≥ 99.70 %",
        "data": {"train_images": 50000, "validation_images": 10000}}
FULL = {**DEEP, "seconds_per_epoch": 39.3, "training_seconds": 786.0,
        "data": {"train_images": 60000, "validation_images": 0}}


def test_rows_from_records_make_the_expected_markdown():
    rows = [model_table.table_row(ModelRecord(**CNN), [0.9905], [0.9911]),
            model_table.table_row(ModelRecord(**DEEP), [0.9967, 0.9970, 0.9973], [0.9970, 0.9972, 0.9974]),
            model_table.table_row(ModelRecord(**{**CNN, "model": "cnn_scratch", "training_seconds": None}), [0.9786], [],
                                  source="reference 001: ~97 %"),
            model_table.table_row(ModelRecord(**{**DEEP, "model": "deep_cnn_ensemble3", "training_seconds": 1964.7,
                                   "ensemble": {"members": [{"seed": 42}, {"seed": 43}, {"seed": 44}]}}),
                                  [0.9975], [0.9977], source="aim: ≥ 99.80 %"),
            model_table.table_row(ModelRecord(**FULL), [0.9973, 0.9971], [0.9974, 0.9972]),
            model_table.table_row(ModelRecord(**{**CNN, "model": "cnn_old", "data": {}}), [0.9901], [])]
    assert model_table.format_model_table(rows) == "\n".join([
        "| model | what it is | parameters | trained on | epochs | time per epoch | training time | test accuracy "
        "| with TTA | seeds | its source reports |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
        "| `deep_cnn_ensemble3` | 7 conv layers | 326,826 | 50,000 | 20 | 33 s | 33 min | 99.75 % | 99.77 % "
        "| 3, averaged | aim: ≥ 99.80 % |",
        "| `deep_cnn` | 7 conv layers | 326,826 | 60,000, no validation | 20 | 39 s | 13 min "
        "| 99.72 ± 0.01 % (99.71-99.73) | 99.73 ± 0.01 % (99.72-99.74) | 2 | aim: ≥ 99.70 % |",
        "| `deep_cnn` | 7 conv layers | 326,826 | 50,000 | 20 | 33 s | 11 min | 99.70 ± 0.03 % (99.67-99.73) "
        "| 99.72 ± 0.02 % (99.70-99.74) | 3 | aim: ≥ 99.70 % |",
        "| `cnn` | the classic CNN | 225,034 | 50,000 | 5 | 7.4 s | 37 s | 99.05 % | 99.11 % | 1 "
        "| reference 003: ~98.9 % |",
        "| `cnn_old` | the classic CNN | 225,034 | ? | 5 | 7.4 s | 37 s | 99.01 % | - | 1 | reference 003: ~98.9 % |",
        "| `cnn_scratch` | the classic CNN | 225,034 | 50,000 | 5 | 7.4 s | ? | 97.86 % | - | 1 "
        "| reference 001: ~97 % |",
    ])


def test_the_table_replaces_only_what_is_between_the_markers():
    text = f"# title\n\nbefore\n{model_table.START_MARKER}\nold table\n{model_table.END_MARKER}\nafter\n"
    replaced = model_table.replace_section(text, "| new |")
    assert replaced == f"# title\n\nbefore\n{model_table.START_MARKER}\n| new |\n{model_table.END_MARKER}\nafter\n"
    assert model_table.replace_section(replaced, "| new |") == replaced
    with pytest.raises(ValueError):
        model_table.replace_section("# no markers\n", "| new |")


def test_the_project_readme_has_the_markers():
    from tests.conftest import ROOT
    model_table.replace_section((ROOT / "README.md").read_text(), "")


def test_regenerating_into_a_readme_without_markers_fails_before_training(tmp_path, capsys):
    from benchmarks import accuracy
    readme = tmp_path / "README.md"
    readme.write_text("# no table here\n")
    assert run(lambda: accuracy.main(["--readme", str(readme), "--reports-dir", str(tmp_path / "reports")])) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "markers" in error[0]
    assert readme.read_text() == "# no table here\n"


def test_the_benchmark_trains_the_seeds_and_the_ensemble_on_the_split_and_as_final_fits():
    from benchmarks import accuracy
    plan, quick = accuracy.Plan(), accuracy.Plan(quick=True)
    for runs in (plan.seeds(), plan.ensembles()):
        assert [(config.output_dir().name, config.validation_size, count) for config, count in runs] == \
            [("deep_cnn", 10_000, 5), ("deep_cnn_full", 0, 5)]
    for runs in (quick.seeds(), quick.ensembles()):
        assert [(config.output_dir().name, config.validation_size, count) for config, count in runs] == \
            [("deep_cnn_subset1000", 10_000, 2), ("deep_cnn_subset1000_full", 0, 2)]


def test_the_table_has_a_row_for_each_folder_the_plan_trains_and_no_other():
    from benchmarks import accuracy
    registry = ["advanced_mlp", "cnn", "cnn_dropout", "fast_cnn", "lenet5", "mlp", "resnet", "robust_cnn", "simple_cnn"]
    assert accuracy.Plan().row_models() == registry + [
        "simple_cnn_scratch", "mlp_tuned", "deep_cnn_ensemble5", "deep_cnn_ensemble5_full"]
    assert accuracy.Plan(quick=True).row_models() == [f"{name}_subset1000" for name in registry] + [
        "simple_cnn_scratch_subset1000", "mlp_tuned_subset1000", "deep_cnn_ensemble2_subset1000",
        "deep_cnn_ensemble2_subset1000_full"]


@pytest.mark.parametrize("folder, name", [
    ("deep_cnn", "deep_cnn"), ("deep_cnn_full", "deep_cnn"), ("cnn_subset1000", "cnn"),
    ("deep_cnn_ensemble2_subset1000_full", "deep_cnn_ensemble2"), ("mlp_tuned_subset1000", "mlp_tuned"),
    ("simple_cnn_scratch_subset1000", "simple_cnn_scratch"),
])
def test_a_row_finds_its_words_under_a_quick_or_final_fit_folder_name(folder, name):
    from mnist_lab.config import folder_parts
    assert folder_parts(folder)[0] == name


@pytest.mark.parametrize("folder, hint", [
    ("cnn", "`python train.py --model cnn`"), ("deep_cnn_full", "`python train.py --model deep_cnn --validation-size 0`"),
    ("deep_cnn_ensemble5_full", "`python train.py --model deep_cnn --ensemble 5 --validation-size 0`"),
    ("lenet5_subset2000", "`python train.py --model lenet5 --subset 2000`"),
    ("mlp_tuned", "`python tuning/search_mlp.py`"), ("simple_cnn_scratch_subset1000", "`python -m scratch.train --subset 1000`"),
    ("cnn_long", "`python train.py --help` lists the models it trains"),
])
def test_a_missing_model_is_told_the_command_that_trains_it(folder, hint):
    from mnist_lab.config import train_hint
    assert hint in train_hint(folder)
