"""Train one registered model with its recipe, measure it once on the test set, and export it.

`train(config)` is what `python train.py` runs; the tests call it directly on tiny data.
"""

import math
import signal
import sys
import threading
from pathlib import Path

import keras
import tensorflow as tf

from mnist_lab import resume
from mnist_lab.batchnorm import fuse_batch_norm
from mnist_lab.config import PROJECT_DIR
from mnist_lab.data import load_mnist
from mnist_lab.data.pipeline import make_dataset
from mnist_lab.data.splits import check_batch_size, make_splits
from mnist_lab.errors import UserError
from mnist_lab.machine import native_bfloat16
from mnist_lab.optimizers import make_optimizer
from mnist_lab.record import ModelRecord
from mnist_lab.text import counted
from mnist_lab.writer import ModelWriter, check_free_space, check_writable_dir
from models import NUM_CLASSES

# An epoch whose mean loss is this far above guessing (ln 10 = 2.30) has diverged, even if finite:
# a learning rate of 1e6 keeps some models' loss finite, around 1e5 to 1e20, at chance accuracy.
DIVERGED_LOSS = 10 * math.log(NUM_CLASSES)


class Diverged(Exception):
    def __init__(self, loss, epoch, batches=None):
        """`batches`: (first, last) of the call to TensorFlow in which the loss turned; None: at the epoch's end."""
        if batches is None:
            where = f"as epoch {epoch}'s mean"
        else:
            first, last = batches
            where = f"in epoch {epoch}, batch {last}" if first == last else f"in epoch {epoch}, batches {first}-{last}"
        super().__init__(f"the loss became {loss:.4g} {where}")
        self.loss = loss


class StopOnDivergence(keras.callbacks.Callback):
    """Stop at the first batch whose loss is NaN or infinite (at the end of its call to TensorFlow, which
    runs the recipe's `steps_per_execution` batches), or the first epoch whose mean loss is more than
    ten times what guessing gives, saying where.

    It raises rather than asking Keras to stop: a normal stop runs `on_train_end`, and nothing of
    a diverged run may look finished. Listed first, so the backup keeps the last good epoch.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_begin(self, batch, logs=None):
        self.first_batch = batch + 1

    def on_train_batch_end(self, batch, logs=None):  # after each call: several batches under steps_per_execution
        loss = float((logs or {}).get("loss", 0.0))  # the epoch's running mean: NaN from the first NaN batch on
        if not math.isfinite(loss):  # Keras numbers an epoch's last call as if whole: its last batch is the epoch's
            raise Diverged(loss, self.epoch, (self.first_batch, min(batch + 1, self.params.get("steps") or batch + 1)))

    def on_epoch_end(self, epoch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if loss > DIVERGED_LOSS:
            raise Diverged(loss, self.epoch)


class CtrlC(keras.callbacks.Callback):
    """Ctrl-C (SIGINT) or SIGTERM becomes a KeyboardInterrupt at the next batch's end (at the end of the call to
    TensorFlow running it, under steps_per_execution), after the epoch's backup.

    Python's own handler raises wherever the main thread happens to be, and a KeyboardInterrupt
    raised inside a finalizer (tf.data's iterators have them) is printed and dropped: training
    would go on and export. A noted Ctrl-C cannot be lost; a second one stops at once.
    """

    def __enter__(self):
        self.pressed, self.previous = False, None
        # Not off the main thread (signals go to it), nor where SIGINT is ignored (a background job).
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
            self.previous = signal.signal(signal.SIGINT, self.note) or signal.default_int_handler
            self.previous_term = signal.signal(signal.SIGTERM, self.note)  # SIGTERM likewise
        return self

    def note(self, signum, frame):
        self.pressed = True
        signal.signal(signal.SIGINT, self.previous)
        signal.signal(signal.SIGTERM, self.previous_term)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            signal.signal(signal.SIGTERM, self.previous_term)

    def check(self):
        if self.pressed:
            raise KeyboardInterrupt

    def on_train_batch_end(self, batch, logs=None):
        self.check()

    def on_epoch_end(self, epoch, logs=None):
        self.check()


def bfloat16_is_native():
    """Whether the device that trains computes bfloat16 natively: every GPU from compute capability 8.0
    (Ampere) on, else the CPU with AVX512-BF16 or AMX (emulated, bfloat16 is slower than float32)."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return all(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)) >= (8, 0)
                   for gpu in gpus)
    return native_bfloat16()


def fit_verbosity(verbose=None):
    """Keras' fit verbosity: `verbose` if given, else a progress bar on a terminal and a line per epoch elsewhere."""
    return verbose if verbose is not None else (1 if sys.stdout.isatty() else 2)


def build_model(spec, recipe):
    """The model, its BatchNorm training through TensorFlow's fused kernel (mnist_lab/batchnorm.py), under
    Keras' mixed bfloat16 policy when the recipe asks and the device computes bfloat16 natively; the
    global policy is restored."""
    if not (recipe.mixed_bfloat16 and bfloat16_is_native()):
        return fuse_batch_norm(spec.build())
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        return fuse_batch_norm(spec.build())
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_and_compile(spec, recipe, steps_per_epoch):
    """The model built per its recipe (precision included) and compiled with the recipe's optimizer."""
    model = build_model(spec, recipe)
    model.compile(optimizer=make_optimizer(recipe, steps_per_epoch), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=recipe.jit_compile,
                  steps_per_execution=recipe.steps_per_execution)
    return model


