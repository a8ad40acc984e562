"""User functions referenced by name (`module:function`) from pipeline tests (on Dask workers as `tests.NAME`)."""

import os

MODEL_CALLS_ENV = "RSDT_TEST_MODEL_CALLS"


def at_least_five_frames(current):
    """A window filter as rsdtlib's win_filter: gets the window's parts unpacked."""
    timestamps, _asc, _dsc, _opt = current
    return len(timestamps) >= 5


def failing_label(window, label_args):
    raise RuntimeError("label function failed on purpose")


def label_per_tile(window, label_args):
    """A label function whose label shape depends on the tile (a user's bug): `[1, ty, tx]` on tile (0, 0),
    `[2, ty, tx]` elsewhere; each tile's labels agree among themselves."""
    import numpy as np

    frames = window.current.frames
    return frames, np.ones((1 if tuple(window.tile) == (0, 0) else 2, *frames.shape[1:3]), np.float32)


def mean_model(tile_y=32, tile_x=32):
    """Mean over time and bands -> [ty, tx], from standard (saveable) Keras layers only."""
    import keras

    inputs = keras.Input((None, tile_y, tile_x, None))
    x = keras.layers.Permute((2, 3, 1, 4))(inputs)
    x = keras.layers.Reshape((tile_y * tile_x, -1))(x)
    x = keras.layers.GlobalAveragePooling1D(data_format="channels_first")(x)
    return keras.Model(inputs, keras.layers.Reshape((tile_y, tile_x))(x))


class _CountedModel:
    """A model that appends `<process id> <windows>` to the file named by $RSDT_TEST_MODEL_CALLS per call."""

    def __init__(self, model):
        self._model = model

    def __call__(self, windows, **kwargs):
        with open(os.environ[MODEL_CALLS_ENV], "a") as f:
            f.write(f"{os.getpid()} {len(windows)}\n")
        return self._model(windows, **kwargs)


def counted_mean_model():
    """`mean_model` counting its calls (the DaskRunner reports no metrics): `--model_fn tests.window_filters:...`."""
    return _CountedModel(mean_model())
