"""The atheris fuzz targets in tests/fuzz work: each runs a fixed number of inputs from a fixed
libFuzzer seed in a subprocess, exits 0 (no crash, no leak past the RSS limit, no input slower
than libFuzzer's per-input timeout), really executes them all, and reaches coverage no broken
harness could. Long campaigns are run by hand (docs/fuzzing.md); this keeps the harnesses from
rotting and catches what a few thousand inputs find.

Nothing here depends on the machine's speed: the work is a number of inputs, not a time, so a
loaded core only makes the test slower. The wall-clock limit is a hang guard, far above what
the runs take on a busy 2-core machine. (libFuzzer with ``-seed`` and ``-runs`` picks the same
mutations, but the coverage reached still spreads by up to ~2% (cov) and ~3.5% (ft) between
runs: the same input now and then reaches slightly different features, so the floors cannot be
exact. With address randomisation off, ``setarch -R``, wire repeats exactly; ingest and bundle
still vary, from a source not traced yet.)

The floors are ~90% of the lowest of several measured runs (2026-12-03, atheris 3.0, this
command, 9 runs of wire, 7 of ingest and bundle; cov/ft after the runs: wire
443-453/1274-1308, ingest 492-500/1326-1373, bundle 1658-1689/4514-4668; the seeds alone,
identical in every run: 349, 269, 1287), so a product change that adds or drops a few
branches does not trip them; re-measure as docs/fuzzing.md says when one moves a lot. A harness
whose seeds no longer parse, whose property check returns early or whose instrumentation is
lost falls far below them (a target that returns at once reports no coverage at all)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

FUZZ_DIR = Path(__file__).resolve().parents[1] / "fuzz"
#: only stops a hung run; the runs take ~15-30 s each alone, a few times that on a busy machine
HANG_GUARD_S = 600


class Budget(NamedTuple):
    """How many inputs a target runs, and what it must reach by then."""

    runs: int
    cov: int  #: coverage floor after the runs (libFuzzer's ``cov:``, edges)
    ft: int  #: feature floor after the runs (``ft:``, edges and hit-count buckets)
    seeds_cov: int  #: coverage the generated seeds alone must reach (``INITED cov:``)


TARGETS = {
    "wire": Budget(runs=15_000, cov=400, ft=1145, seeds_cov=314),
    "ingest": Budget(runs=30_000, cov=440, ft=1190, seeds_cov=242),
    "bundle": Budget(runs=15_000, cov=1490, ft=4060, seeds_cov=1158),
}
DONE = re.compile(r"^Done (\d+) runs in", re.MULTILINE)
INITED = re.compile(r"INITED cov: (\d+) ft: (\d+)")
FINAL = re.compile(r"DONE +cov: (\d+) ft: (\d+)")


def fuzz_command(target: str, runs: int, work: Path) -> list[str]:
    """The test's run, also the one to re-measure the floors with (docs/fuzzing.md).

    ``-reload=0``: the corpus dir is this run's own, so re-reading it every second (a
    time-driven step) would find nothing; no ``-max_total_time``: the runs must all happen."""
    return [sys.executable, str(FUZZ_DIR / f"fuzz_{target}.py"), f"-runs={runs}", "-seed=1",
            "-reload=0", f"-artifact_prefix={work}/", "-print_final_stats=1",
            str(work / "corpus")]  # fmt: skip


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def _require_atheris() -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.fail("atheris is not installed, but it is a dev dependency: run scripts/bootstrap "
                    "(or .venv/bin/pip install 'atheris>=2.3')")


@pytest.mark.timeout(HANG_GUARD_S + 60)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target_runs_and_covers(target: str, tmp_path: Path) -> None:
    _require_atheris()
    budget = TARGETS[target]
    # fixed string hashing, so set/dict order in the product code is the same in every run
    env = {**os.environ, "FIELDPROOF_FUZZ_SEEDS": str(tmp_path / "seeds"), "PYTHONHASHSEED": "0"}
    cmd = fuzz_command(target, budget.runs, tmp_path)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_GUARD_S, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"fuzz_{target} did not finish {budget.runs} inputs in {HANG_GUARD_S} s: "
                    f"a hang, not slowness; run PYTHONHASHSEED=0 {' '.join(cmd)} by hand and "
                    f"look where it stops:\n{_text(exc.stderr)[-3000:]}")
    out = proc.stdout + proc.stderr
    tail = "\n".join(out.splitlines()[-40:])
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "oom-",
                                                                             "timeout-")))
    assert proc.returncode == 0, f"fuzz_{target} failed ({proc.returncode}), {crashes}:\n{tail}"
    done = DONE.search(out)
    assert done is not None, f"fuzz_{target} did not finish its runs:\n{tail}"
    assert int(done.group(1)) == budget.runs, f"fuzz_{target} ran {done.group(1)} inputs:\n{tail}"
    inited = INITED.search(out)
    assert inited is not None, f"fuzz_{target} reports no coverage of its seeds:\n{tail}"
    seeds_cov = int(inited.group(1))
    assert seeds_cov >= budget.seeds_cov, f"seeds reach little coverage:\n{tail}"
    final = FINAL.search(out)
    assert final is not None, f"fuzz_{target} reports no coverage: is the product code " \
                              f"instrumented?\n{tail}"
    cov, ft = int(final.group(1)), int(final.group(2))
    assert cov >= budget.cov, f"fuzz_{target} reached cov {cov} < {budget.cov}:\n{tail}"
    assert ft >= budget.ft, f"fuzz_{target} reached ft {ft} < {budget.ft}:\n{tail}"
    assert cov > seeds_cov, f"mutations found nothing new:\n{tail}"
