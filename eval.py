#!/usr/bin/env python
"""Score trials with a trained e2espk model. See `python eval.py --help`."""

from e2espk.cli.eval import main

if __name__ == "__main__":
    raise SystemExit(main())
