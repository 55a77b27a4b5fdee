"""PNG figures: training curves, confusion matrix, prediction grids, a search's trials.

Built on matplotlib's object API (`Figure`), which needs no display and no global pyplot state.
"""

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay

MISTAKE_COLOUR = "tab:red"


def training_curves(history, path, title):
    """Loss and accuracy per epoch, training beside validation."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    epochs = np.arange(1, len(history["loss"]) + 1)
    for axes, metric in zip(figure.subplots(1, 2), ("loss", "accuracy")):
        axes.plot(epochs, history[metric], marker="o", label="training")
        if f"val_{metric}" in history:
            axes.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        axes.set(xlabel="epoch", ylabel=metric, title=f"{title}: {metric}")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
    figure.savefig(path, dpi=100)


def confusion_matrix(matrix, path, title):
    """scikit-learn's confusion-matrix display, beside the same counts with the diagonal left out,
    so that a 99 % model's few mistakes get a colour scale of their own."""
    figure = Figure(figsize=(14, 6), layout="constrained")
    figure.suptitle(title)
    everything, mistakes = figure.subplots(1, 2)
    ConfusionMatrixDisplay(matrix).plot(ax=everything, cmap="Blues", colorbar=True, values_format="d")
    everything.set(xlabel="predicted", ylabel="true", title="every test image")
    errors = np.where(np.eye(len(matrix), dtype=bool), 0, matrix)
    ConfusionMatrixDisplay(errors).plot(ax=mistakes, cmap="Reds", colorbar=True, values_format="d")
    for text in mistakes.texts:  # only the cells that hold mistakes are labelled
        if text.get_text() == "0":
            text.set_visible(False)
    mistakes.set(xlabel="predicted", ylabel="true",
                 title=f"mistakes only: {int(errors.sum())} of {int(matrix.sum())}")
    figure.savefig(path, dpi=100)


def image_grid(images, captions, mistakes, path, title, columns=10):
    """Digits with a caption each; captions of mistakes in red."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    figure = Figure(figsize=(columns * 1.1, rows * 1.3 + 0.4), layout="constrained")
    figure.suptitle(title)
    grid = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axes in grid:
        axes.axis("off")
    for axes, image, caption, mistake in zip(grid, images, captions, mistakes):
        axes.imshow(np.squeeze(image), cmap="gray_r", vmin=0, vmax=255 if image.max() > 1 else 1)
        axes.set_title(caption, fontsize=8, color=MISTAKE_COLOUR if mistake else "black")
    figure.savefig(path, dpi=100)


def seen_and_probabilities(image, probabilities, path, title):
    """The 28x28 image a model was given, beside its 10 class probabilities."""
    figure = Figure(figsize=(6, 2.8), layout="constrained")
    figure.suptitle(title)
    left, right = figure.subplots(1, 2, width_ratios=[1, 1.6])
    left.imshow(image, cmap="gray", vmin=0, vmax=1)
    left.set(xticks=[], yticks=[], title="model input, 28x28")
    bars = right.bar(range(10), probabilities, color="tab:gray")
    best = int(np.argmax(probabilities))
    bars[best].set_color("tab:blue")
    right.text(best, probabilities[best] + 0.02, f"{100 * probabilities[best]:.1f} %", ha="center", va="bottom")
    right.set(xticks=range(10), ylim=(0, 1.12), xlabel="digit", ylabel="probability")
    figure.savefig(path, dpi=100)


def search_results(rows, objective, top_names, path, title):
    """A search's objective per trial (with the best so far), then against its most influential hyperparameters."""
    scored = [row for row in rows if row[objective] is not None]
    figure = Figure(figsize=(5 * (1 + len(top_names)), 4), layout="constrained")
    figure.suptitle(title)
    panels = np.atleast_1d(figure.subplots(1, 1 + len(top_names)))
    order = np.array([int(row["trial"]) for row in scored])  # keras-tuner's trial numbers
    scores = np.array([row[objective] for row in scored])
    panels[0].plot(order, scores, "o", label="trial")
    panels[0].step(order, np.maximum.accumulate(scores), where="post", label="best so far")
    panels[0].set(xlabel="trial", ylabel=objective)
    panels[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    panels[0].legend()
    for axes, name in zip(panels[1:], top_names):
        pairs = [(row["values"][name], row[objective]) for row in scored if name in row["values"]]
        values = [value for value, _ in pairs]
        if all(isinstance(value, float) for value in values):
            axes.plot(values, [score for _, score in pairs], "o")
            if min(values) > 0 and max(values) / min(values) > 20:
                axes.set_xscale("log")
        else:  # categories, booleans, small whole numbers: one column of points per value
            levels = sorted(set(values), key=lambda level: (isinstance(level, str), level))  # numbers as numbers
            axes.plot([levels.index(value) for value in values], [score for _, score in pairs], "o", alpha=0.7)
            axes.set_xticks(range(len(levels)), [str(level) for level in levels])
        axes.set(xlabel=name, ylabel=objective, title=f"{objective} against {name}")
    for axes in panels:
        axes.grid(alpha=0.3)
    figure.savefig(path, dpi=100)
