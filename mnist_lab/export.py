"""Write the ONNX and LiteRT files into model folders trained before every export wrote them.

    python -m mnist_lab.export                      # every model in saved_models/ that lacks them
    python -m mnist_lab.export saved_models/cnn     # these folders, anew even where they exist

Each folder's model.keras is loaded and exported by Keras' own `model.export`, each file checked on
its own runtime against Keras, and the folder swapped in whole under its lock, like any write.
Nothing is retrained.
"""

import argparse
import sys
from pathlib import Path

from mnist_lab.config import MODELS_DIR
from mnist_lab.errors import UserError
from mnist_lab.flags import ArgumentParser
from mnist_lab.record import ModelRecord
from mnist_lab.startup import quiet_tensorflow_import, run


def parse_args(argv=None):
    parser = ArgumentParser(prog="python -m mnist_lab.export", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", metavar="FOLDER",
                        help="model folders (default: every model under --models-dir without model.onnx or "
                             "model.tflite)")
    parser.add_argument("--models-dir", default=str(MODELS_DIR), help=f"where trained models are (default: {MODELS_DIR})")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    quiet_tensorflow_import()
    import keras

    from mnist_lab import reader
    from mnist_lab.writer import ModelWriter

    if args.folders:
        folders = [Path(folder) for folder in args.folders]
    else:
        folders = [folder for folder in reader.model_folders(args.models_dir)
                   if not all((folder / name).is_file() for name in reader.FORMAT_FILES.values())]
        if not folders:
            print(f"every model in {args.models_dir}/ has its model.onnx and model.tflite already")
            return 0
    for folder in folders:
        if not (folder / "model.keras").is_file() or ModelRecord.load(folder) is None:
            raise UserError(f"{folder}: no model.keras with its metadata.json, so nothing to export from; "
                            "retrain it to get every format")
    for folder in folders:
        with ModelWriter(folder) as writer:
            model = keras.saving.load_model(folder / "model.keras", compile=False)
            formats = writer.add_formats(model).formats
        written = [f"{values['file']} (largest difference {values['max_difference']:.1g})"
                   for values in formats.values() if "file" in values]
        print(f"{folder}: {', '.join(written) or 'no other format could be written'}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
