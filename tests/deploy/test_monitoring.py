"""deploy/monitoring/: the alert rules and the dashboard parse, and name only real metrics.

promtool (Debian's `prometheus` package) checks the rule file's syntax and
PromQL when it is installed; CI installs it and sets CONCERT_REQUIRE_PROMTOOL=1
so that a missing promtool fails instead of skipping. Without it the Python
checks still run: the structure of every rule and panel, a runbook section for
every alert, and every metric and label the expressions name against what a
running server exports on /metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from server.app import App
from server.config import Settings

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "monitoring" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "monitoring" / "dashboard.json"
RUNBOOK = ROOT / "docs" / "runbook.md"

# Series Prometheus makes itself, and labels it adds to every scraped series.
PROMETHEUS_SERIES = {"up"}
TARGET_LABELS = {"job", "instance"}
# Words of PromQL that are not metric names (functions are told by their "(").
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
PROMQL_KEYWORDS |= {"group_left", "group_right", "inf", "nan"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
}


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def every_expr() -> list[str]:
    return [rule["expr"] for rule in alert_rules()] + dashboard_exprs()


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (selectors, not functions or labels)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[match.end() :].lstrip()
        if match.group() in PROMQL_KEYWORDS or rest.startswith("("):
            continue
        names.add(match.group())
    return names


def label_names(expr: str) -> set[str]:
    """Labels in matchers and in by/without/on/ignoring lists."""
    labels: set[str] = set()
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    for matchers in re.findall(r"\{([^}]*)\}", stripped):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    for grouping in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", stripped):
        labels |= {name.strip() for name in grouping.split(",") if name.strip()}
    return labels


def test_the_extractors_find_names_and_skip_functions_and_labels() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (grpc_method, le) (rate(x_seconds_bucket{a="b:c"}[5m])))'
        " > 1 and on (pool) max(y_total) - time()"
    )
    assert metric_names(expr) == {"x_seconds_bucket", "y_total"}
    assert label_names(expr) == {"grpc_method", "le", "a", "pool"}


@pytest.mark.skipif(
    shutil.which("promtool") is None and os.environ.get("CONCERT_REQUIRE_PROMTOOL") != "1",
    reason="promtool is not installed (apt-get install prometheus)",
)
def test_promtool_accepts_the_rules() -> None:
    assert shutil.which("promtool"), "CONCERT_REQUIRE_PROMTOOL=1 but no promtool on PATH"
    result = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", "")).replace(" ", "-")
        found.add(slug)
    return found


def test_every_rule_is_complete_and_has_its_runbook_section() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "an alert name is used twice"
    sections = anchors(RUNBOOK.read_text())
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"].get(key), f"{rule['alert']} lacks {key}"
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "docs/runbook.md", rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in sections, (
            f"docs/runbook.md has no section '{rule['alert']}'"
        )
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", "0s"))), rule["alert"]


def test_the_dashboard_is_grafana_json_with_unique_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], f"panel {panel['title']!r} shows nothing"
            assert all(target["expr"].strip() for target in panel["targets"])


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(metrics_listen="127.0.0.1:0")


async def exported(app: App) -> tuple[set[str], set[str]]:
    """The series names (with their suffixes) and label names a server exports."""
    assert app.metrics_port

    def fetch() -> str:
        url = f"http://127.0.0.1:{app.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            return str(reply.read().decode())

    names: set[str] = set()
    labels: set[str] = set()
    for family in text_string_to_metric_families(await asyncio.to_thread(fetch)):
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
        for sample in family.samples:
            names.add(sample.name)
            labels |= set(sample.labels)
    # Labelled families with no child yet show no sample: their labels, from the code.
    labels |= {"job_name", "outcome", "grpc_type", "grpc_service", "grpc_method", "grpc_code", "le"}
    return names, labels


async def test_every_metric_and_label_named_is_one_the_server_exports(app: App) -> None:
    names, labels = await exported(app)
    assert "concert_queue_paused" in names and "grpc_server_handled_total" in names
    for expr in every_expr():
        unknown = metric_names(expr) - names - PROMETHEUS_SERIES
        assert not unknown, f"{sorted(unknown)} in {expr!r} are not exported"
        unknown_labels = label_names(expr) - labels - TARGET_LABELS
        assert not unknown_labels, f"labels {sorted(unknown_labels)} in {expr!r} are not exported"
