"""Build the devbench corpus: ``python benchmarks/devbench/build.py --out DIR [--jobs 2] [--small]``.

Phases (each timed into ``DIR/meta.json``): plan -> synthesis -> channel + features -> packing
with the project's own ``data_prep`` -> trials -> sanity EERs. Outputs::

    DIR/hdf/dev_train.hdf, dev_valid.hdf, dev_test.hdf   e2espk corpora (ptm, mfbe, mfcc, pitch)
    DIR/hdf/dev_heldout.hdf                              validation speakers of unseen families
    DIR/trials/test.txt, valid.txt, heldout.txt          Kaldi trials
    DIR/meta.json                                        plan, counts, timings, versions, EERs
    DIR/samples/<split>/*.flac                           first utterance of every speaker
    DIR/READY                                            written last, with a short summary

The intermediate ``DIR/work`` (clean speech, per-utterance .npy features) is removed after a
successful build unless ``--keep-work``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "benchmarks"):  # this checkout's e2espk, and the devbench package
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import numpy as np  # noqa: E402

from devbench import pipeline, sanity, trials  # noqa: E402
from devbench import plan as P  # noqa: E402
from devbench.meta import package_versions  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output directory (outside the repo)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--small", action="store_true", help="12 speakers x 4 utterances smoke test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-work", action="store_true", help="keep DIR/work (clean wavs, .npy)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing build in --out")
    return ap.parse_args(argv)


def pack(out: Path, work: Path, split: str) -> None:
    """Pack one split's ``files`` trees into ``DIR/hdf/dev_<split>.hdf`` with data_prep."""
    from e2espk.cli.data_prep import main as data_prep

    feats = work / "feats"
    argv = [
        "--ptm",
        f"files:{feats / 'ptm' / split}",
        "--ptm-model",
        "resemblyzer-voice-encoder-lstm3",
        "--mfbe",
        f"files:{feats / 'mfbe' / split}",
        "--mfcc",
        f"files:{feats / 'mfcc' / split}",
        "--pitch",
        f"files:{feats / 'pitch' / split}",
        "--frame-rate",
        "ptm=100",
        "--speaker-from-id",
        "/",
        "--split-by",
        "none",
        "--out-path",
        str(out / "hdf"),
        "--out-name",
        f"dev_{split}",
        "--overwrite",
        "--no-progress",
    ]
    rc = data_prep(argv)
    if rc:
        raise SystemExit(f"data_prep failed for {split} (exit {rc})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    if (out / "READY").exists() and not args.overwrite:
        print(f"{out} already holds a finished build; pass --overwrite", file=sys.stderr)
        return 2
    (out / "READY").unlink(missing_ok=True)
    work = out / "work"
    if work.exists():
        shutil.rmtree(work)
    timings: dict[str, float] = {}
    t0 = time.time()
    sizes = P.Sizes.small() if args.small else P.Sizes.full()
    plan = P.make_plan(args.seed, sizes, P.load_words())
    timings["plan"] = time.time() - t0

    load = {"start": os.getloadavg()[0]}  # the dev machine is shared: context for timings
    t = time.time()
    durations = pipeline.synthesize_all(plan, work, args.jobs)
    timings["synthesis"] = time.time() - t
    load["after_synthesis"] = os.getloadavg()[0]
    t = time.time()
    infos = pipeline.featurize_all(plan, work, args.jobs, out / "samples")
    timings["channel_features"] = time.time() - t
    load["after_features"] = os.getloadavg()[0]
    t = time.time()
    for split in ("train", "valid", "test", "heldout"):
        pack(out, work, split)
    timings["packing"] = time.time() - t

    t = time.time()
    spk_of = {u.id: u.speaker for u in plan.utts}
    fam_of = {u.id: plan.speaker(u.speaker).family for u in plan.utts}
    held = [i for i in infos if i["dvec"] is not None]  # valid + test utterances
    stats = {
        "mean_logmel": {i["id"]: i["mean_mfbe"] for i in held},
        "mean_lstm3": {i["id"]: i["mean_l3"] for i in held},
        "dvector": {i["id"]: i["dvec"] for i in held},
    }
    trial_info, eer_info = {}, {}
    for split in ("test", "valid", "heldout"):
        ids = [u.id for u in plan.utts if u.split == split]
        lines, counts = trials.build(ids, spk_of, fam_of, args.seed)
        trials.write(out / "trials" / f"{split}.txt", lines)
        trial_info[split] = counts.__dict__
        eer_info[split] = sanity.eers(stats, lines, fam_of)
    timings["trials_sanity"] = time.time() - t
    timings["total"] = time.time() - t0

    secs = {i["id"]: i["seconds"] for i in infos}
    diffs = np.array([i["ptm_minus_mfbe"] for i in infos])
    meta = {
        "command": " ".join(["python", "benchmarks/devbench/build.py", *(argv or sys.argv[1:])]),
        "seed": args.seed,
        "small": args.small,
        "jobs": args.jobs,
        "counts": _counts(plan, secs),
        "trials": trial_info,
        "sanity_eer_percent": eer_info,
        "frames": {
            "ptm_minus_mfbe_before_trim": {
                str(k): int(v) for k, v in zip(*np.unique(diffs, return_counts=True), strict=True)
            }
        },
        "synth_seconds": {k: round(v, 3) for k, v in durations.items()},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "load_average_1min": {k: round(v, 2) for k, v in load.items()},
        "versions": package_versions(),
        "plan": plan.summary(),
        "utterances": [{**u, "seconds": round(secs[u["id"]], 3)} for u in plan.utt_table()],
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    if not args.keep_work:
        shutil.rmtree(work)
    summary = _summary(meta)
    (out / "READY").write_text(summary)
    print(summary)
    return 0


def _counts(plan: P.Plan, secs: dict[str, float]) -> dict:
    out = {}
    for split, spks in plan.speakers.items():
        us = [u for u in plan.utts if u.split == split]
        d = np.array([secs[u.id] for u in us])
        out[split] = {
            "speakers": len(spks),
            "families": len({s.family for s in spks}),
            "utterances": len(us),
            "hours": round(float(d.sum()) / 3600, 3),
            "seconds_min_mean_max": [round(float(f(d)), 2) for f in (np.min, np.mean, np.max)],
            "sessions": sum(len(plan.sessions[s.name]) for s in spks),
        }
    return out


def _summary(meta: dict) -> str:
    lines = [f"devbench build finished: {meta['command']}"]
    for split, c in meta["counts"].items():
        lines.append(
            f"{split}: {c['speakers']} speakers / {c['families']} families, "
            f"{c['utterances']} utts, {c['hours']} h"
        )
    for split, c in meta["trials"].items():
        lines.append(
            f"trials/{split}.txt: {c['target']} target, "
            f"{c['nontarget_same_family']} same-family + {c['nontarget_other_family']} "
            f"other-family non-target"
        )
    for split, e in meta["sanity_eer_percent"].items():
        lines.append(
            f"sanity EER % ({split}): " + ", ".join(f"{k} {v['all']}" for k, v in e.items())
        )
    lines.append("timings s: " + ", ".join(f"{k} {v}" for k, v in meta["timings_s"].items()))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
