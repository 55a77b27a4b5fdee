"""One trained model answering for single images: choose it, load it once, predict a digit, and say
when it is unsure.

Shared by `predict.py` and `serve.py`; images go through `mnist_lab.preprocess` first.
"""

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from mnist_lab import reader
from mnist_lab.config import MODELS_DIR, SCRATCH_MODEL, folder_parts, train_hint
from mnist_lab.errors import ModelError, UserError
from mnist_lab.record import FULL_TEST_SET, ModelRecord
from models import REGISTRY

# The model predict.py and serve.py use unless told otherwise, once it is trained: the one trained
# for photos and drawings (handwriting augmentation; docs/your-digits.md).
PREFERRED_MODEL = "robust_cnn"

# A prediction is unsure when its top probability is below UNSURE_BELOW: the threshold with the best F1
# on 3 x 2000 photos of MNIST validation digits for robust_cnn (`python benchmarks/photos.py
# --per-lighting 2000`, reports/photos.md). It flags 1.37 % of the photos; 35 % of those flagged are
# mistakes (precision) and 52 % of the mistakes are flagged (recall). The best rule on the margin
# between the top two (below 0.6) did slightly worse: 1.32 % flagged, precision 35 %, recall 50 %.
UNSURE_BELOW = 0.8
# ...or when preparation found no clear digit: no pixel of the prepared image reaches FAINT (every
# MNIST digit reaches 0.99; strokes too thin or pale to survive scaling to 20 pixels do not; none of
# the photos above). Flagging digits with little ink (under 28 pixels above 0.5, as 0.1 % of MNIST's
# training digits) was tried and dropped: it flagged 22 of those photos, 3 of them mistakes, and the
# top probability had flagged 2 of the 3 already.
FAINT = 0.5
# ...or when the ink is over WIDER_THAN times as wide as it is tall: digits written side by side, read as
# one. On the first 50000 MNIST training digits, 0.34 % of single digits are that wide (none over 2.3);
# of 300 pairs of them side by side (gaps -4 to 8 pixels), prepared as predict.py does, 25 % are (the
# others are cropped to one of the two, the heavier). On the photos above it flagged 6 of 6000 more,
# all read right (docs/your-digits.md).
WIDER_THAN = 1.6


def unsure_reason(probabilities, seen):
    """Why a prediction should not be trusted, in a few words, or None when nothing says so."""
    if float(np.max(probabilities)) < UNSURE_BELOW:
        return f"top probability below {100 * UNSURE_BELOW:g} %"
    if float(np.max(seen)) < FAINT:
        return "no clear digit: its strokes are faint once scaled to 20 pixels"
    rows, columns = np.flatnonzero(seen.max(axis=1) > 0.1), np.flatnonzero(seen.max(axis=0) > 0.1)
    if columns[-1] - columns[0] + 1 > WIDER_THAN * (rows[-1] - rows[0] + 1):
        return "the ink is much wider than one digit: several side by side?"
    return None


