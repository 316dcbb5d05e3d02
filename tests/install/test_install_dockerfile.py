"""The Dockerfile cannot be built here (no engine), so its key properties are checked as
text: multi-stage, slim base, runtime dependencies only, the chart's non-root user, and a
context that leaves secrets and caches out."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import yaml

from inference_devkit import chart
from inference_devkit.chart import documents, helm_template

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / chart.CHART
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    logical = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    pairs = []
    for line in logical.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def test_multi_stage_on_a_slim_python_base() -> None:
    stages = [rest for keyword, rest in instructions() if keyword == "FROM"]
    assert len(stages) >= 2
    (base,) = (rest for keyword, rest in instructions()
               if keyword == "ARG" and rest.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.1[1-9]-slim-\w+", base), base
    assert not any(keyword == "ADD" for keyword, _ in instructions())


def test_only_runtime_dependencies_are_installed() -> None:
    installs = [rest for keyword, rest in instructions() if keyword == "RUN" and "pip" in rest]
    assert installs and all("[test]" not in rest and "-e " not in rest for rest in installs)
    # The final stage copies the finished virtualenv and installs nothing itself.
    assert not any(keyword == "RUN" for keyword, _ in final_stage())
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final_stage()


def test_runs_as_the_non_root_user_the_chart_expects() -> None:
    (user,) = (rest for keyword, rest in final_stage() if keyword == "USER")
    uid, _, gid = user.partition(":")
    deployment = next(d for d in documents(helm_template().stdout) if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (int(uid), int(gid)) == (pod["runAsUser"], pod["runAsGroup"])
    assert int(uid) != 0
    assert ("ENTRYPOINT", '["inference-operator"]') in final_stage()


def test_the_chart_default_image_is_this_one_at_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

    assert chart["appVersion"] == version
    assert f"docker build -t {values['image']['repository']}:{version} ." in DOCKERFILE


def test_the_build_context_holds_the_package_and_nothing_private() -> None:
    patterns = (ROOT / ".dockerignore").read_text().split("\n")
    rules = [p for p in (line.strip() for line in patterns) if p and not p.startswith("#")]

    def ignored(path: str) -> bool:
        # Docker's rule: the last matching pattern wins; "!" re-includes.
        result = False
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                result = not negate
        return result

    for needed in ("pyproject.toml", "README.md", "operator/inference_operator/cli/main.py"):
        assert not ignored(needed), needed
    for private in (".venv/bin/python", ".git/config", ".cache/controlplane/kubeconfig",
                    "tests/conftest.py", "operator/inference_operator/__pycache__/x.pyc"):
        assert ignored(private), private
