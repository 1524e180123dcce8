"""devbench: a reproducible real-audio dev benchmark for speaker verification on unseen speakers.

Placeholder docstring; see README.md.
"""
