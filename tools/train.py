#!/usr/bin/env python3
"""Train a reference recipe on MNIST and export it to a .mnw file (and its .keras source).

Recipes (--arch), one per reference notebook:
  mlp512      the bundled default: Dense(512)+Activation('relu')+Dropout(0.2) twice, then
              Dense(10)+Activation('softmax'); adam, categorical cross-entropy, batch 128, 5 epochs, on x/255
  scaled      a Keras net that works because its input is scaled: Flatten, Dense(128, relu),
              Dense(10, softmax) on x/255; adam, 5 epochs
  sklearn     scikit-learn MLPClassifier(hidden_layer_sizes=(100, 50, 25), activation='relu',
              learning_rate='adaptive', max_iter=20) on x/255
  dense50     Dense(50, relu)-Dense(50, relu)-Dense(10, softmax); adam, EarlyStopping(patience=3),
              validation_split=0.1, up to 50 epochs, on raw 0..255 float rows as fetch_openml('mnist_784') gives them
  dense75x4   Dense(75, relu) x 4, then Dense(10, softmax); the same recipe as dense50
  gelu_bn     the benchmark's second model: mlp512 with BatchNormalization before each activation and
              gelu for relu (its hidden layers have almost no exact zeros to skip)
  convnet     keras-io's "Simple MNIST convnet" (the bundled image model): Conv2D(32, 3, relu),
              MaxPooling2D(2), Conv2D(64, 3, relu), MaxPooling2D(2), Flatten, Dropout(0.5),
              Dense(10, softmax) on (28, 28, 1) x/255; adam, batch 128, 15 epochs, validation_split=0.1
  lenet5      LeNet-5 as MNIST tutorials build it: ZeroPadding2D(2), Conv2D(6, 5, tanh),
              AveragePooling2D(2), Conv2D(16, 5, tanh), AveragePooling2D(2), Flatten, Dense(120, tanh),
              Dense(84, tanh), Dense(10, softmax) on x/255; adam, batch 128, 10 epochs
  reader      the bundled image reader: the convnet with an 11th output, "not a digit", trained on
              MNIST, the same digits again as other people write and scan them (slanted, moved,
              thickened, blurred, coarse), and 12,000 letters, scribbles and filled shapes
              (tools/reader_data.py); adam, batch 128, 12 epochs. mnist-engine predict reads its
              11th output as "not sure"
  torchnet    PyTorch's examples/mnist Net built in Keras: Conv2D(32, 3, relu), Conv2D(64, 3, relu),
              MaxPooling2D(2), Dropout(0.25), Flatten, Dense(128, relu), Dropout(0.5), Dense(10, softmax)
              on x/255; Adadelta(learning_rate=1.0) as the example, batch 64, 14 epochs

Seeds are fixed and TensorFlow's op determinism is on, so a rerun on the same build gives the same
weights. --quick trains one epoch (sklearn: 2 iterations) on 3k images: what CI runs to check that
every recipe exports with parity, not a model worth keeping.

    python tools/train.py                     # mlp512: models/mnist_mlp_512x2.keras and the packaged .mnw
    python tools/train.py --arch dense50      # models/dense50.keras and models/dense50.mnw
    python tools/train.py --export-only       # mlp512: re-export the packaged .mnw from its .keras
    python tools/train.py --arch convnet      # models/mnist_convnet.keras and the packaged .mnw
    python tools/train.py --arch reader       # models/mnist_reader.keras and the packaged .mnw
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# The recipes whose models ship in the package (mnist_engine.MODELS names them): models/NAME.keras
# and python/mnist_engine/models/NAME.mnw.
PACKAGED = {"mlp512": "mnist_mlp_512x2", "convnet": "mnist_convnet", "reader": "mnist_reader"}
REFERENCE_IMAGES = 16
CALIBRATION_IMAGES = 1024  # training images that choose the hidden-neuron order (mnist_engine.unit_order)
QUICK_IMAGES = 3_000


@dataclass
class Recipe:
    summary: str
    input_scale: float  # what a uint8 pixel is multiplied by to become the model's input
    train: Callable  # (args, x_train float rows in the model's domain, y_train) -> model
    min_accuracy: float  # below this a full run does not export (a quick run always does)
    keras: bool = True
    image: bool = False  # trained on (N, 28, 28, 1) images, not rows of 784
    reject_class: Optional[int] = None  # the output that means "not a digit" (docs/FORMAT.md)


def _keras_model(keras, name: str, layers):
    return keras.Sequential([keras.Input(shape=(784,)), *layers], name=name)


def build_mlp512(keras):
    L = keras.layers
    return _keras_model(keras, "mnist_mlp_512x2", [L.Dense(512), L.Activation("relu"), L.Dropout(0.2),
                                                  L.Dense(512), L.Activation("relu"), L.Dropout(0.2),
                                                  L.Dense(10), L.Activation("softmax")])


def _fit_keras(args, model, x, y, *, epochs: int, early_stopping: bool = False, optimizer="adam",
               batch_size: int = 128, validation_split: float = 0.0, classes: int = 10):
    import keras

    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    callbacks = [keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)] if early_stopping else []
    model.fit(x, keras.utils.to_categorical(y, classes), batch_size=batch_size, epochs=1 if args.quick else epochs,
              validation_split=0.1 if early_stopping else validation_split, callbacks=callbacks, verbose=2)
    return model


def _image_model(keras, name: str, layers):
    return keras.Sequential([keras.Input(shape=(28, 28, 1)), *layers], name=name)


def build_convnet(keras, name: str = "mnist_convnet", outputs: int = 10):
    L = keras.layers
    return _image_model(keras, name, [
        L.Conv2D(32, kernel_size=(3, 3), activation="relu"), L.MaxPooling2D(pool_size=(2, 2)),
        L.Conv2D(64, kernel_size=(3, 3), activation="relu"), L.MaxPooling2D(pool_size=(2, 2)),
        L.Flatten(), L.Dropout(0.5), L.Dense(outputs, activation="softmax")])


def train_convnet(args, x, y):
    import keras

    return _fit_keras(args, build_convnet(keras), x, y, epochs=args.epochs or 15, validation_split=0.1)


READER_NEGATIVES = 12_000


def train_reader(args, x, y):
    import keras

    if str(ROOT / "tools") not in sys.path:  # tests load this file by path, without tools/ on sys.path
        sys.path.insert(0, str(ROOT / "tools"))
    from reader_data import NOT_A_DIGIT, training_set

    # x is x/255 in float32, which rounds back to the exact uint8 pixels the augmentation works on.
    pixels = np.rint(x[..., 0] * 255).astype(np.uint8)
    negatives = READER_NEGATIVES * len(x) // 60_000
    x_all, y_all = training_set(pixels, y, np.random.default_rng(args.seed), negatives)
    order = np.random.default_rng(args.seed + 1).permutation(len(x_all))  # validation_split takes the tail
    model = build_convnet(keras, "mnist_reader", NOT_A_DIGIT + 1)
    return _fit_keras(args, model, (x_all[order].astype(np.float32) / 255)[..., None], y_all[order],
                      epochs=args.epochs or 12, classes=NOT_A_DIGIT + 1)


def train_lenet5(args, x, y):
    import keras

    L = keras.layers
    model = _image_model(keras, "lenet5", [
        L.ZeroPadding2D(2), L.Conv2D(6, 5, activation="tanh"), L.AveragePooling2D(2),
        L.Conv2D(16, 5, activation="tanh"), L.AveragePooling2D(2), L.Flatten(),
        L.Dense(120, activation="tanh"), L.Dense(84, activation="tanh"), L.Dense(10, activation="softmax")])
    return _fit_keras(args, model, x, y, epochs=args.epochs or 10)


def train_torchnet(args, x, y):
    import keras

    L = keras.layers
    model = _image_model(keras, "torchnet", [
        L.Conv2D(32, 3, activation="relu"), L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
        L.Dropout(0.25), L.Flatten(), L.Dense(128, activation="relu"), L.Dropout(0.5),
        L.Dense(10, activation="softmax")])
    return _fit_keras(args, model, x, y, epochs=args.epochs or 14, batch_size=64,
                      optimizer=keras.optimizers.Adadelta(learning_rate=1.0))


def train_mlp512(args, x, y):
    import keras

    return _fit_keras(args, build_mlp512(keras), x, y, epochs=args.epochs or 5)


def train_gelu_bn(args, x, y):
    import keras

    L = keras.layers
    model = _keras_model(keras, "mnist_mlp_512x2_gelu_bn", [
        L.Dense(512), L.BatchNormalization(), L.Activation("gelu"), L.Dropout(0.2),
        L.Dense(512), L.BatchNormalization(), L.Activation("gelu"), L.Dropout(0.2),
        L.Dense(10), L.Activation("softmax")])
    return _fit_keras(args, model, x, y, epochs=args.epochs or 5)


def train_scaled(args, x, y):
    import keras

    model = keras.Sequential([keras.Input(shape=(28, 28)), keras.layers.Flatten(),
                              keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10, activation="softmax")],
                             name="scaled")
    return _fit_keras(args, model, x.reshape(-1, 28, 28), y, epochs=args.epochs or 5)


def _train_dense(name: str, widths):
    def train(args, x, y):
        import keras

        layers = [keras.layers.Dense(w, activation="relu") for w in widths]
        model = _keras_model(keras, name, layers + [keras.layers.Dense(10, activation="softmax")])
        return _fit_keras(args, model, x, y, epochs=args.epochs or 50, early_stopping=True)

    return train


def train_sklearn(args, x, y):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    mlp = MLPClassifier(hidden_layer_sizes=(100, 50, 25), activation="relu", learning_rate="adaptive",
                        max_iter=2 if args.quick else (args.epochs or 20), random_state=args.seed, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return mlp.fit(x, y)


RECIPES: Dict[str, Recipe] = {
    "mlp512": Recipe("the bundled default (512-512, Dropout 0.2, x/255)", 1 / 255, train_mlp512, 0.975),
    "scaled": Recipe("Flatten-Dense(128)-Dense(10) on x/255", 1 / 255, train_scaled, 0.97),
    "sklearn": Recipe("MLPClassifier (100, 50, 25) relu, adaptive, 20 iterations, x/255", 1 / 255, train_sklearn,
                      0.96, keras=False),
    "dense50": Recipe("Dense 50-50-10, EarlyStopping, raw 0..255 rows", 1.0, _train_dense("dense50", [50, 50]), 0.93),
    "dense75x4": Recipe("Dense 75 x4, EarlyStopping, raw 0..255 rows", 1.0, _train_dense("dense75x4", [75] * 4), 0.93),
    "gelu_bn": Recipe("512-512 with BatchNormalization and gelu, x/255", 1 / 255, train_gelu_bn, 0.975),
    "convnet": Recipe("keras-io's Simple MNIST convnet, x/255", 1 / 255, train_convnet, 0.985, image=True),
    "reader": Recipe("the convnet with an 11th output, not a digit, trained on varied digits, letters and "
                     "scribbles", 1 / 255, train_reader, 0.985, image=True, reject_class=10),
    "lenet5": Recipe("LeNet-5 (tanh, average pooling), x/255", 1 / 255, train_lenet5, 0.98, image=True),
    "torchnet": Recipe("PyTorch examples/mnist Net in Keras, x/255", 1 / 255, train_torchnet, 0.985, image=True),
}


def outputs_for(args) -> tuple:
    if args.arch in PACKAGED and args.out_dir is None:
        name = PACKAGED[args.arch]
        return ROOT / "models" / f"{name}.keras", ROOT / "python" / "mnist_engine" / "models" / f"{name}.mnw"
    folder = args.out_dir or ROOT / "models"
    return folder / f"{args.arch}.keras", folder / f"{args.arch}.mnw"


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(RECIPES), default="mlp512",
                        help="the recipe: " + "; ".join(f"{k}: {r.summary}" for k, r in RECIPES.items()))
    parser.add_argument("--out-dir", type=Path, help="where to write NAME.keras and NAME.mnw (default: models/; "
                                                     "mlp512 and convnet without it write the packaged models)")
    parser.add_argument("--epochs", type=int, help="epochs (sklearn: iterations); default: the recipe's")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--quick", action="store_true", help=f"1 epoch on {QUICK_IMAGES} images (a CI smoke run)")
    parser.add_argument("--export-only", action="store_true", help="export the existing .keras again without training")
    return parser.parse_args(argv)


def train_and_export(args: argparse.Namespace):
    """Train (or load) the recipe's model and export it. Returns (model, .mnw path), or (model, None)
    when a full run misses the recipe's accuracy and nothing was exported."""
    recipe = RECIPES[args.arch]
    keras_out, mnw_out = outputs_for(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import mnist_engine
    from mnist_engine.datasets import load_mnist

    (x_train, y_train), (x_test, y_test) = load_mnist()
    if args.quick:
        x_train, y_train = x_train[:QUICK_IMAGES], y_train[:QUICK_IMAGES]
    source = f"tools/train.py --arch {args.arch} seed={args.seed}{' --quick' if args.quick else ''}"
    if recipe.keras:
        import keras
        import tensorflow as tf

        if args.export_only:
            model = keras.saving.load_model(keras_out, compile=False, safe_mode=True)
        else:
            keras.utils.set_random_seed(args.seed)
            tf.config.experimental.enable_op_determinism()
            train_in = model_input(recipe, x_train)
            model = recipe.train(args, train_in.reshape(-1, 28, 28, 1) if recipe.image else train_in, y_train)
        test_in = model_input(recipe, x_test).reshape((len(x_test),) + tuple(model.inputs[0].shape[1:]))
        accuracy = float((model.predict(test_in, verbose=0, batch_size=1000).argmax(1) == y_test).mean())
    else:
        model = recipe.train(args, model_input(recipe, x_train), y_train)
        accuracy = float((model.predict(model_input(recipe, x_test)) == y_test).mean())
    print(f"{args.arch}: test accuracy {accuracy:.4f}")
    if accuracy < recipe.min_accuracy and not args.quick:
        print(f"accuracy is below the {recipe.min_accuracy:.1%} this recipe reaches; not exporting", file=sys.stderr)
        return model, None

    mnw_out.parent.mkdir(parents=True, exist_ok=True)
    common = dict(input_scale=recipe.input_scale, reference_images=x_test[:REFERENCE_IMAGES],
                  calibration_images=x_train[:CALIBRATION_IMAGES], source=f"{source}; test accuracy {accuracy:.4f}")
    if recipe.keras:
        if not args.export_only:
            # Keep the source model without optimizer state: the parity test needs only the weights.
            keras_out.parent.mkdir(parents=True, exist_ok=True)
            plain = keras.models.clone_model(model)
            plain.set_weights(model.get_weights())
            plain.save(keras_out)
        mnist_engine.export_keras(keras_out, mnw_out, reject_class=recipe.reject_class, **common)
    else:
        mnist_engine.export_sklearn(model, mnw_out, **common)
    engine = mnist_engine.load(mnw_out)
    agree = (engine.classify(x_test) == y_test).mean()
    print(f"wrote {keras_out.name + ' and ' if recipe.keras else ''}{mnw_out}; engine accuracy {agree:.4f} "
          f"({engine.kernel})")
    return model, mnw_out


def model_input(recipe: Recipe, pixels: np.ndarray) -> np.ndarray:
    """Pixels in the recipe's input domain, as float32 rows of 784 (what the engine computes from
    uint8 input: pixel times input_scale, rounded once)."""
    from mnist_engine.reference import scale_pixels

    return scale_pixels(pixels.reshape(len(pixels), 784), recipe.input_scale)


def main(argv: Optional[list] = None) -> int:
    _, written = train_and_export(parse_args(argv))
    return 0 if written is not None else 1


if __name__ == "__main__":
    sys.exit(main())
