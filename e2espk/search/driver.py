"""The search loop: ask nevergrad for configurations, run them on an executor, tell the results.

Up to ``hp_workers`` trials run at once. After every submission and every result the whole
search state (the optimizer, the trials in flight with their job ids, every trial record) is
written atomically to ``SEARCH_DIR/search_state.json`` and ``trials.jsonl`` is rewritten, so a killed
search restarted on the same directory loses no finished trial, runs none twice, and follows
jobs still running on the cluster instead of resubmitting them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nevergrad as ng

from e2espk import interrupts
from e2espk.errors import ConfigError
from e2espk.fileio import write_json_atomic
from e2espk.progress import progress_bar
from e2espk.search import report
from e2espk.search.executors import reattach
from e2espk.search.objective import TrialOutcome, TrialRunner
from e2espk.search.space import plain
from e2espk.training.config import TrainConfig

LOG = logging.getLogger(__name__)
STATE_VERSION = 1
STATE_FILE = "search_state.json"


@dataclasses.dataclass
class Pending:
    """A trial in flight."""

    trial: int
    hyperparameters: dict[str, Any]
    config: dict[str, Any]
    job_id: str
    submitted_at: float


@dataclasses.dataclass
class SearchState:
    """Everything a search must not lose, as JSON: the ask/tell history, trials in flight, records.

    The optimizer itself is not pickled (nevergrad's scipy-based optimizers cannot be restored
    reliably that way): it is rebuilt with the same seed and the asks and tells are replayed in
    their original order, which reproduces its state exactly.
    """

    space_names: list[str]
    objective: str
    events: list[list[Any]] = dataclasses.field(
        default_factory=list
    )  # ["ask", trial, hp] / ["tell", trial, value]
    pending: dict[int, Pending] = dataclasses.field(default_factory=dict)
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    next_trial: int = 0
    version: int = STATE_VERSION
    trial_seeds: int = 1  # training seeds each trial's value is the mean over

    def save(self, path: Path) -> None:
        payload = dataclasses.asdict(self)
        payload["pending"] = {str(k): v for k, v in payload["pending"].items()}
        write_json_atomic(path, payload)

    @staticmethod
    def load(path: Path) -> SearchState:
        try:
            payload = json.loads(path.read_text())
            payload["pending"] = {int(k): Pending(**v) for k, v in payload["pending"].items()}
            return SearchState(**payload).with_current_names()
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise ConfigError(
                f"{path}: cannot read the search state ({error}); move it away to start a new search"
            ) from None

    def with_current_names(self) -> SearchState:
        """The state of a search begun before a train.py option was renamed, with the option
        under its current name everywhere (its trials are then the same trials)."""
        rename = TrainConfig.upgrade_keys
        self.space_names = sorted(rename(dict.fromkeys(self.space_names)))
        self.events = [
            [kind, trial, rename(payload) if kind == "ask" else payload]
            for kind, trial, payload in self.events
        ]
        for pending in self.pending.values():
            pending.hyperparameters = rename(pending.hyperparameters)
            pending.config = rename(pending.config)
        for record in self.records:
            record["hyperparameters"] = rename(record["hyperparameters"])
        return self


@dataclasses.dataclass
class SearchSetup:
    """Everything the loop needs, built by the CLI."""

    search_dir: Path
    space: ng.p.Dict
    base_config: dict[str, Any]  # train options shared by all trials
    objective: str  # SCORE/METRIC, lower is better
    optimizer_name: str
    budget: int
    workers: int
    failure_penalty: float
    executor: Any  # has submit(fn, *args)
    cluster: str  # inline | local | slurm (for re-attaching jobs)
    tasks_per_trial: int = 1  # ranks of each trial job (for re-attaching jobs)
    poll_seconds: float = 2.0
    progress: bool = True
    seed: int = 0
    trial_seeds: int = 1  # each trial trains this many seeds; its value is their mean


def check_optimizer_name(name: str) -> None:
    """Refuse an optimizer nevergrad does not have, naming similar ones."""
    if name not in ng.optimizers.registry:
        close = sorted(n for n in ng.optimizers.registry if n.lower().startswith(name[:3].lower()))[
            :10
        ]
        raise ConfigError(
            f"unknown nevergrad optimizer {name!r}; e.g. NGOpt, TwoPointsDE, RandomSearch, OnePlusOne, CMA{'; similar: ' + ', '.join(close) if close else ''}"
        )


def make_optimizer(setup: SearchSetup) -> Any:
    check_optimizer_name(setup.optimizer_name)
    setup.space.random_state.seed(setup.seed)
    optimizer = ng.optimizers.registry[setup.optimizer_name](
        parametrization=setup.space, budget=setup.budget, num_workers=setup.workers
    )
    return optimizer


def load_or_create(setup: SearchSetup) -> SearchState:
    path = setup.search_dir / STATE_FILE
    names = sorted(setup.space.value)
    if not path.exists():
        return SearchState(names, setup.objective, trial_seeds=setup.trial_seeds)
    state = SearchState.load(path)
    if state.space_names != names or state.objective != setup.objective:
        raise ConfigError(
            f"{path} holds a search over {state.space_names} for {state.objective}; this command searches {names} for {setup.objective}. Use another --search-dir"
        )
    if state.trial_seeds != setup.trial_seeds:
        raise ConfigError(
            f"{path} holds a search whose trials average {state.trial_seeds} seed(s); this command asks for --trial-seeds {setup.trial_seeds}. Use the same value, or another --search-dir"
        )
    LOG.info(
        "resuming search in %s: %d trials done, %d in flight",
        setup.search_dir,
        len(state.records),
        len(state.pending),
    )
    return state


def replay(optimizer: Any, events: list[list[Any]]) -> dict[Any, Any]:
    """Replay asks and tells; returns the candidates of trials still in flight.

    A replayed ask must give the recorded point. If the optimizer is not deterministic, the
    recorded point is told as a point the optimizer did not ask for (nevergrad supports this for
    most optimizers) so no result is lost.
    """
    candidates: dict[Any, Any] = {}
    exact = True
    for kind, trial, payload in events:
        if kind == "ask":
            candidate = optimizer.ask() if exact else None
            if candidate is None or {k: plain(v) for k, v in candidate.value.items()} != payload:
                if exact:
                    LOG.warning(
                        "optimizer replay diverged at trial %d; telling recorded points instead",
                        trial,
                    )
                exact = False
                candidate = optimizer.parametrization.spawn_child(new_value=payload)
            candidates[trial] = candidate
        else:
            try:
                optimizer.tell(candidates.pop(trial), payload)
            except Exception as error:  # an optimizer that cannot take unasked points
                LOG.warning("optimizer could not take trial %d's result (%s)", trial, error)
    return candidates


def failure_status(error: BaseException) -> str:
    """A short status for a failed trial, from what submitit/Slurm reported."""
    text = str(error)
    for marker, status in (
        ("CANCELLED", "cancelled"),
        ("TIMEOUT", "timeout"),
        ("timed-out", "timeout"),
        ("OUT_OF_MEMORY", "out_of_memory"),
        ("OutOfMemory", "out_of_memory"),
        ("NODE_FAIL", "node_fail"),
    ):
        if marker in text:
            return status
    return "failed"


def collect(pending: Pending, job: Any, penalty: float) -> tuple[dict[str, Any], float]:
    """The trial record and the value to tell the optimizer (the penalty for failures)."""
    record: dict[str, Any] = {
        "trial": pending.trial,
        "hyperparameters": pending.hyperparameters,
        "job_id": pending.job_id,
        "run_dir": pending.config["checkpoint_path"],
        "submitted_at": pending.submitted_at,
        "done_seen_at": time.time(),  # when the driver saw the job finish
    }
    try:
        outcome: TrialOutcome = job.result()
    except Exception as error:
        record |= {
            "status": failure_status(error),
            "value": None,
            "error": f"{type(error).__name__}: {error}"[-2000:],
            "duration_s": time.time() - pending.submitted_at,
        }
        return record, penalty
    record |= {
        "status": "ok",
        "value": outcome.value,
        "metrics": outcome.metrics,
        "best_epoch": outcome.best_epoch,
        "epochs_run": outcome.epochs_run,
        "duration_s": outcome.duration_s,
        "restarts": outcome.restarts,
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
    }
    return record, outcome.value


MAX_REPEATED_ASKS = 20


def ask_new_point(state: SearchState, optimizer: Any) -> tuple[Any, dict[str, Any]]:
    """Ask for a point no trial has finished yet (many optimizers re-propose points).

    A repeated point is told its known value at once, without training again; the exchange is
    logged like any other so that replaying the history rebuilds the same optimizer.
    """
    known = {
        json.dumps(r["hyperparameters"], sort_keys=True): r
        for r in state.records
        if r["status"] == "ok"
    }
    for attempt in range(MAX_REPEATED_ASKS):
        candidate = optimizer.ask()
        hyperparameters = {name: plain(value) for name, value in candidate.value.items()}
        previous = known.get(json.dumps(hyperparameters, sort_keys=True))
        if previous is None or attempt == MAX_REPEATED_ASKS - 1:
            return candidate, hyperparameters
        repeat = f"repeat-{len(state.events)}"
        optimizer.tell(candidate, previous["value"])
        state.events += [["ask", repeat, hyperparameters], ["tell", repeat, previous["value"]]]
        LOG.info("optimizer re-proposed trial %d's point; told its value again", previous["trial"])
    raise AssertionError("unreachable")


def submit(
    setup: SearchSetup,
    state: SearchState,
    optimizer: Any,
    candidates: dict[int, Any],
    runner: TrialRunner,
) -> Any:
    candidate, hyperparameters = ask_new_point(state, optimizer)
    trial = state.next_trial
    state.next_trial += 1
    config = (
        setup.base_config
        | hyperparameters
        | {"checkpoint_path": str(setup.search_dir / "trials" / f"trial_{trial:03d}")}
    )
    state.events.append(["ask", trial, hyperparameters])
    job = setup.executor.submit(runner, config, setup.objective, setup.trial_seeds)
    state.pending[trial] = Pending(trial, hyperparameters, config, str(job.job_id), time.time())
    candidates[trial] = candidate
    return job


def stop_optimizer_threads(before: set[threading.Thread]) -> None:
    """Stop the helper threads nevergrad's recast optimizers (e.g. COBYLA inside NGOpt) started.

    They are non-daemon and only stopped when their optimizer is garbage-collected, so a process
    that still holds the optimizer would otherwise hang at exit.
    """
    for thread in set(threading.enumerate()) - before:
        stop = getattr(thread, "stop", None)
        if type(thread).__name__ == "_MessagingThread" and callable(stop):
            stop()


def follow_pending(setup: SearchSetup, state: SearchState, runner: TrialRunner) -> dict[int, Any]:
    """The jobs of the trials an earlier process left running (a resumed search): followed
    where they can be, submitted again where not (their training resumes from last.pt)."""
    jobs: dict[int, Any] = {}
    for trial, pending in list(state.pending.items()):
        job = reattach(
            setup.cluster, setup.search_dir / "jobs", pending.job_id, setup.tasks_per_trial
        )
        if job is None:
            job = setup.executor.submit(runner, pending.config, setup.objective, setup.trial_seeds)
            pending.job_id = str(job.job_id)
        jobs[trial] = job
    state.save(setup.search_dir / STATE_FILE)
    return jobs


def run_search(
    setup: SearchSetup, on_record: Callable[[dict[str, Any]], None] | None = None
) -> SearchState:
    """Run (or resume) the search until ``budget`` trials have finished."""
    threads_before = set(threading.enumerate())
    setup.search_dir.mkdir(parents=True, exist_ok=True)
    state = load_or_create(setup)
    optimizer = make_optimizer(setup)
    candidates = replay(optimizer, state.events)
    runner = TrialRunner()
    jobs = follow_pending(setup, state, runner)
    bar = progress_bar(
        total=setup.budget,
        initial=len(state.records),
        desc="search",
        unit="trial",
        enabled=setup.progress,
    )
    try:
        while len(state.records) < setup.budget:
            interrupts.check()  # stopped: the state on disk lets a rerun follow running jobs
            while (
                len(state.pending) < setup.workers
                and len(state.records) + len(state.pending) < setup.budget
            ):
                job = submit(setup, state, optimizer, candidates, runner)
                jobs[state.next_trial - 1] = job
                state.save(setup.search_dir / STATE_FILE)
            finished = [trial for trial, job in jobs.items() if job.done()]
            for trial in finished:
                pending = state.pending.pop(trial)
                record, value = collect(pending, jobs.pop(trial), setup.failure_penalty)
                optimizer.tell(candidates.pop(trial), value)
                state.events.append(["tell", trial, value])
                state.records.append(record)
                state.save(setup.search_dir / STATE_FILE)
                report.write_records(setup.search_dir, state.records)
                report.log_hparams(setup.search_dir, record, setup.objective)
                if on_record:
                    on_record(record)
                bar.update(1)
                best = report.best_record(state.records)
                bar.set_postfix(
                    best=f"{best['value']:.4f}" if best else "-",
                    failed=sum(r["status"] != "ok" for r in state.records),
                )
            if not finished:
                time.sleep(setup.poll_seconds)
    except interrupts.Interrupted as stop:
        LOG.warning(
            "search %s with %d of %d trials done; rerun the same command to continue "
            "(trial jobs already submitted keep running and are followed)",
            stop, len(state.records), setup.budget,
        )  # fmt: skip
        raise
    finally:
        bar.close()
        stop_optimizer_threads(threads_before)
    return state
