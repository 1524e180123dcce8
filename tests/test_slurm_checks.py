"""The Slurm search checks the cluster before it submits, and says in one line what is wrong.

Unit tests feed real sinfo output shapes; the others run the real sinfo/sbatch (through
submitit) against a config that names no cluster, which fails at once whether or not the
project's local cluster is up. One test marked ``slurm`` uses that cluster.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import submitit

from e2espk.cli.hp_search import main_parallel as hp_search_slurm
from e2espk.cluster.executors import SlurmSubmitter
from e2espk.cluster.slurm_checks import check_resources, gpu_count, parse_sinfo, sbatch_refusal
from e2espk.errors import ConfigError
from tests.slurm_support import slurm_cluster  # noqa: F401
from tests.test_search import search_args

LOCAL = "debug*|(null)|up\n"  # what scripts/slurm_local.sh's cluster reports
GPU_CLUSTER = (
    "cpu*|(null)|up\ngpu|gpu:a100:4(S:0-1)|up\ngpu|gpu:v100:2,mps:100|up\nlong|(null)|inact\n"
)
needs_slurm_tools = pytest.mark.skipif(
    not shutil.which("sbatch"), reason="Slurm client tools not installed"
)


def test_partition_and_gres_problems_are_named() -> None:
    local = parse_sinfo(LOCAL)
    with pytest.raises(
        ConfigError,
        match=r"^--partition gpu: this Slurm cluster has no such partition; it has debug \(default\)$",
    ):
        check_resources(local, "gpu", 1)
    with pytest.raises(
        ConfigError,
        match=r"^--gpus-per-node 1: partition 'debug' has no GPUs \(no gpu GRES\); no partition has GPUs",
    ):
        check_resources(local, None, 1)
    check_resources(local, None, 0)
    check_resources(local, "debug", 0)
    cluster = parse_sinfo(GPU_CLUSTER)
    assert [(p.name, p.default, p.max_gpus) for p in cluster.values()] == [
        ("cpu", True, 0),
        ("gpu", False, 4),
        ("long", False, 0),
    ]
    check_resources(cluster, "gpu", 4)
    with pytest.raises(ConfigError, match="partition 'gpu' has at most 4 GPU"):
        check_resources(cluster, "gpu", 8)
    with pytest.raises(
        ConfigError, match=r"partition 'cpu' has no GPUs .*partitions with GPUs: gpu"
    ):
        check_resources(cluster, None, 1)
    assert (
        gpu_count("(null)") == 0
        and gpu_count("gpu:2") == 2
        and gpu_count("mps:100,gpu:tesla:8(S:0)") == 8
    )


def test_sbatch_refusals_name_the_option() -> None:
    error = sbatch_refusal(
        "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified"
    )
    assert str(error) == (
        "sbatch refused the trial job: sbatch: error: Batch job submission failed: Invalid account or "
        "account/partition combination specified (check --partition against `sinfo`)"
    )
    assert "--gpus-per-node" in str(
        sbatch_refusal("sbatch: error: Invalid generic resource (gres) specification")
    )


@pytest.fixture
def no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slurm clients pointed at a config that names no cluster: they fail at once."""
    (tmp_path / "slurm.conf").write_text("# no cluster here\n")
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))


@needs_slurm_tools
@pytest.mark.usefixtures("no_cluster")
def test_real_sbatch_failure_through_submitit_is_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="slurm")
    executor.update_parameters(timeout_min=1)
    with pytest.raises(
        ConfigError,
        match=r"^sbatch refused the trial job: sbatch: fatal: Unable to process configuration file$",
    ):
        SlurmSubmitter(executor).submit(print, "never runs")
    assert capfd.readouterr().err == "", "submitit's own print of sbatch's stderr is not shown"


@needs_slurm_tools
@pytest.mark.usefixtures("no_cluster")
def test_search_without_a_cluster_says_how_to_get_one(
    demo_hdf: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert hp_search_slurm(search_args(demo_hdf, tmp_path / "s", 2, "--search-params", "lr")) == 2
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith(
        "error: no Slurm cluster answers (`sinfo`: sinfo: fatal: Unable to process configuration file)"
    )
    assert "--cluster local" in err and "bash scripts/slurm_local.sh up" in err
    assert not (tmp_path / "s").exists(), "nothing is created before the cluster is checked"


def test_help_describes_the_slurm_search(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        hp_search_slurm(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    description = " ".join(
        text[text.index("hp_search_slurm.py``") : text.index("options:")].split()
    )
    assert "Slurm jobs" in description and "serial" not in description
    assert "scripts/slurm_local.sh up" in description and "--cluster local" in description


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_readme_flags_on_the_local_cluster(
    demo_hdf: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    args = search_args(demo_hdf, tmp_path / "s", 2, "--search-params", "lr")
    assert hp_search_slurm([*args, "--partition", "gpu", "--gpus-per-node", "1"]) == 2
    err = capfd.readouterr().err.strip()
    assert (
        err
        == "error: --partition gpu: this Slurm cluster has no such partition; it has debug (default)"
    ), err
    assert hp_search_slurm([*args, "--gpus-per-node", "1"]) == 2
    assert "error: --gpus-per-node 1: partition 'debug' has no GPUs" in capfd.readouterr().err