def run_settings(config, spec, data):
    """What a run's backup must have been made with to be resumed."""
    return {"model": config.output_name(), "summary": spec.summary, "recipe": config.recipe(spec.recipe).to_dict(),
            "seed": config.seed, "subset": config.subset, "validation_size": config.validation_size,
            "deterministic": config.deterministic, "data": data.fingerprint}


def check_trainable(config, data, spec=None):
    """Refuse now what train() would refuse once started (a batch larger than the data, a better model in
    place, a backup of other settings), writing nothing: an ensemble checks every member before it
    trains any."""
    spec = spec or config.spec()
    recipe = config.recipe(spec.recipe)
    splits = make_splits(data, config.validation_size, config.subset, final_fit=True)
    check_batch_size(recipe.batch_size, splits)
    writer = ModelWriter(config.output_dir())
    writer.check_replaceable(len(splits.x_train), recipe.epochs, config.replace)
    if not config.fresh:
        resume.check_backup(writer.backup, run_settings(config, spec, data))


def train(config, data=None, log=print, spec=None, writer=None, **record_fields):
    """Train (or resume), test once, export; return the model's record.

    `data` is MNIST as loaded (None: load it now). `spec` trains a model other than the registry's
    (the tuned MLP); `record_fields` go into its record. `writer` is the output's writer when the
    caller already holds it (the tuner takes it before its search).
    """
    spec = spec or config.spec()
    recipe = config.recipe(spec.recipe)
    name = config.output_name()
    writer = writer or ModelWriter(config.output_dir(), log)  # a bad --output fails here, before any work
    if config.tensorboard:
        check_writable_dir(config.tensorboard, "--tensorboard")
    with writer:  # from here on this run is the only one writing its folder
        data = data or load_mnist(config.data_dir, log=log)
        splits = make_splits(data, config.validation_size, config.subset, final_fit=True)
        check_batch_size(recipe.batch_size, splits)
        writer.check_replaceable(len(splits.x_train), recipe.epochs, config.replace)
        if not config.output and Path.cwd().resolve() != PROJECT_DIR:
            log(f"{name}: no --output, so the model goes under this folder, to {writer.output.resolve()}, not "
                f"under the project ({PROJECT_DIR}); run evaluate.py, predict.py and serve.py from here too, or "
                "pass them --models-dir")
        validation = f"{len(splits.x_val)} validation" if len(splits.x_val) else "no validation (a final fit)"
        log(f"{name}: {len(splits.x_train)} training, {validation}, {len(splits.x_test)} test images; "
            f"{recipe.describe()}")
        if recipe.mixed_bfloat16 and not bfloat16_is_native():
            log(f"{name}: this device has no native bfloat16 (a GPU before Ampere, a CPU without AVX512-BF16 "
                "or AMX), so it computes in float32, which is faster here than emulated bfloat16")

        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        steps_per_epoch = math.ceil(len(splits.x_train) / recipe.batch_size)
        model = build_and_compile(spec, recipe, steps_per_epoch)  # built: BackupAndRestore needs its weights
        check_free_space(writer.output, model.count_params())
        train_ds = make_dataset(splits.x_train, splits.y_train, recipe.batch_size, shuffle=True,
                                augment=recipe.augment, seed=config.seed, deterministic=config.deterministic)
        val_ds = make_dataset(splits.x_val, splits.y_val, recipe.batch_size) if len(splits.x_val) else None

        completed, history, epoch_seconds = resume.prepare_backup(writer.backup, run_settings(config, spec, data),
                                                                  config.fresh, recipe.epochs, log)
        if completed:
            log(f"resuming from epoch {completed} of {recipe.epochs}: an interrupted run completed "
                f"{'it' if completed == 1 else f'epochs 1-{completed}'} (backup {writer.backup}); --fresh starts over")
        with CtrlC() as ctrl_c:
            callbacks = [StopOnDivergence(), *resume.backup_callbacks(writer.backup, history, epoch_seconds)]
            if config.tensorboard:
                callbacks.append(keras.callbacks.TensorBoard(config.tensorboard))
                log(f"TensorBoard logs go to {config.tensorboard}; watch them with: "
                    f"tensorboard --logdir {config.tensorboard}")
            try:
                model.fit(train_ds, validation_data=val_ds, epochs=recipe.epochs, callbacks=[*callbacks, ctrl_c],
                          verbose=fit_verbosity(config.verbose), shuffle=False)  # train_ds shuffles itself
            except Diverged as error:
                raise UserError(f"training diverged: {error}; nothing was exported; try a --learning-rate below "
                                f"{recipe.learning_rate:g} (with --fresh, as the settings change)") from None
            # The one use of the test set: the final figure, after every choice is made.
            test_loss, test_accuracy = model.evaluate(make_dataset(splits.x_test, splits.y_test, 1000), verbose=0)
            ctrl_c.check()  # pressed after the last batch: still nothing is exported

        training_seconds = sum(epoch_seconds)
        record = ModelRecord.create(
            name, spec, config, model, data, splits, epochs_run=len(epoch_seconds),
            resumed_after_epoch=completed or None, training_seconds=round(training_seconds, 2),
            seconds_per_epoch=round(training_seconds / max(1, len(epoch_seconds)), 2),
            validation_accuracy=round(float(history["val_accuracy"][-1]), 6) if val_ds is not None else None,
            test_accuracy=round(float(test_accuracy), 6), test_loss=round(float(test_loss), 6), **record_fields)
        writer.write(model, record, history, epoch_seconds)

    log(f"{name}: test accuracy {100 * test_accuracy:.2f} % on {len(splits.x_test)} images, "
        f"trained {training_seconds:.1f} s ({counted(len(epoch_seconds), 'epoch')}) -> {writer.output}")
    return record
