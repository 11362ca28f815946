"""The alert rules: valid, unit-tested, and each with a runbook that exists."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.local.prometheus_config import rules_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted(rules_dir().glob("*.yml"))
ALERTS = [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
          for rule in group["rules"] if "alert" in rule]


def require(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is missing: apt-get install prometheus prometheus-alertmanager"
    return path


def test_promtool_check_rules_accepts_every_rule_file() -> None:
    result = subprocess.run([require("promtool"), "check", "rules", *map(str, RULE_FILES)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_every_rule_file_pass() -> None:
    tests = sorted((rules_dir() / "tests").glob("*.yml"))
    result = subprocess.run([require("promtool"), "test", "rules", *map(str, tests)],
                            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rule", ALERTS, ids=[r["alert"] for r in ALERTS])
def test_every_alert_has_severity_summary_description_runbook_and_a_unit_test(
    rule: dict[str, object]
) -> None:
    name = rule["alert"]
    labels, annotations = rule["labels"], rule["annotations"]
    assert isinstance(labels, dict) and isinstance(annotations, dict)
    assert labels["severity"] in {"info", "warning", "critical"}
    assert annotations["summary"] and annotations["description"]
    assert annotations["runbook_url"] == f"docs/runbooks/{name}.md"
    runbook = REPO_ROOT / str(annotations["runbook_url"])
    assert runbook.is_file(), f"write {runbook}"
    text = runbook.read_text()
    for heading in ("## What it means", "## First checks", "## Mitigation", "## Escalation"):
        assert heading in text, f"{runbook} lacks {heading}"
    tested = " ".join(p.read_text() for p in (rules_dir() / "tests").glob("*.yml"))
    assert f"alertname: {name}" in tested, f"add a promtool test of {name}"


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "deploy" / "alertmanager").glob("*.yml")),
                         ids=lambda p: p.name)
def test_production_alertmanager_examples_pass_amtool(path: Path) -> None:
    result = subprocess.run([require("amtool"), "check-config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
