"""Learning-rate schedules that Keras does not ship."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mnist_lab")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """One cycle: a linear rise from peak/start_divisor to the peak over the first `warmup` fraction
    of the steps, then a linear fall to zero at the last step."""

    def __init__(self, peak, total_steps, warmup=0.3, start_divisor=25.0):
        self.peak, self.total_steps, self.warmup, self.start_divisor = peak, total_steps, warmup, start_divisor

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rise_steps = max(1.0, self.warmup * self.total_steps)
        start = self.peak / self.start_divisor
        rising = start + (self.peak - start) * step / rise_steps
        falling = self.peak * (1.0 - (step - rise_steps) / max(1.0, self.total_steps - rise_steps))
        return ops.where(step < rise_steps, rising, ops.maximum(falling, 0.0))

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup": self.warmup,
                "start_divisor": self.start_divisor}
