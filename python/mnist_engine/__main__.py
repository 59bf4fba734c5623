"""``python -m mnist_engine``: the same command line as ``mnist-engine``."""
import sys

from .cli import main

if __name__ == "__main__":  # not when a spawned worker process imports it
    sys.exit(main())
