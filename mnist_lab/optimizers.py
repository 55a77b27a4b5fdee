"""The optimizer a recipe names, with its learning-rate schedule: the one factory that train.py and
benchmarks/screen.py use. Keras alone, no TensorFlow, so the screen runs it on JAX too."""

import keras
from keras import ops

EXPONENTIAL_DECAY = 0.95  # the "exponential" schedule's factor per epoch, as in Deotte's study


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


def make_optimizer(recipe, steps_per_epoch, **options):
    """The recipe's optimizer and schedule over its epochs; `options` go to the optimizer (the screen's
    use_ema=True, ema_momentum=0.999)."""
    learning_rate = recipe.learning_rate
    if recipe.schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            recipe.learning_rate, decay_steps=recipe.epochs * steps_per_epoch)
    elif recipe.schedule == "one_cycle":
        learning_rate = OneCycle(recipe.learning_rate, total_steps=recipe.epochs * steps_per_epoch)
    elif recipe.schedule == "exponential":
        learning_rate = keras.optimizers.schedules.ExponentialDecay(
            recipe.learning_rate, decay_steps=steps_per_epoch, decay_rate=EXPONENTIAL_DECAY, staircase=True)
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True, **options)
    if recipe.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, **options)
    beta_1, beta_2 = recipe.adam_betas
    return keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, **options)
