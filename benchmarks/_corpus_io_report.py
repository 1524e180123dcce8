"""Markdown tables and environment record of ``bench_corpus_io.py``."""

from __future__ import annotations

import os
from typing import Any

from _bench_util import environment as shared_environment
from _bench_util import table as _table


def open_table(res: dict[str, Any]) -> str:
    """Part 1: wall clock with CPU time in brackets (CPU is the stable figure on a busy box)."""
    w, small, reps = res["write"], res["small_reads"], res["repeats"]

    def both(wall: float, cpu: float) -> str:
        return f"{wall * 1e3:,.1f} ms wall ({cpu * 1e3:,.1f} ms CPU)"

    rows = [
        [
            "corpus",
            f"{w['utterances']:,} utts / {w['speakers']:,} speakers, "
            f"{w['file_bytes'] / 1e6:,.0f} MB = {w['bytes_per_utt']:,.0f} B/utt "
            f"for {w['payload_bytes_per_utt']:.0f} B of features",
        ],
        [
            "what-if: same layout with `libver='v110'`",
            f"{res['metadata_whatif']['v110_bytes_per_utt']:,.0f} B/utt "
            f"(plain h5py, default libver: {res['metadata_whatif']['earliest_bytes_per_utt']:,.0f} B/utt)",
        ],
        ["write (CorpusWriter, 2 streams)", f"{w['write_s']:.1f} s = {w['utts_per_s']:,.0f} utt/s"],
        [
            f"`Corpus(path)` (median of {reps['corpus']} fresh processes)",
            f"{res['corpus_open_s'] * 1e3:.1f} ms wall",
        ],
        ["`speaker_utterances()`", f"{res['speaker_map_s'] * 1e3:.1f} ms wall"],
        ["**open + speaker map**", both(res["corpus_total_s"], res["corpus_cpu_s"])],
        [
            f"naive h5py walk, ids + frames from shapes (median of {reps['naive']})",
            both(res["naive_walk_s"], res["naive_walk_cpu_s"]),
        ],
        [
            "**naive walk / e2espk**",
            f"**{res['speedup_vs_naive']:,.0f}x** wall ({res['speedup_vs_naive_cpu']:,.0f}x CPU)",
        ],
        [
            f"naive h5py walk, ids only (median of {reps['naive_list']})",
            both(res["naive_list_only_s"], res["naive_list_only_cpu_s"]),
        ],
        [
            "naive ids-only walk / e2espk",
            f"{res['speedup_vs_naive_list_only']:,.1f}x wall ({res['speedup_vs_naive_list_only_cpu']:,.1f}x CPU)",
        ],
        [
            "`Corpus.read(row, 'ptm')` of a tiny utterance",
            f"{small['corpus_read_us']:.0f} µs CPU/read",
        ],
        ["  `Corpus.dataset()` alone (path lookup + open)", f"{small['open_by_path_us']:.0f} µs"],
        ["  open by HDF5 object reference instead", f"{small['open_by_object_ref_us']:.0f} µs"],
        ["  read of an already-open dataset", f"{small['read_preopened_us']:.0f} µs"],
    ]
    return _table(["open / index figure", "measured"], rows)


def _v(case: dict[str, Any], name: str, key: str) -> float:
    return case["variants"][name][key]


def _ratio(case: dict[str, Any], name: str) -> str:
    variant = case["variants"].get(name)
    return "n/a" if variant is None else f"{variant['ratio_to_raw']:.2f}"


def crops_table(results: list[dict[str, Any]]) -> str:
    header = [
        "condition",
        "crop MB",
        "file/payload",
        "e2espk crops/s",
        "e2espk MB/s",
        "raw h5py MB/s",
        "memcpy MB/s",
        "**e2espk/raw**",
        "(wall clock)",
        "raw/memcpy",
        "chunk amp. (layout)",
        "bytes read/crop (measured)",
    ]
    rows = []
    for r in results:
        amp = _v(r, "e2espk", "read_bytes_per_crop_over_crop_bytes")
        rows.append(
            [
                r["case"]["name"],
                f"{r['crop_bytes'] / 1e6:.2f}",
                f"{r['file_over_payload']:.3f}",
                f"{_v(r, 'e2espk', 'crops_per_cpu_s'):,.0f}",
                f"{_v(r, 'e2espk', 'mb_per_cpu_s'):,.0f}",
                f"{_v(r, 'raw_h5py', 'mb_per_cpu_s'):,.0f}",
                f"{_v(r, 'memcpy', 'mb_per_cpu_s'):,.0f}",
                f"**{_v(r, 'e2espk', 'ratio_to_raw'):.2f}**",
                f"{_v(r, 'e2espk', 'ratio_to_raw_wall'):.2f}",
                f"{_v(r, 'raw_h5py', 'crops_per_cpu_s') / _v(r, 'memcpy', 'crops_per_cpu_s'):.2f}",
                f"{r['layout_amplification']:.2f}x",
                "n/a" if amp is None else f"{amp:.2f}x",
            ]
        )
    return _table(header, rows)


def whatif_table(results: list[dict[str, Any]]) -> str:
    """Same crops through reader changes e2espk does not make (yet): ratios to raw h5py."""
    header = [
        "condition",
        "as shipped",
        "rdcc_nbytes=0",
        "datasets kept open",
        "kept open + rdcc_nbytes=0",
        "contiguous utterance datasets",
        "contiguous + kept open",
        "as shipped, fresh process",
        "fresh process + MALLOC_* env",
    ]
    names = ["e2espk", "nocache", "preopened", "preopened_nocache", "contiguous"]
    names.append("contiguous_preopened")
    rows = []
    for r in results:
        fresh = r.get("fresh_process", {})
        extra = [
            f"{fresh[key]:.2f}" if key in fresh else "n/a"
            for key in ("fresh_ratio_to_raw", "fresh_malloc_env_ratio_to_raw")
        ]
        rows.append([r["case"]["name"], *(_ratio(r, name) for name in names), *extra])
    return _table(header, rows)


def disk_table(rows: list[dict[str, Any]]) -> str:
    header = [
        "PTM 13x768 float16",
        "GB per hour (measured)",
        "payload GB/h",
        "**file/payload**",
        "edge-chunk padding",
        "pack speed",
    ]
    body = [
        [
            f"{r['layers']} layers, {r['compression']}",
            f"{r['bytes_per_hour'] / 1e9:.3f}",
            f"{r['payload_bytes_per_hour'] / 1e9:.3f}",
            f"**{r['overhead_ratio']:.3f}**",
            f"{r['edge_chunk_padding_ratio']:.3f}",
            f"{r['pack_realtime_factor']:,.0f}x realtime",
        ]
        for r in rows
    ]
    return _table(header, body)


def environment() -> dict[str, Any]:
    """The shared record of versions and machine, plus the BLAS thread setting these reads
    depend on."""
    return shared_environment() | {"OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")}
