"""The atheris fuzz targets in tests/fuzz work: each runs a bounded number of inputs in a
subprocess, exits 0 (no crash, leak past the RSS limit or timeout), really executes them all,
and reaches coverage no broken harness could. Long campaigns are run by hand (docs/fuzzing.md);
this keeps the harnesses from rotting and catches what a few seconds of fuzzing finds.

The floors are about 90% of what these runs reached when they were set (wire: seeds 345, after
the runs 438-447; ingest: 265, 491-495; bundle: 835, 1022-1057; atheris 3.0, several -seed
values), so a change to the product code that adds or drops a few branches does not trip
them; re-measure as docs/fuzzing.md says when one moves a lot. A harness whose seeds no longer
parse, whose property check returns early or whose instrumentation is lost falls far below
them (a target that returns at once reports no coverage at all)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).resolve().parents[1] / "fuzz"

#: target -> (inputs to run, coverage floor after them, coverage the seeds alone must reach)
TARGETS = {
    "wire": (15_000, 400, 320),
    "ingest": (30_000, 440, 240),
    "bundle": (15_000, 960, 780),
}
DONE = re.compile(r"^Done (\d+) runs in", re.MULTILINE)
COV = re.compile(r"\bcov: (\d+)")
INITED = re.compile(r"INITED cov: (\d+)")


def _require_atheris() -> None:
    try:
        import atheris  # noqa: F401 - only whether it is there
    except ImportError:
        pytest.fail("atheris is not installed, but it is a dev dependency: run scripts/bootstrap "
                    "(or .venv/bin/pip install 'atheris>=2.3')")


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target_runs_and_covers(target: str, tmp_path: Path) -> None:
    _require_atheris()
    runs, floor, seeds_floor = TARGETS[target]
    corpus = tmp_path / "corpus"
    env = {**os.environ, "FIELDPROOF_FUZZ_SEEDS": str(tmp_path / "seeds")}
    cmd = [sys.executable, str(FUZZ_DIR / f"fuzz_{target}.py"), f"-runs={runs}", "-seed=1",
           "-max_total_time=45", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1",
           str(corpus)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    out = proc.stdout + proc.stderr
    tail = "\n".join(out.splitlines()[-40:])
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "oom-",
                                                                             "timeout-")))
    assert proc.returncode == 0, f"fuzz_{target} failed ({proc.returncode}), {crashes}:\n{tail}"
    done = DONE.search(out)
    assert done is not None, f"fuzz_{target} did not finish its runs:\n{tail}"
    assert int(done.group(1)) >= runs, f"fuzz_{target} ran only {done.group(1)} inputs:\n{tail}"
    inited = INITED.search(out)
    assert inited is not None, tail
    assert int(inited.group(1)) >= seeds_floor, f"seeds reach little coverage:\n{tail}"
    covs = COV.findall(out)
    assert covs, f"fuzz_{target} reports no coverage: is the product code instrumented?\n{tail}"
    final = int(covs[-1])
    assert final >= floor, f"fuzz_{target} reached cov {final} < {floor}:\n{tail}"
    assert final > int(inited.group(1)), f"mutations found nothing new:\n{tail}"
