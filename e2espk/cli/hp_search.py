"""``hp_search.py``: serial hyperparameter search with nevergrad; each trial is a real train.py run.

Takes every train.py flag: the ones you give are fixed for all trials and leave the space.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from e2espk.cli.common import setup_logging, user_errors_exit_cleanly
from e2espk.cluster.executors import ClusterOptions, submitit_executor
from e2espk.config import (
    build_parser,
    config_to_dict,
    from_flat,
    option,
    option_names,
    parse_explicit,
    part,
    save_config,
)
from e2espk.errors import ConfigError
from e2espk.search import report
from e2espk.search.constraints import corpus_limits
from e2espk.search.driver import SearchSetup, check_optimizer_name, run_search
from e2espk.search.executors import InlineExecutor
from e2espk.search.space import build_space
from e2espk.slurm_resources import SlurmResources
from e2espk.training.config import SCORE_METRIC_HELP, TrainConfig, check_score_metric

LOG = logging.getLogger("e2espk.hp_search")
PARALLEL_DOC = """``hp_search_slurm.py``: the hyperparameter search with trials in parallel as Slurm jobs.

The same nevergrad search as hp_search.py, with --hp-workers trials at a time, each a submitit
job on a Slurm cluster (--cluster slurm, the default; resources per job below) or a process on
this machine (--cluster local). Before the first job, --partition and --gpus-per-node are
checked against `sinfo`. --gpus-per-trial (or --tasks-per-trial on CPUs) makes each trial
one distributed job of that many ranks. No cluster at hand: try it on the project's
single-node one with `bash scripts/slurm_local.sh up`. Takes every train.py flag: the ones
you give are fixed for all trials and leave the space.
"""


@dataclasses.dataclass
class SearchOptions:
    """Options of the search itself (train.py flags configure the trials)."""

    budget: int = option(20, help="number of trials")
    search_dir: str = option(
        "search",
        help="search directory: state, trials.jsonl, trial runs, best config; rerun with the same one to resume",
    )
    search_optimizer: str = option(
        "NGOpt",
        help="nevergrad optimizer by name (NGOpt, TwoPointsDE, RandomSearch, OnePlusOne, CMA, ...)",
    )
    objective: str = option(
        "fused/eer",
        help=f"minimised: best validation {SCORE_METRIC_HELP} of a trial",
    )
    failure_penalty: float = option(1.0, help="value told to the optimizer for a failed trial")
    space_file: str | None = option(
        None, help="YAML of ranges overriding the default space (see e2espk/search/space.py)"
    )
    search_params: list[str] = option(
        default_factory=list,
        help="search only these options (default: every searchable option not fixed)",
    )
    search_costly_backbones: bool = option(
        False,
        help="also search the costly backbones (full ecapa_tdnn, resnet; seconds per step on a CPU); by default the space holds the cheap ones",
    )
    search_seed: int = option(0, help="seed of the optimizer")
    trial_seeds: int = option(
        1,
        help="train each trial with this many seeds (--seed, --seed + 1, ...) and tell the "
        "optimizer their mean: a steadier objective on a small validation set, at that many "
        "times the cost",
    )
    threads_per_trial: int | None = option(
        None, help="torch threads in each trial (default: torch's)"
    )


@dataclasses.dataclass
class ParallelOptions(SearchOptions):
    """Search options plus where and how the trial jobs run."""

    hp_workers: int = option(4, help="trials running at once")
    cluster: str = option(
        "slurm",
        choices=["slurm", "local"],
        help="slurm: Slurm jobs via submitit; local: subprocesses on this machine",
    )
    resources: SlurmResources = part(
        SlurmResources,
        "Slurm resources of each trial job (with --cluster slurm); --gpus-per-node gives a "
        "trial of one process GPUs, --gpus-per-trial makes a trial a distributed run instead",
    )
    gpus_per_trial: int | None = option(
        None,
        help="GPUs of each trial, one rank each (DDP, NCCL): a trial is one distributed job "
        "of --nodes-per-trial nodes with gpus/nodes GPUs and ranks on each",
    )
    nodes_per_trial: int = option(1, help="nodes of each trial job (distributed trials)")
    tasks_per_trial: int | None = option(
        None,
        help="ranks of each trial on CPUs (gloo; default 1, or --gpus-per-trial), spread "
        "evenly over --nodes-per-trial",
    )
    poll_seconds: float = option(2.0, help="seconds between job status checks")


def trial_ranks(options: ParallelOptions) -> tuple[int, int, int]:
    """(nodes, ranks per node, GPUs per node) of each trial job.

    Raises:
        ConfigError: GPUs or ranks that do not spread evenly over the nodes, or two ways of
            giving GPUs at once.
    """
    nodes, gpus, tasks = options.nodes_per_trial, options.gpus_per_trial, options.tasks_per_trial
    if nodes < 1:
        raise ConfigError(f"--nodes-per-trial must be >= 1, got {nodes}")
    if gpus is not None and options.resources.gpus_per_node:
        raise ConfigError(
            "--gpus-per-node (one process) and --gpus-per-trial (one rank per GPU): give one"
        )
    if gpus is not None and tasks is not None and tasks != gpus:
        raise ConfigError(
            f"--tasks-per-trial {tasks} with --gpus-per-trial {gpus}: a distributed trial has "
            "one rank per GPU (leave --tasks-per-trial out)"
        )
    ranks = gpus if gpus is not None else (tasks if tasks is not None else nodes)
    if ranks < 1 or ranks % nodes:
        flag = "--gpus-per-trial" if gpus is not None else "--tasks-per-trial"
        raise ConfigError(
            f"{flag} {ranks} over --nodes-per-trial {nodes}: give a positive multiple of the "
            "nodes (the same number of ranks on each node)"
        )
    per_node = ranks // nodes
    return nodes, per_node, per_node if gpus is not None else options.resources.gpus_per_node


def parse(
    options_cls: type, argv: Sequence[str] | None, prog: str, description: str | None = None
) -> tuple[Any, TrainConfig, set[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(
        options_cls, description or __doc__ or "", prog, config_flag=False, add_help=False
    )
    if "-h" in argv or "--help" in argv:
        print(parser.format_help())
        print("\nTrial options: every train.py flag (python train.py --help).")
        raise SystemExit(0)
    namespace, rest = parser.parse_known_args(argv)
    options: Any = from_flat(
        options_cls, {name: getattr(namespace, name) for name in option_names(options_cls)}
    )
    train_config, explicit = parse_explicit(
        TrainConfig, rest, "trial options (train.py flags)", prog
    )
    check_score_metric(options.objective, "--objective")
    if not train_config.valid_hdf_file:
        raise ConfigError(
            "a search needs --valid-hdf-file: trials are compared on validation metrics"
        )
    # a bad fixed option fails here, once, rather than in every trial (trials select on the objective)
    train_config.replace(select_metric=options.objective).validate()
    return options, train_config, explicit


def print_failure(record: dict[str, Any]) -> None:
    """One console line per failed trial, with its reason (the full error is in trials.jsonl)."""
    line = report.failure_line(record)
    if line:
        tqdm.write(line, file=sys.stderr)


def finish(setup: SearchSetup, state_records: list[dict[str, Any]], penalty: float) -> int:
    print(report.summary_table(state_records, setup.objective))
    plot = report.plot_objective(setup.search_dir, state_records, setup.objective, penalty)
    best = report.write_best(setup.search_dir, state_records, setup.base_config)
    print(
        f"trials: {setup.search_dir / 'trials.jsonl'}  plot: {plot}  TensorBoard HParams: {setup.search_dir / 'tb'}"
    )
    if best is None:
        print("no trial succeeded")
        return 1
    print(f"best config: {best[0]}\nretrain it:  {best[1]}")
    return 0


@dataclasses.dataclass
class TrialExecution:
    """Where and how the trials run: the executor, its kind, how many at once, how often
    they are polled, and the ranks of each (1: a trial is one process)."""

    executor: Any
    cluster: str = "inline"  # inline | local | slurm
    workers: int = 1
    poll_seconds: float = 0.0
    ranks: int = 1


def setup_search(
    options: SearchOptions, train_config: TrainConfig, explicit: set[str], trials: TrialExecution
) -> SearchSetup:
    if options.trial_seeds < 1:
        raise ConfigError(f"--trial-seeds must be >= 1, got {options.trial_seeds}")
    base = config_to_dict(train_config)
    if options.threads_per_trial:
        base["threads"] = (
            options.threads_per_trial
        )  # recorded, so best_config.yaml reproduces the trial
    space = build_space(  # before the search dir exists: a space that cannot work leaves nothing
        explicit,
        options.space_file,
        options.search_params or None,
        base,
        dataclasses.replace(
            corpus_limits(train_config.train_hdf_file, train_config.valid_hdf_file),
            ranks=trials.ranks,
        ),
        options.search_costly_backbones,
    )
    check_optimizer_name(options.search_optimizer)  # like the space, before the dir is made
    search_dir = Path(options.search_dir)
    search_dir.mkdir(parents=True, exist_ok=True)
    save_config(options, search_dir / "search_options.yaml")
    return SearchSetup(
        search_dir=search_dir,
        space=space,
        base_config=base,
        objective=options.objective,
        optimizer_name=options.search_optimizer,
        budget=options.budget,
        workers=trials.workers,
        failure_penalty=options.failure_penalty,
        executor=trials.executor,
        cluster=trials.cluster,
        poll_seconds=trials.poll_seconds,
        progress=train_config.progress,
        seed=options.search_seed,
        tasks_per_trial=trials.ranks,
        trial_seeds=options.trial_seeds,
    )


@user_errors_exit_cleanly
def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    options, train_config, explicit = parse(SearchOptions, argv, "hp_search.py")
    setup = setup_search(options, train_config, explicit, TrialExecution(InlineExecutor()))
    state = run_search(setup, on_record=print_failure)
    return finish(setup, state.records, options.failure_penalty)


@user_errors_exit_cleanly
def main_parallel(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    options, train_config, explicit = parse(
        ParallelOptions, argv, "hp_search_slurm.py", PARALLEL_DOC
    )
    nodes, tasks_per_node, gpus_per_node = trial_ranks(options)
    resources = {**options.resources.as_kwargs(), "gpus_per_node": gpus_per_node}
    cluster = ClusterOptions(
        cluster=options.cluster, nodes=nodes, tasks_per_node=tasks_per_node, **resources
    )
    executor = submitit_executor(Path(options.search_dir) / "jobs", cluster)
    if options.threads_per_trial is None:
        options.threads_per_trial = options.resources.cpus_per_task
    trials = TrialExecution(
        executor, options.cluster, options.hp_workers, options.poll_seconds, cluster.ranks
    )
    setup = setup_search(options, train_config, explicit, trials)
    state = run_search(setup, on_record=print_failure)
    return finish(setup, state.records, options.failure_penalty)
