"""The `simple_cnn` written from scratch in NumPy: layers with hand-written backpropagation.

`layers` holds each operation as a pair of plain functions, forward and backward; `network` wires
them into the one-conv-layer net; `python -m scratch.train` trains it on MNIST and exports the
weights through the Keras twin, so the rest of the project treats it like any other model.
"""
