"""How fast each model trains and answers on this machine, and how close to its limit it runs.

    python benchmarks/speed.py            # full run: 5 seeds of fast_cnn, every model (~5 minutes)
    python benchmarks/speed.py --quick    # seconds, on a subset: checks that the benchmark works
    python benchmarks/speed.py --vs-pytorch   # and each conv model's PyTorch twin, side by side

Measures, inside this process, after a warm-up, so interpreter start-up and graph tracing are
excluded:
- time to 99 % for `fast_cnn`: its recipe (one epoch) trained on all 60000 training images, per
  seed: training seconds and the test accuracy reached; median and spread over seeds;
- per registered model: steady-state training images per second, training FLOPs per image (3x the
  forward pass's multiply-adds x 2, counted for Conv2D and Dense layers), the GFLOP/s that implies,
  and that as a fraction of this machine's float32 matrix-multiply GFLOP/s measured in the same run;
- inference through each model's exported SavedModel: images per second at batch 1000, and the
  latency of a single image (median and p99);
- with --vs-pytorch, each conv model's PyTorch twin (benchmarks/torch_twins.py) right after it, on
  the same number of images, at each setting of torch_twins.SETTINGS; the ratio is Keras' seconds
  over the twin's at its fastest setting (below 1: Keras is faster). PyTorch is an optional extra:
  `pip install -r requirements-bench.txt`;
- the machine and package versions.
Writes reports/benchmark.json and reports/benchmark.md.
"""

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from mnist_lab.flags import ArgumentParser, positive_int
from mnist_lab.startup import quiet_tensorflow_import

quiet_tensorflow_import()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mnist_lab import reader, writer  # noqa: E402
from mnist_lab.data import load_mnist  # noqa: E402
from mnist_lab.data.pipeline import make_dataset  # noqa: E402
from mnist_lab.data.splits import to_model_input  # noqa: E402
from mnist_lab.flags import check_writable_dir  # noqa: E402
from mnist_lab.machine import cpu_flags, cpu_name, native_bfloat16  # noqa: E402
from mnist_lab.training import build_and_compile  # noqa: E402
from models import REGISTRY  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Each model's training is timed over at least this many images (and 40 steps): this machine's short
# timings come in steps of about 2.6 s, so a window much shorter than that measures the steps.
TIMED_IMAGES = 10240


def forward_flops(model):
    """Floating-point operations (2 per multiply-add) of one image's forward pass, Conv2D and Dense."""
    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            _, out_h, out_w, out_c = layer.output.shape
            flops += 2 * out_h * out_w * out_c * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * layer.input.shape[-1] * layer.units
    return flops


def training_flops(model):
    """Forward plus backward: the backward pass costs about twice the forward (input and weight gradients)."""
    return 3 * forward_flops(model)


def matmul_gflops(size=2048, repeats=10):
    """This machine's float32 matrix-multiply rate: the practical ceiling for dense and conv layers."""
    a = tf.random.uniform((size, size))
    b = tf.random.uniform((size, size))
    tf.linalg.matmul(a, b).numpy()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        c = tf.linalg.matmul(a, b)
    c.numpy()
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def compiled(name, steps_per_epoch):
    """The registered model with its recipe, compiled exactly as train.py compiles it."""
    recipe = REGISTRY[name].recipe
    return build_and_compile(REGISTRY[name], recipe, steps_per_epoch), recipe


