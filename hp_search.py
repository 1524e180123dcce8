#!/usr/bin/env python
"""Serial hyperparameter search over train.py. See `python hp_search.py --help`."""

from e2espk.cli.hp_search import main

if __name__ == "__main__":
    raise SystemExit(main())
