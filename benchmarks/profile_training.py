"""Where a model's training step spends its time: TensorFlow's profiler, summed by kind of op.

    python benchmarks/profile_training.py --model deep_cnn            # 30 steps of its recipe
    python benchmarks/profile_training.py --model fast_cnn --steps 60

Traces `--steps` steady-state steps of `model.fit` with the model's recipe (augmentation included),
after a warm-up, then sums the duration of every op the TensorFlow executor ran, over all of its
threads, into kinds: convolution forward, its two backward passes, pooling, BatchNorm, the
optimizer's update, the rest. The shares are of the summed op time (two cores run ops side by side,
so it can exceed the wall time; the input pipeline's threads are not counted). The trace stays in
--logdir for TensorBoard's profile plugin.
"""

import argparse
import collections
import sys
import time
from pathlib import Path

from mnist_lab.errors import UserError
from mnist_lab.flags import ArgumentParser, check_writable_dir, positive_int
from mnist_lab.startup import quiet_tensorflow_import
from models import REGISTRY

# An op belongs to the first kind whose words appear in its name ("layer/.../OpName:OpType").
KINDS = (
    ("convolution, filter gradient", ("Conv2DBackpropFilter",)),
    ("convolution, input gradient", ("Conv2DBackpropInput",)),
    ("convolution, forward", ("Conv2D",)),
    ("pooling (forward and gradient)", ("MaxPool", "AvgPool")),
    ("BatchNorm (forward and gradient)", ("FusedBatchNorm", "batch_normalization")),
    ("dense (matrix multiply)", ("MatMul",)),
    ("optimizer update", ("adam/", "sgd/", "rmsprop/", "AssignVariableOp", "AssignAddVariableOp",
                          "AssignSubVariableOp")),
    ("dropout", ("dropout",)),
    ("activation gradient, bias gradient", ("ReluGrad", "TanhGrad", "BiasAddGrad")),
    ("loss and metrics", ("compile_loss", "Sparse", "accuracy", "Mean")),
)


def kind_of(op_name):
    for kind, words in KINDS:
        if any(word in op_name for word in words):
            return kind
    return "other ops"


def op_seconds(logdir):
    """{op name: seconds} summed over the executor's threads, from the newest trace in `logdir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    traces = list(Path(logdir).rglob("*.xplane.pb"))
    if not traces:
        raise UserError(f"--logdir {logdir}: TensorFlow's profiler wrote no trace there")
    space = xplane_pb2.XSpace()
    space.ParseFromString(max(traces, key=lambda p: p.stat().st_mtime).read_bytes())
    ops = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name:  # an op, "node/name:OpType", not the executor's own spans
                    ops[name] += event.duration_ps / 1e12
    return ops


def profile(name, steps, logdir, data_dir=None, log=print):
    import tensorflow as tf

    from mnist_lab.data import load_mnist
    from mnist_lab.data.pipeline import make_dataset
    from mnist_lab.training import build_and_compile

    data = load_mnist(data_dir, log=log)
    spec = REGISTRY[name]
    recipe = spec.recipe
    model = build_and_compile(spec, recipe, steps_per_epoch=1000)
    batches = make_dataset(data.x_train, data.y_train, recipe.batch_size, shuffle=True, seed=0,
                           augment=recipe.augment).repeat()
    model.fit(batches, steps_per_epoch=5, epochs=1, verbose=0)  # warm-up: tracing, oneDNN's kernel choice
    tf.profiler.experimental.start(str(logdir))
    start = time.perf_counter()
    model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
    wall = time.perf_counter() - start
    tf.profiler.experimental.stop()
    ops = op_seconds(logdir)
    kinds = collections.Counter()
    for op, seconds in ops.items():
        kinds[kind_of(op)] += seconds
    return {"model": name, "steps": steps, "batch_size": recipe.batch_size, "wall_seconds": wall,
            "op_seconds": sum(ops.values()), "kinds": kinds, "top_ops": ops.most_common(10)}


def to_text(result):
    total = result["op_seconds"]
    lines = [f"{result['model']}: {result['steps']} steps of batch {result['batch_size']} in {result['wall_seconds']:.2f} s "
             f"({1000 * result['wall_seconds'] / result['steps']:.1f} ms a step); ops ran {total:.2f} s in all threads"]
    lines += [f"  {100 * seconds / total:5.1f} %  {seconds:7.2f} s  {kind}" for kind, seconds in result["kinds"].most_common()]
    lines.append("  the ten costliest ops:")
    lines += [f"  {100 * seconds / total:5.1f} %  {op}" for op, seconds in result["top_ops"]]
    return "\n".join(lines)


def main(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(REGISTRY), help="the model to profile (required)")
    parser.add_argument("--steps", type=positive_int, default=30, help="training steps traced (default: 30)")
    parser.add_argument("--logdir", default="reports/profile", help="where the trace goes (default: reports/profile)")
    parser.add_argument("--data-dir", help="MNIST IDX files or mnist.npz (default: as train.py)")
    args = parser.parse_args(argv)
    check_writable_dir(Path(args.logdir) / args.model, "--logdir")
    quiet_tensorflow_import()
    print(to_text(profile(args.model, args.steps, Path(args.logdir) / args.model, args.data_dir)))
    return 0


if __name__ == "__main__":
    from mnist_lab.startup import run

    sys.exit(run(main))
