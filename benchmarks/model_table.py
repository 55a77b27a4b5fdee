"""The README's model table: one row per model from its metadata and its measured test accuracy.

`format_model_table(rows)` is pure (the tests give it rows); `benchmarks/accuracy.py` measures the
rows and `replace_section` puts the table into README.md between its two markers.
"""

import statistics

START_MARKER = "<!-- model-table: start (written by benchmarks/accuracy.py) -->"
END_MARKER = "<!-- model-table: end -->"


def table_row(record, test_accuracy, tta_accuracy, source=None, summary=None, name=None):
    """A row from a model's record (the first seed's, for several) and its measured figures.

    `test_accuracy` and `tta_accuracy` are lists, one figure per seed; `source`, `summary` and `name`
    (the folder's: deep_cnn_full for a final fit of deep_cnn), when given, replace the record's.
    """
    return {"model": name or record.model, "summary": summary if summary is not None else record.summary,
            "parameters": record.parameters, "epochs": record.epochs_run,
            "trained_on": trained_on(record),
            "seconds_per_epoch": record.seconds_per_epoch, "training_seconds": record.training_seconds,
            "test_accuracy": list(test_accuracy), "tta_accuracy": list(tta_accuracy),
            "ensemble_of": len((record.ensemble or {}).get("members", [])),
            "source": source if source is not None else record.source}


def percent(figures):
    """One figure as '99.05 %'; several as 'mean ± sample std % (min-max)'."""
    if len(figures) == 1:
        return f"{100 * figures[0]:.2f} %"
    return (f"{100 * statistics.fmean(figures):.2f} ± {100 * statistics.stdev(figures):.2f} % "
            f"({100 * min(figures):.2f}-{100 * max(figures):.2f})")


def duration(seconds):
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 600:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def seeds(row):
    """How many seeds stand behind the figure: one per run, or all of an ensemble's members at once."""
    if row["ensemble_of"]:
        return f"{row['ensemble_of']}, averaged"
    return str(len(row["test_accuracy"]))


def trained_on(record):
    """The protocol: the first 50,000 training images (the split's), or all 60,000 in a final fit."""
    images = record.data.get("train_images")
    if not images:
        return "?"
    return f"{images:,}, no validation" if record.final_fit else f"{images:,}"


def format_model_table(rows):
    """Markdown, best mean test accuracy first."""
    lines = ["| model | what it is | parameters | trained on | epochs | time per epoch | training time "
             "| test accuracy | with TTA | seeds | its source reports |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in sorted(rows, key=lambda row: -statistics.fmean(row["test_accuracy"])):
        lines.append(
            f"| `{row['model']}` | {row['summary']} | {row['parameters']:,} | {row['trained_on']} "
            f"| {row['epochs'] or '?'} "
            f"| {duration(row['seconds_per_epoch'])} | {duration(row['training_seconds'])} "
            f"| {percent(row['test_accuracy'])} | {percent(row['tta_accuracy']) if row['tta_accuracy'] else '-'} "
            f"| {seeds(row)} | {row['source']} |")
    return "\n".join(lines)


def replace_section(text, table):
    """`text` with everything between the markers replaced by `table`; ValueError if a marker is missing."""
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(f"the markers {START_MARKER!r} and {END_MARKER!r} are not both there, in order")
    return f"{text[:start + len(START_MARKER)]}\n{table}\n{text[end:]}"
