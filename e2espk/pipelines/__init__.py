"""The whole pipelines of eval.py and embed.py: opening corpora, back-ends, writing results.

The commands in ``e2espk.cli`` parse options and print; the work happens here, on top of the
inference layer (``e2espk.inference``) and pure scoring (``e2espk.scoring``).
"""
