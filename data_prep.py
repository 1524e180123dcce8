#!/usr/bin/env python
"""Pack precomputed features into an e2espk HDF5 corpus. See `python data_prep.py --help`."""

from e2espk.cli.data_prep import main

if __name__ == "__main__":
    raise SystemExit(main())