def time_to_accuracy(data, seed):
    """fast_cnn's recipe on all training images; seconds of training (tracing excluded) and test accuracy."""
    keras.utils.set_random_seed(seed)
    steps = int(np.ceil(len(data.x_train) / REGISTRY["fast_cnn"].recipe.batch_size))
    model, recipe = compiled("fast_cnn", steps)
    train_ds = make_dataset(data.x_train, data.y_train, recipe.batch_size, shuffle=True, seed=seed)
    initial = model.get_weights()
    model.fit(train_ds.take(2), epochs=1, verbose=0, shuffle=False)  # trace the training step, then undo what it learned
    model.set_weights(initial)
    for variable in model.optimizer.variables:
        variable.assign(tf.zeros_like(variable))
    start = time.perf_counter()
    model.fit(train_ds, epochs=recipe.epochs, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(make_dataset(data.x_test, data.y_test, 1000), verbose=0)
    return {"seed": seed, "seconds": round(seconds, 3), "test_accuracy": round(float(accuracy), 6)}


class StepClock(keras.callbacks.Callback):
    """Times training from the end of its first call to TensorFlow (one step, or the recipe's
    `steps_per_execution`) to the end of its last, and counts the steps in between: what `fit` does
    before (a new iterator refilling the shuffle buffer, its own set-up) is left out, as the PyTorch
    twins leave out theirs. Keras numbers a call by its last step as if it were whole, so a timed
    fit must run whole calls."""

    def on_train_batch_end(self, batch, logs=None):
        if not hasattr(self, "start"):
            self.start, self.first = time.perf_counter(), batch
        self.last = batch

    def on_train_end(self, logs=None):
        self.seconds, self.steps = time.perf_counter() - self.start, self.last - self.first


def training_throughput(name, data, steps):
    """Steady-state training images per second for the model's recipe batch size, over about `steps` steps
    after the first call."""
    model, recipe = compiled(name, steps_per_epoch=1000)
    batches = make_dataset(data.x_train, data.y_train, recipe.batch_size, shuffle=True, seed=0,
                           augment=recipe.augment).repeat()
    calls = recipe.steps_per_execution
    model.fit(batches, steps_per_epoch=3 * calls, epochs=1, verbose=0, shuffle=False)  # warm-up: tracing, allocations
    clock = StepClock()
    steps = -(-steps // calls) * calls  # whole calls
    model.fit(batches, steps_per_epoch=steps + calls, epochs=1, verbose=0, shuffle=False, callbacks=[clock])
    return model, clock.steps * recipe.batch_size / clock.seconds, clock.steps


def inference(model, images, single_calls):
    """Images/s at batch 1000 and single-image latency, through the exported SavedModel."""
    with tempfile.TemporaryDirectory() as folder:
        writer.export_savedmodel(model, folder)
        classifier = reader.SavedModelClassifier(folder)
        batch = images[:1000]
        classifier.predict(batch)
        start = time.perf_counter()
        for _ in range(3):
            classifier.predict(batch)
        rate = 3 * len(batch) / (time.perf_counter() - start)
        one = images[:1]
        classifier.predict(one)
        latencies = []
        for _ in range(single_calls):
            start = time.perf_counter()
            classifier.predict(one)
            latencies.append(time.perf_counter() - start)
    ms = np.array(latencies) * 1000
    return rate, float(np.median(ms)), float(np.percentile(ms, 99))


def load_twins(log):
    """benchmarks.torch_twins, or None (with a line saying how to install PyTorch) where it is missing."""
    if importlib.util.find_spec("torch") is None:
        log("PyTorch is not installed, so no twin is timed: `pip install -r requirements-bench.txt` "
            "adds it; measuring the rest")
        return None
    # Loaded from its file: run as a script or imported by the tests, benchmarks/ is not a package.
    spec = importlib.util.spec_from_file_location("torch_twins", Path(__file__).with_name("torch_twins.py"))
    twins = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(twins)
    return twins


def vs_pytorch(twins, model, name, data, images, keras_seconds, log):
    """The twin's seconds for the same images at each setting, and Keras' ratio to the fastest."""
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    if twins.parameter_count(name) != trainable:  # a twin that is not the same network measures nothing
        raise AssertionError(f"{name}'s PyTorch twin has {twins.parameter_count(name)} trainable parameters, "
                             f"the Keras model {trainable}")
    recipe = REGISTRY[name].recipe
    # As train.py: bfloat16 only where the CPU computes it (emulated, PyTorch's took 4x float32's time here).
    settings = {setting: round(twins.train_seconds(name, recipe, data.x_train, data.y_train, images, **flags)[0], 3)
                for setting, flags in twins.SETTINGS.items() if native_bfloat16() or not flags["bfloat16"]}
    fastest = min(settings, key=settings.get)
    ratio = keras_seconds / settings[fastest]
    log(f"{name}: {images} images, Keras {keras_seconds:.2f} s, PyTorch "
        + ", ".join(f"{seconds:.2f} s ({setting})" for setting, seconds in settings.items())
        + f"; ratio {ratio:.2f}")
    return {"images": images, "trainable_parameters": trainable, "torch_threads": twins.torch.get_num_threads(),
            "keras_seconds": round(keras_seconds, 3), "pytorch_seconds": settings,
            "pytorch_fastest": fastest, "ratio": round(ratio, 3)}


def run(quick=False, seeds=5, models=None, data_dir=None, log=print, compare=False):
    twins = load_twins(log) if compare else None
    data = load_mnist(data_dir, log=log)
    if quick:
        data = type(data)(data.x_train[:2048], data.y_train[:2048], data.x_test[:1000], data.y_test[:1000],
                          data.source + " (quick: a subset)", data.verified)
        seeds, models = 1, models or ["fast_cnn", "mlp"]
    models = models or sorted(REGISTRY)
    peak = matmul_gflops(1024 if quick else 2048, 3 if quick else 10)
    log(f"matrix multiply: {peak:.1f} GFLOP/s (float32)")

    runs = []
    for seed in range(1, seeds + 1):
        runs.append(time_to_accuracy(data, seed))
        log(f"fast_cnn seed {seed}: {runs[-1]['seconds']:.2f} s, test accuracy {100 * runs[-1]['test_accuracy']:.2f} %")
    seconds = [r["seconds"] for r in runs]
    accuracies = [r["test_accuracy"] for r in runs]

    images = to_model_input(data.x_test)
    rows = []
    for name in models:
        steps = 3 if quick else max(40, TIMED_IMAGES // REGISTRY[name].recipe.batch_size)
        model, rate, trained_steps = training_throughput(name, data, steps)
        flops = training_flops(model)
        achieved = rate * flops / 1e9
        infer_rate, p50, p99 = inference(model, images, 20 if quick else 300)
        rows.append({"model": name, "train_images_per_second": round(rate, 1), "training_flops_per_image": flops,
                     "gflops_per_second": round(achieved, 2), "fraction_of_matmul": round(achieved / peak, 4),
                     "inference_images_per_second_batch_1000": round(infer_rate, 1),
                     "single_image_ms_median": round(p50, 3), "single_image_ms_p99": round(p99, 3)})
        log(f"{name}: train {rate:,.0f} img/s, {achieved:.1f} GFLOP/s ({100 * achieved / peak:.0f} % of matmul); "
            f"infer {infer_rate:,.0f} img/s, single image {p50:.2f} ms (p99 {p99:.2f})")
        if twins and name not in twins.TWINS:
            log(f"{name}: no PyTorch twin (twins: {', '.join(twins.TWINS)})")
        elif twins:
            trained = trained_steps * REGISTRY[name].recipe.batch_size
            rows[-1]["vs_pytorch"] = vs_pytorch(twins, model, name, data, trained, trained / rate, log)

    return {
        "quick": quick,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "system": platform.platform()},
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                     "numpy": np.__version__, **({"torch": twins.torch.__version__} if twins else {})},
        "cpu_flags": cpu_flags(),
        "data": data.source,
        "matmul_gflops_per_second": round(peak, 2),
        "fast_cnn_time_to_accuracy": {
            "recipe": REGISTRY["fast_cnn"].recipe.to_dict(), "training_images": len(data.x_train), "runs": runs,
            "median_seconds": round(float(np.median(seconds)), 3), "min_seconds": min(seconds),
            "max_seconds": max(seconds), "mean_test_accuracy": round(float(np.mean(accuracies)), 6),
            "min_test_accuracy": min(accuracies), "max_test_accuracy": max(accuracies)},
        "models": rows,
    }


def to_markdown(result):
    fast = result["fast_cnn_time_to_accuracy"]
    machine = result["machine"]
    lines = [f"Machine: {machine['cpu']}, {machine['cores']} cores, flags {' '.join(result['cpu_flags']) or 'none of note'}; TensorFlow {result['versions']['tensorflow']}, "
             f"Keras {result['versions']['keras']}; float32 matrix multiply {result['matmul_gflops_per_second']} GFLOP/s.",
             "",
             f"`fast_cnn` on {fast['training_images']} training images, {len(fast['runs'])} seed(s): median "
             f"{fast['median_seconds']:.2f} s of training (from {fast['min_seconds']:.2f} to {fast['max_seconds']:.2f} s), "
             f"test accuracy mean {100 * fast['mean_test_accuracy']:.2f} % (from {100 * fast['min_test_accuracy']:.2f} "
             f"to {100 * fast['max_test_accuracy']:.2f} %).",
             "",
             "| model | train images/s | training MFLOP/image | GFLOP/s | of matmul | inference images/s (batch 1000) | 1 image p50 | p99 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["models"]:
        lines.append(f"| {row['model']} | {row['train_images_per_second']:,.0f} | {row['training_flops_per_image'] / 1e6:.1f} | "
                     f"{row['gflops_per_second']:.1f} | {100 * row['fraction_of_matmul']:.0f} % | "
                     f"{row['inference_images_per_second_batch_1000']:,.0f} | {row['single_image_ms_median']:.2f} ms | "
                     f"{row['single_image_ms_p99']:.2f} ms |")
    compared = [row for row in result["models"] if "vs_pytorch" in row]
    if compared:
        settings = list(compared[0]["vs_pytorch"]["pytorch_seconds"])
        lines += ["", f"Against PyTorch {result['versions']['torch']} (seconds for the same images, one after the other; "
                  "ratio = Keras / the fastest PyTorch setting):", "",
                  "| model | images | Keras | " + " | ".join(f"PyTorch {s}" for s in settings) + " | ratio |",
                  "|---|---:|---:|" + "---:|" * len(settings) + "---:|"]
        for row in compared:
            twin = row["vs_pytorch"]
            lines.append(f"| {row['model']} | {twin['images']} | {twin['keras_seconds']:.2f} s | "
                         + " | ".join(f"{twin['pytorch_seconds'][s]:.2f} s" for s in settings)
                         + f" | {twin['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a subset, 1 seed, 2 models: seconds (default: full)")
    parser.add_argument("--seeds", type=positive_int, default=5, help="fast_cnn seeds (default: 5)")
    parser.add_argument("--model", dest="models", action="append", choices=sorted(REGISTRY),
                        help="only these models; repeat for several (default: all)")
    parser.add_argument("--vs-pytorch", action="store_true",
                        help="also time each conv model's PyTorch twin, side by side (default: off; "
                             "needs `pip install -r requirements-bench.txt`)")
    parser.add_argument("--output", default=str(ROOT / "reports"), help="where benchmark.json/.md go (default: reports)")
    parser.add_argument("--data-dir", help="MNIST IDX files or mnist.npz (default: as train.py)")
    args = parser.parse_args(argv)
    check_writable_dir(args.output, "--output")
    result = run(args.quick, args.seeds, args.models, args.data_dir, compare=args.vs_pytorch)
    markdown = to_markdown(result)
    (Path(args.output) / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    (Path(args.output) / "benchmark.md").write_text(markdown)
    print("\n" + markdown)
    return 0


if __name__ == "__main__":
    from mnist_lab.startup import run as run_cli

    sys.exit(run_cli(main))
