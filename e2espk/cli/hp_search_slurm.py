"""``hp_search_slurm.py``: the same search, with trials running in parallel as Slurm jobs (submitit).

Its --help text is ``e2espk.cli.hp_search.PARALLEL_DOC``.
"""

from e2espk.cli.hp_search import main_parallel as main

__all__ = ["main"]
