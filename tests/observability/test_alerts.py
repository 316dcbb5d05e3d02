"""The alerts as Prometheus reads them: ``promtool check rules`` on the rule file rendered
from observability/alerts.py, and ``promtool test rules`` with the cases of
alert_cases.py, where every alert fires at least once and stays quiet at least once."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from alert_cases import CASES, Case

from inference_devkit.generate.observability_files import alerts_yaml
from inference_operator.observability import alerts

ROOT = Path(__file__).resolve().parents[2]
BY_NAME = {alert.name: alert for alert in alerts.ALERTS}
# What annotations may show: ids, namespaces, pods, fixed reasons and HTTP statuses; no
# label that could carry a key or a prompt.
SHOWN_LABELS = {"inference_id", "namespace", "pod", "reason", "status"}
LABEL = re.compile(r"\{\{ \$labels\.(\w+) \}\}")


def annotations(case: Case, firing) -> dict[str, str]:
    """What Prometheus must render: descriptions only hold ``{{ $labels.x }}``."""
    alert = BY_NAME[case.alert]
    rule = alert.rule()["annotations"]
    description = LABEL.sub(lambda m: firing.labels[m.group(1)], alert.description)
    return {"summary": firing.summary, "description": description,
            "runbook_url": rule["runbook_url"]}


def unit_tests() -> dict:
    return {
        "rule_files": ["alerts.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "name": f"{case.alert}: {case.why}",
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
            "alert_rule_test": [{
                "eval_time": case.eval_time,
                "alertname": case.alert,
                "exp_alerts": [
                    {"exp_labels": {**f.labels, "severity": BY_NAME[case.alert].severity},
                     "exp_annotations": annotations(case, f)}
                    for f in case.firing],
            }],
        } for case in CASES],
    }


def test_every_alert_has_cases_where_it_fires_and_where_it_does_not() -> None:
    fires = {case.alert for case in CASES if case.firing}
    quiet = {case.alert for case in CASES if not case.firing}

    assert set(BY_NAME) - fires == set(), "alerts without a case where they fire"
    assert set(BY_NAME) - quiet == set(), "alerts without a case where they do not fire"
    assert {case.alert for case in CASES} <= set(BY_NAME), "cases of unknown alerts"


def test_the_rule_file_passes_promtool_check_rules(promtool, tmp_path: Path) -> None:
    (tmp_path / "alerts.yaml").write_text(alerts_yaml())

    result = promtool("check", "rules", "alerts.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts.ALERTS)} rules found" in result.stdout


def test_every_alert_fires_and_stays_quiet_as_promtool_test_rules_expects(
    promtool, tmp_path: Path,
) -> None:
    (tmp_path / "alerts.yaml").write_text(alerts_yaml())
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(unit_tests(), sort_keys=False))

    result = promtool("test", "rules", "tests.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_annotations_show_ids_namespaces_and_numbers_only() -> None:
    for alert in alerts.ALERTS:
        shown = set(LABEL.findall(alert.summary + alert.description))
        assert shown <= SHOWN_LABELS, (alert.name, shown - SHOWN_LABELS)
        # Every template of a description is a label (annotations() renders them).
        assert alert.description.count("{{") == len(LABEL.findall(alert.description)), (
            alert.name)


def test_every_alert_has_its_runbook_section_in_docs_operations_md() -> None:
    headings = re.findall(r"^### (\w+)$", (ROOT / "docs/operations.md").read_text(), re.M)

    for alert in alerts.ALERTS:
        assert alert.name in headings, f"docs/operations.md has no section ### {alert.name}"
        # GitHub's anchor of a heading made of one word: the word in lower case.
        assert alert.runbook == alert.name.lower()
    assert [h for h in headings if h in BY_NAME] == [alert.name for alert in alerts.ALERTS]


def test_the_rule_file_holds_every_alert_once_in_its_group() -> None:
    groups = yaml.safe_load(alerts_yaml())["groups"]

    names = [rule["alert"] for group in groups for rule in group["rules"]]
    assert sorted(names) == sorted(BY_NAME)
    assert {group["name"] for group in groups} == {alerts.GATEWAY_GROUP, alerts.OPERATOR_GROUP}
