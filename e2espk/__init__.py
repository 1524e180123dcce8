"""e2espk: speaker verification trained end to end on precomputed speech features."""

__version__ = "0.1.0"
