"""Every benchmark's smoke run (``python -m bench.MODULE --quick``): each runs to its end
and writes its report, into a temporary folder. Nothing about the numbers is asserted: a
smoke run's sizes are tiny and the machine is shared. The runs start together (most of
their time is spent waiting on processes they started), each test waits for its own."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inference_devkit.controlplane import jaeger
from inference_devkit.controlplane.binaries import BinaryUnavailable

REPO = Path(__file__).resolve().parents[2]
# bench/run.py's list, read in a process of its own: bench is importable from the root.
BENCHMARKS: dict[str, str] = json.loads(subprocess.run(
    [sys.executable, "-c", "import json, bench.run; print(json.dumps(bench.run.BENCHMARKS))"],
    cwd=REPO, capture_output=True, text=True, check=True).stdout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, Any]]]:
    out = tmp_path_factory.mktemp("bench-quick")
    # The tracing benchmark's receiver, built (or its background build waited for) here,
    # before the clock of any run starts; where it cannot be, that run says why.
    try:
        jaeger.resolve()
    except BinaryUnavailable:
        pass
    started = {}
    for name, module in BENCHMARKS.items():
        folder = out / name
        folder.mkdir()
        log = (folder / "output.log").open("w")
        started[name] = (folder, subprocess.Popen(
            [sys.executable, "-m", module, "--quick", "--out", str(folder)], cwd=REPO,
            stdout=log, stderr=subprocess.STDOUT), log)
    yield {name: (folder, process) for name, (folder, process, _) in started.items()}
    for _, process, log in started.values():
        if process.poll() is None:
            process.terminate()  # unwinds like Ctrl-C: its processes are stopped
            process.wait(60)
        log.close()


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_quick_run_writes_its_report(name: str, runs: dict[str, tuple[Path, Any]]) -> None:
    folder, process = runs[name]
    code = process.wait(240)
    output = (folder / "output.log").read_text()
    assert code == 0, output[-4000:]
    result = json.loads((folder / "benchmarks" / f"{name}.json").read_text())
    assert result["run"]["args"]["quick"] is True
    report = (folder / "benchmarks.md").read_text()
    assert f"<!-- {name}-bench:start" in report and f"<!-- {name}-bench:end -->" in report
