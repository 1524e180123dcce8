#!/usr/bin/env python
"""Train a speaker-verification model on an e2espk corpus. See `python train.py --help`."""

from e2espk.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
