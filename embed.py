#!/usr/bin/env python
"""Export embeddings from a trained e2espk model. See `python embed.py --help`."""

from e2espk.cli.embed import main

if __name__ == "__main__":
    raise SystemExit(main())
