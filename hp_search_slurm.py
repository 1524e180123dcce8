#!/usr/bin/env python
"""Parallel hyperparameter search on Slurm (or --cluster local). See `python hp_search_slurm.py --help`."""

from e2espk.cli.hp_search_slurm import main

if __name__ == "__main__":
    raise SystemExit(main())
