#!/usr/bin/env python
"""Train, test, predict with or export any zoo model: ``python train.py --help``."""
import sys

from zoo.cli import main

if __name__ == "__main__":
    sys.exit(main())
