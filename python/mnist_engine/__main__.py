"""``python -m mnist_engine``: the same command line as ``mnist-engine``."""
import sys

from .cli import main

sys.exit(main())
