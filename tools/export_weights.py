#!/usr/bin/env python3
"""Export a Keras model to the mnist_engine format: python tools/export_weights.py MODEL.keras OUT.mnw

A thin wrapper over ``mnist-engine export`` (mnist_engine.export_keras); run with --help for options."""
import sys

from mnist_engine.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