@dataclass
class Prediction:
    digit: int
    probability: float
    probabilities: list  # 10 floats
    seen: np.ndarray  # the (28, 28) image the model was given
    unsure: Optional[str] = None  # why this answer should not be trusted (unsure_reason), or None

    def top(self, k=3):
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(int(d), float(self.probabilities[d])) for d in order]

    def seen_png(self):
        """The 28x28 input as a PNG data URL, for a page to show what the model saw."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray((self.seen * 255).astype(np.uint8)).save(buffer, "PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()

    def to_dict(self):
        return {"digit": self.digit, "probability": round(self.probability, 6),
                "unsure": self.unsure is not None, "unsure_reason": self.unsure,
                "top3": [{"digit": d, "probability": round(p, 6)} for d, p in self.top()],
                "probabilities": [round(float(p), 6) for p in self.probabilities]}


def choose_model(models_dir=MODELS_DIR, name=None):
    """(folder, reason): the named model, else the first of `ranked_models`."""
    return ranked_models(models_dir, name)[0]


def ranked_models(models_dir=MODELS_DIR, name=None):
    """[(folder, reason)], best first: the named model alone; else the one made for photos
    (PREFERRED_MODEL) once trained, then the conv nets by test accuracy, then the other models. Only
    models tested on the full test set count (a smoke run's figure on a slice says little), and only
    with an accuracy that is a fraction: a hand-edited 1.5 or `true` makes no model the default."""
    models_dir = Path(models_dir)
    hint = "train one first, e.g. `python train.py --model cnn`"
    if name is not None:
        folder = models_dir / name
        if not reader.has_savedmodel(folder):
            found = ", ".join(folder.name for folder in reader.model_folders(models_dir)) or "none"
            raise UserError(f"--model {name}: no trained model in {folder} (found: {found}); {train_hint(name)}"
                            + "".join(f"; {note}" for note in reader.set_aside_notes(models_dir, name)))
        return [(folder, "chosen with --model")]
    folders = reader.model_folders(models_dir)
    if not folders:
        where = models_dir.resolve()
        raise UserError(f"no trained models in {where}/; {hint}, or run from the project's folder, or pass "
                        "--models-dir" + "".join(f"; {note}" for note in reader.set_aside_notes(models_dir)))
    candidates = []
    for folder in folders:
        record = ModelRecord.load(folder)
        accuracy = record and record.test_accuracy
        if (isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool) and 0 <= accuracy <= 1
                and record.data.get("test_images") == FULL_TEST_SET):
            candidates.append((accuracy, folder, is_conv_net(record)))
    if not candidates:
        raise UserError(f"no model in {models_dir}/ was tested on the full {FULL_TEST_SET}-image test set "
                        f"(found {', '.join(folder.name for folder in folders)}); {hint}, or name one with --model")
    untrained = (f"; {PREFERRED_MODEL}, trained for photos and drawings, would answer them better: "
                 f"`python train.py --model {PREFERRED_MODEL}`")
    ranked = []
    for accuracy, folder, conv_net in sorted(candidates, key=lambda c: (c[1].name != PREFERRED_MODEL, not c[2], -c[0])):
        if folder.name == PREFERRED_MODEL:
            reason = f"trained for photos and drawings, {100 * accuracy:.2f} % on the full test set"
        elif conv_net:
            reason = f"the conv net with the best test accuracy, {100 * accuracy:.2f} %{untrained}"
        else:
            reason = f"best test accuracy on the full test set, {100 * accuracy:.2f} %{untrained}"
        ranked.append((folder, reason))
    return ranked


def load_predictor(models_dir=MODELS_DIR, name=None, runtime=None, warn=print):
    """(predictor, reason, runtime, note) for predict.py and serve.py: the named model, else the first of
    `ranked_models` that loads; each one passed over is `warn`ed about in one line. `runtime`: as
    `choose_runtime` takes it."""
    ranked = ranked_models(models_dir, name)
    if name is None:
        for note in reader.set_aside_notes(models_dir):
            warn(f"warning: {note}")
    for index, (folder, reason) in enumerate(ranked):
        used, note = choose_runtime(folder, runtime)
        try:
            return DigitPredictor(folder, used), reason, used, note
        except ModelError as error:
            if index + 1 == len(ranked):
                raise
            warn(f"warning: {error}; trying {ranked[index + 1][0].name}, the next choice")


def is_conv_net(record):
    """Whether a record's model is a convolutional network (an ensemble: of one), as the registry says."""
    key = record.ensemble.get("of") if isinstance(record.ensemble, dict) else None
    key = key or (record.flags.get("model") if isinstance(record.flags, dict) else None)
    if key not in REGISTRY:
        key = folder_parts(record.model)[0]
    key = {SCRATCH_MODEL: "simple_cnn"}.get(key, key)
    return key in REGISTRY and not REGISTRY[key].builder.startswith("mlp:")


def choose_runtime(folder, runtime=None):
    """(runtime, note): `runtime` if given, else ONNX Runtime where the folder has model.onnx (no TensorFlow
    to load), else the SavedModel, with a note on how to export the other formats."""
    if runtime is not None:
        return runtime, ""
    if (Path(folder) / reader.FORMAT_FILES["onnx"]).is_file():
        return "onnx", ""
    return "savedmodel", (f"; it has no model.onnx, so TensorFlow loads its SavedModel: "
                          f"`python -m mnist_lab.export {folder}` writes one")


class DigitPredictor:
    """A model loaded once, on ONNX Runtime or as a SavedModel; `predict` takes encoded image bytes."""

    def __init__(self, folder, runtime="savedmodel"):
        if runtime == "savedmodel":
            from mnist_lab.startup import quiet_tensorflow_import

            quiet_tensorflow_import()  # only on this path: ONNX Runtime needs no TensorFlow
        self.classifier = reader.load_classifier(folder, runtime)
        self.name, self.runtime = self.classifier.name, runtime
        self.classifier.predict(np.zeros((1, 28, 28, 1), np.float32))  # trace once, before any request

    def predict(self, data, name="image"):
        from mnist_lab import preprocess  # SciPy, half a second: only once there is an image to prepare

        return self.predict_prepared(preprocess.prepare_bytes(data, name))

    def predict_prepared(self, seen):
        """The prediction for a (28, 28) image from `preprocess`; a model that answers anything but
        probabilities (NaN from a diverged model, a foreign model's scores) is a ModelError."""
        probabilities = self.classifier.predict(seen[np.newaxis, :, :, np.newaxis])[0]  # checked: probabilities
        digit = int(np.argmax(probabilities))
        return Prediction(digit, float(probabilities[digit]), probabilities.tolist(), seen,
                          unsure_reason(probabilities, seen))
