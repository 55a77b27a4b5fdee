"""What every model shares: the input it takes and the classes it predicts."""

INPUT_SHAPE = (28, 28, 1)  # greyscale digits, values in [0, 1]
NUM_CLASSES = 10
