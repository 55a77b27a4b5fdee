"""What every model shares: the input it takes and the classes it predicts."""

IMAGE_SIZE = 28  # MNIST digits are 28x28 pixels
INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)  # greyscale digits, values in [0, 1]
NUM_CLASSES = 10
