"""One trained model answering for single images: choose it, load it once, predict a digit.

Shared by `predict.py` and `serve.py`; images go through `mnist_lab.preprocess` first.
"""

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_lab import preprocess, store
from mnist_lab.config import MODELS_DIR
from mnist_lab.errors import ModelError, UserError
from mnist_lab.record import FULL_TEST_SET, ModelRecord


@dataclass
class Prediction:
    digit: int
    probability: float
    probabilities: list  # 10 floats
    seen: np.ndarray  # the (28, 28) image the model was given

    def top(self, k=3):
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(int(d), float(self.probabilities[d])) for d in order]

    def seen_png(self):
        """The 28x28 input as a PNG data URL, for a page to show what the model saw."""
        buffer = io.BytesIO()
        Image.fromarray((self.seen * 255).astype(np.uint8)).save(buffer, "PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()

    def to_dict(self):
        return {"digit": self.digit, "probability": round(self.probability, 6),
                "top3": [{"digit": d, "probability": round(p, 6)} for d, p in self.top()],
                "probabilities": [round(float(p), 6) for p in self.probabilities]}


def choose_model(models_dir=MODELS_DIR, name=None):
    """(folder, reason): the named model, else the best test accuracy among those tested on the full
    test set (smoke runs on --subset were tested on a slice, and their figure says little)."""
    models_dir = Path(models_dir)
    hint = "train one first, e.g. `python train.py --model cnn`"
    if name is not None:
        folder = models_dir / name
        if not (folder / "saved_model.pb").is_file():
            raise UserError(f"--model {name}: no trained model in {folder}; {hint.replace('cnn', name)}")
        return folder, "chosen with --model"
    folders = store.model_folders(models_dir)
    if not folders:
        raise UserError(f"no trained models in {models_dir}/; {hint}")
    recorded = []
    for folder in folders:
        record = ModelRecord.load(folder)
        if record and record.test_accuracy is not None and record.data.get("test_images") == FULL_TEST_SET:
            recorded.append((record.test_accuracy, folder))
    if not recorded:
        raise UserError(f"no model in {models_dir}/ was tested on the full {FULL_TEST_SET}-image test set "
                        f"(found {', '.join(folder.name for folder in folders)}); {hint}, or name one with --model")
    accuracy, folder = max(recorded, key=lambda item: item[0])
    return folder, f"best test accuracy on the full test set, {100 * accuracy:.2f} %"


class DigitPredictor:
    """A SavedModel loaded once; `predict` takes encoded image bytes."""

    def __init__(self, folder):
        self.classifier = store.SavedModelClassifier(folder)
        self.name = self.classifier.name
        self.classifier.predict(np.zeros((1, 28, 28, 1), np.float32))  # trace once, before any request

    def predict(self, data, name="image"):
        return self.predict_prepared(preprocess.prepare_bytes(data, name), name)

    def predict_prepared(self, seen, name="image"):
        """The prediction for a (28, 28) image from `preprocess`; a model that answers NaN or
        infinity (diverged or damaged) is a ModelError, never a NaN in the output."""
        probabilities = self.classifier.predict(seen[np.newaxis, :, :, np.newaxis])[0]
        if not np.isfinite(probabilities).all():
            raise ModelError(f"{name}: the model {self.name} answered NaN or infinity instead of probabilities "
                             "(a diverged or damaged model); retrain it, or choose another with --model")
        digit = int(np.argmax(probabilities))
        return Prediction(digit, float(probabilities[digit]), probabilities.tolist(), seen)
