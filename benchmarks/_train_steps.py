"""Training-step timing helpers of ``bench_training.py``.

``build_optimization`` builds model, loss, optimizer and schedule exactly as
``e2espk.training.trainer.train`` does (that function builds and runs in one go, so the
benchmark repeats its construction); the steps themselves run through the real
``train_one_epoch``.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch

from e2espk.data.corpus import Corpus
from e2espk.data.features import resolve_layout
from e2espk.training import run_setup
from e2espk.training.config import TrainConfig
from e2espk.training.loop import Optimization, to_device, train_one_epoch

Batch = dict[str, torch.Tensor]


def build_optimization(config: TrainConfig) -> tuple[Optimization, int]:
    """(Optimization on CPU, embedding-model parameter count), built by train()'s own functions
    (same param groups; the schedule spans a nominal 10,000 steps)."""
    torch.manual_seed(config.seed)
    corpus = Corpus(config.train_hdf_file)
    layout = resolve_layout(corpus, config.mode, config.feature_mode)
    model_config = config.model_config(layout)
    device = torch.device("cpu")
    model, _, loss = run_setup.model_and_loss_of(config, model_config, len(corpus.speakers), device)
    corpus.close()
    margin = config.loss.margin_schedule(10_000) if loss.margin_head else None
    opt = run_setup.build_optimization(
        dataclasses.replace(config.optim, amp="off"), model, loss, 10_000, device, margin
    )
    return opt, sum(p.numel() for p in model.parameters())


def time_steps(
    opt: Optimization, batches: Iterator[Batch], warmup: int, steps: int
) -> dict[str, Any]:
    """Steps/s of ``train_one_epoch`` over ``steps`` batches after ``warmup`` untimed ones.

    With a DataLoader iterator, its start-up and first batches fall in the warm-up.
    """
    generator = torch.Generator().manual_seed(0)
    begin = time.perf_counter()
    train_one_epoch(opt, itertools.islice(batches, warmup), None, generator)
    warm = time.perf_counter() - begin
    begin = time.perf_counter()
    stats = train_one_epoch(opt, itertools.islice(batches, steps), None, generator)
    elapsed = time.perf_counter() - begin
    assert stats["steps"] == steps, stats
    return {
        "steps": steps,
        "seconds": elapsed,
        "steps_per_s": steps / elapsed,
        "seconds_per_step": elapsed / steps,
        "crops_per_s": steps * 64 / elapsed,
        "warmup_s": warm,
    }


def _detached(x: torch.Tensor) -> torch.Tensor:
    return x.detach().requires_grad_(True)


def staged_step_times(opt: Optimization, batches: list[Batch], n: int) -> dict[str, Any]:
    """Forward and backward time of each model part, from steps cut at the part boundaries.

    Each part's output is detached and fed to the next part as a leaf, then the backward runs
    part by part from the loss down with the gradient of the cut; the arithmetic is that of a
    normal step (the cuts only add a few tensor copies). Fusion-mode models only.
    """
    model, device = opt.model, opt.device
    assert model.fusion is not None, "staged timing covers fusion-mode models"
    generator = torch.Generator().manual_seed(0)
    parts = [
        "input to float32",
        "ptm encoder",
        "handcrafted encoder",
        "fusion",
        "backbone",
        "pooling + embedding",
        "loss (AAM + verifier)",
    ]
    forward: dict[str, list[float]] = {name: [] for name in parts}
    backward: dict[str, list[float]] = {name: [] for name in parts}
    optimizer_s: list[float] = []
    model.train()
    opt.loss.train()
    params = [p for group in opt.optimizer.param_groups for p in group["params"]]
    for k in range(n + 1):  # the first step is a warm-up
        batch = batches[k % len(batches)]
        marks = [time.perf_counter()]
        inputs = to_device(batch, device)  # float16 PTM -> float32, as train_one_epoch does
        labels = batch["label"].to(device)
        marks.append(time.perf_counter())
        p = model.ptm_encoder(inputs["ptm"])
        marks.append(time.perf_counter())
        h = model.handcrafted_encoder(inputs["handcrafted"])
        marks.append(time.perf_counter())
        p_in, h_in = _detached(p), _detached(h)
        f = model.fusion(p_in, h_in)
        marks.append(time.perf_counter())
        f_in = _detached(f)
        b = model.backbone(f_in)
        marks.append(time.perf_counter())
        b_in = _detached(b)
        e = model.embedding(model.pooling(b_in))
        marks.append(time.perf_counter())
        e_in = _detached(e)
        loss, _ = opt.loss(e_in, labels, generator)
        marks.append(time.perf_counter())
        opt.optimizer.zero_grad(set_to_none=True)
        back = [time.perf_counter()]
        loss.backward()
        back.append(time.perf_counter())
        e.backward(e_in.grad)
        back.append(time.perf_counter())
        b.backward(b_in.grad)
        back.append(time.perf_counter())
        f.backward(f_in.grad)
        back.append(time.perf_counter())
        h.backward(h_in.grad)
        back.append(time.perf_counter())
        p.backward(p_in.grad)
        back.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(params, opt.max_gnorm)
        opt.optimizer.step()
        done = time.perf_counter()
        if k == 0:
            continue
        for i, name in enumerate(parts):
            forward[name].append(marks[i + 1] - marks[i])
        for i, name in enumerate(reversed(parts[1:])):
            backward[name].append(back[i + 1] - back[i])
        backward["input to float32"].append(0.0)
        optimizer_s.append(done - back[-1])
    # medians over the steps: robust to a step slowed down by another process
    fwd = {name: statistics.median(v) for name, v in forward.items()}
    bwd = {name: statistics.median(v) for name, v in backward.items()}
    per_step = {name: fwd[name] + bwd[name] for name in parts}
    per_step["optimizer (clip + Adam)"] = statistics.median(optimizer_s)
    total = sum(per_step.values())
    return {
        "steps": n,
        "total_s": total,
        "per_step_s": per_step,
        "forward_s": fwd,
        "backward_s": bwd,
        "share": {name: v / total for name, v in per_step.items()},
    }


def profile_ops(opt: Optimization, batches: list[Batch], n: int) -> list[dict[str, Any]]:
    """Top torch ops by self CPU time over ``n`` in-memory steps of ``train_one_epoch``."""
    from torch.profiler import ProfilerActivity, profile

    generator = torch.Generator().manual_seed(0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_one_epoch(opt, itertools.islice(itertools.cycle(batches), n), None, generator)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    return [
        {
            "name": e.key,
            "self_cpu_s_per_step": e.self_cpu_time_total / 1e6 / n,
            "share": e.self_cpu_time_total / total,
            "calls_per_step": e.count / n,
        }
        for e in top
    ]
