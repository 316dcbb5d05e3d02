"""The tools only some tests need are built in the background while the others run
(controlplane/prebuild.py): at idle priority, stopped cleanly when the session ends first,
and a test that needs a binary being built waits for that build instead of compiling it a
second time. And every test runs: testpaths (pyproject.toml) orders them and must list all."""

from __future__ import annotations

import dataclasses
import fcntl
import io
import os
import threading
import tomllib
from pathlib import Path

import pytest

from inference_devkit.controlplane import binaries, prebuild
from inference_devkit.waiting import poll

REPO = Path(__file__).resolve().parents[1]


def test_every_test_file_is_under_one_testpath():
    testpaths = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"][
        "ini_options"]["testpaths"]
    listed = [REPO / path for path in testpaths]
    assert len(set(listed)) == len(listed), "listed twice"
    unlisted = [path.relative_to(REPO).as_posix() for path in (REPO / "tests").rglob("test_*.py")
                if not any(path == entry or entry in path.parents for entry in listed)]
    assert unlisted == [], "never collected by `make test`"


def _jaeger_in(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Jaeger's cached path in an empty cache of this test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    sources = binaries.envtest_sources()
    assert sources is not None
    return binaries.cached_path(binaries.TOOLS[binaries.JAEGER], sources)


def test_a_build_under_way_elsewhere_is_waited_for_not_repeated(tmp_path, monkeypatch):
    target = _jaeger_in(tmp_path, monkeypatch)
    # No go on PATH: compiling here would fail, so returning the binary proves it waited.
    monkeypatch.setenv("PATH", "/nonexistent")
    target.parent.mkdir(parents=True)
    lock = (target.parent / f".{target.name}.lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # the other build, under way
    out = io.StringIO()
    found: list[Path] = []
    waiter = threading.Thread(target=lambda: found.append(binaries.resolve(
        binaries.JAEGER, out=out)))
    waiter.start()
    poll(lambda: "waiting for the build of jaeger" in out.getvalue(), timeout=10)
    assert waiter.is_alive()
    target.write_text("#!/bin/sh\n")  # the other build finishes
    lock.close()
    waiter.join(timeout=10)
    assert found == [target]


def test_without_go_the_build_still_says_why(tmp_path, monkeypatch):
    _jaeger_in(tmp_path, monkeypatch)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(binaries.BinaryUnavailable, match="Go is not installed"):
        binaries.resolve(binaries.JAEGER, out=io.StringIO())


def test_only_the_test_only_tools_are_built_unoptimized_and_the_flags_key_the_cache():
    sources = binaries.envtest_sources()
    assert sources is not None
    unoptimized = {name for name, tool in binaries.TOOLS.items() if tool.unoptimized}
    assert unoptimized == {*binaries.FLUX_BINARY_NAMES, binaries.ARGOCD, binaries.JAEGER}
    jaeger = binaries.TOOLS[binaries.JAEGER]
    assert jaeger.gcflags() == "all=-N -l"
    optimized = dataclasses.replace(jaeger, unoptimized=False)
    assert optimized.gcflags() == ""
    assert binaries.cached_path(jaeger, sources) != binaries.cached_path(optimized, sources)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_background_build_runs_at_idle_priority_and_stops_without_leftovers(
        tmp_path, monkeypatch):
    target = _jaeger_in(tmp_path / "cache", monkeypatch)
    if prebuild.unbuilt(["jaeger"]) != ["jaeger"]:
        pytest.fail("an empty cache has jaeger built")
    monkeypatch.setenv("GOCACHE", str(tmp_path / "gocache"))  # a real compile, not a hit
    log = tmp_path / "prebuild.log"
    process = prebuild.start(["jaeger"], log)
    try:
        # Under way: go writes into the scratch folder's log.
        poll(lambda: any(target.parent.glob("tmp*/build.log")), timeout=120,
             message="go starts")
        assert os.sched_getscheduler(process.pid) == os.SCHED_IDLE
        assert os.getpriority(os.PRIO_PROCESS, process.pid) == 19
    finally:
        prebuild.stop(process)
    assert process.returncode == 143, log.read_text()
    # Nothing of the group is left, nor the half-built binary's scratch folder.
    poll(lambda: not _group_alive(process.pid), timeout=10, message="go's compilers end")
    assert sorted(p.name for p in target.parent.iterdir()) == [f".{target.name}.lock"]
