#!/usr/bin/env python3
"""Train the bundled default model and export it.

Architecture and recipe of the reference notebook: Dense(512)+Activation('relu')+Dropout(0.2)
twice, then Dense(10)+Activation('softmax'); adam, categorical cross-entropy, batch 128, 5 epochs,
on the 60k training images scaled by 1/255. Seeds are fixed and op determinism is on, so a rerun on
the same TensorFlow build gives the same weights.

    python tools/train.py                 # writes models/mnist_mlp_512x2.keras and the packaged .mnw
    python tools/train.py --export-only   # re-exports the packaged .mnw from the existing .keras
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_KERAS = ROOT / "models" / "mnist_mlp_512x2.keras"
DEFAULT_MNW = ROOT / "python" / "mnist_engine" / "models" / "mnist_mlp_512x2.mnw"
REFERENCE_IMAGES = 16
CALIBRATION_IMAGES = 1024  # training images that choose the hidden-neuron order (mnist_engine.unit_order)


def build_model(keras):
    return keras.Sequential([
        keras.Input(shape=(784,)),
        keras.layers.Dense(512), keras.layers.Activation("relu"), keras.layers.Dropout(0.2),
        keras.layers.Dense(512), keras.layers.Activation("relu"), keras.layers.Dropout(0.2),
        keras.layers.Dense(10), keras.layers.Activation("softmax"),
    ], name="mnist_mlp_512x2")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keras-out", type=Path, default=DEFAULT_KERAS)
    parser.add_argument("--out", type=Path, default=DEFAULT_MNW)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--export-only", action="store_true", help="export --keras-out again without training")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    import mnist_engine
    from mnist_engine.datasets import load_mnist

    (x_train, y_train), (x_test, y_test) = load_mnist()
    to_input = lambda x: x.reshape(len(x), 784).astype("float32") / 255  # noqa: E731
    if args.export_only:
        model = keras.saving.load_model(args.keras_out, compile=False, safe_mode=True)
        accuracy = float((model.predict(to_input(x_test), verbose=0).argmax(1) == y_test).mean())
    else:
        keras.utils.set_random_seed(args.seed)
        tf.config.experimental.enable_op_determinism()
        model = build_model(keras)
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        model.fit(to_input(x_train), keras.utils.to_categorical(y_train, 10), batch_size=128, epochs=args.epochs,
                  verbose=2)
        _, accuracy = model.evaluate(to_input(x_test), keras.utils.to_categorical(y_test, 10), verbose=0)
    print(f"test accuracy: {accuracy:.4f}")
    if accuracy < 0.975:
        print("accuracy is below the 97.5% the bundled model must reach; not exporting", file=sys.stderr)
        return 1

    if not args.export_only:
        # Keep the source model without optimizer state: the parity test needs only the weights.
        args.keras_out.parent.mkdir(parents=True, exist_ok=True)
        plain = build_model(keras)
        plain.set_weights(model.get_weights())
        plain.save(args.keras_out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    mnist_engine.export_keras(args.keras_out, args.out, input_scale=1 / 255,
                              reference_images=x_test[:REFERENCE_IMAGES],
                              calibration_images=x_train[:CALIBRATION_IMAGES],
                              source=f"tools/train.py seed={args.seed} epochs={args.epochs}; "
                                     f"test accuracy {accuracy:.4f}")
    engine = mnist_engine.load(args.out)
    agree = (engine.classify(x_test) == y_test).mean()
    print(f"wrote {args.keras_out} and {args.out}; engine accuracy {agree:.4f} ({engine.kernel})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
