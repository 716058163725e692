"""Prometheus scrape config, alert rules and the Grafana dashboard, checked offline.

* Every PromQL expression (alert rules, dashboard targets) parses (``promql-parser`` from PyPI)
  and names only series chatbus exports: those its ``metrics.py`` modules register in
  ``prometheus_client.REGISTRY``, plus Prometheus' ``up`` (``docs/metrics.md`` must list every
  one of them, with its type).
* Alert rules have the fields Alertmanager routing and the runbook rely on, and the runbook has a
  section for each.
* The dashboard has the fields Grafana needs to import it, panels on a valid grid, and no
  undefined template variable.
* Where ``promtool`` is installed (PATH, or ``~/.cache/chatbus/bin``; docs/deploy.md builds it),
  Prometheus itself checks the config and rules, runs ``alerts_test.yml`` and parses every
  dashboard query; otherwise those tests are skipped.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "infra" / "prometheus"
GRAFANA = ROOT / "infra" / "grafana"
DASHBOARD = GRAFANA / "chatbus-dashboard.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
RUNBOOK = ROOT / "docs" / "runbook.md"
PACKAGES = ("chatbus", "producers", "stream_processors", "inference_consumers", "analytics")
PROMETHEUS_SERIES = {"up"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


# --- which series exist -----------------------------------------------------------------------
def _metrics_modules() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("metrics.py")):
            found.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


def registered_families() -> dict[str, str]:
    """Name → type of every chatbus_* family the project's metrics modules register."""
    for module in _metrics_modules():
        importlib.import_module(module)
    return {f.name: f.type for f in REGISTRY.collect() if f.name.startswith("chatbus_")}


def documented_families() -> dict[str, str]:
    """Name → type of every metric in docs/metrics.md's tables (`name` | type | ...)."""
    rows = re.findall(
        r"^\| `(chatbus_[a-z0-9_]+)` \| (counter|gauge|histogram|summary) \|",
        METRICS_DOC.read_text(),
        re.MULTILINE,
    )
    return {(n.removesuffix("_total") if t == "counter" else n): t for n, t in rows}


def series_names(families: dict[str, str]) -> set[str]:
    return {name + suffix for name, kind in families.items() for suffix in _SUFFIXES[kind]}


@pytest.fixture(scope="module")
def known_series() -> set[str]:
    """What chatbus registers, and Prometheus' own: a name only the docs give is not enough."""
    return series_names(registered_families()) | PROMETHEUS_SERIES


def test_every_registered_metric_is_documented() -> None:
    registered, documented = registered_families(), documented_families()
    assert registered, "no metrics module imported"
    missing = sorted(set(registered) - set(documented))
    assert not missing, f"add these to docs/metrics.md: {missing}"
    wrong = {
        n: (registered[n], documented[n]) for n in registered if registered[n] != documented[n]
    }
    assert not wrong, f"docs/metrics.md gives another type (registered, documented): {wrong}"


# --- PromQL ---------------------------------------------------------------------------------
def selectors(node: Any) -> Iterator[promql_parser.VectorSelector]:
    """Every vector selector in a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
    elif isinstance(node, promql_parser.MatrixSelector):
        yield node.vector_selector
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from selectors(arg)
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from selectors(node.lhs)
        yield from selectors(node.rhs)
    elif isinstance(node, promql_parser.AggregateExpr):
        yield from selectors(node.expr)
        if node.param is not None:
            yield from selectors(node.param)
    elif isinstance(
        node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr
    ):
        yield from selectors(node.expr)
    elif not isinstance(node, promql_parser.NumberLiteral | promql_parser.StringLiteral):
        raise TypeError(f"unhandled PromQL node {type(node).__name__}")


def metric_names(expr: str) -> set[str]:
    names = set()
    for selector in selectors(promql_parser.parse(expr)):
        name = selector.name or next(
            (m.value for m in selector.matchers.matchers if m.name == "__name__"), None
        )
        assert name, f"a selector without a metric name in {expr!r}"
        names.add(name)
    return names


def test_the_parser_is_live() -> None:
    with pytest.raises(ValueError, match="parenthesis"):
        promql_parser.parse("sum(rate(chatbus_inference_tokens_total[5m])")
    assert metric_names(
        'absent(up{component="worker"} == 1) or sum by (le) '
        "(rate(a_bucket[5m])) / on() group_left count(b)"
    ) == {"up", "a_bucket", "b"}


# --- Prometheus config and rules ------------------------------------------------------------
def load_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_scrape_config_discovers_the_annotated_pods() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    k8s = jobs["chatbus"]
    assert k8s["kubernetes_sd_configs"][0]["role"] == "pod"
    relabel = json.dumps(k8s["relabel_configs"])
    for annotation in ("scrape", "port", "path"):  # the prometheus.io/* pod annotations
        assert f"__meta_kubernetes_pod_annotation_prometheus_io_{annotation}" in relabel
    # `component`, which the alerts select on, comes from the pods' component label
    assert {
        "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
        "target_label": "component",
    } in k8s["relabel_configs"]
    assert jobs["chatbus-local"]["static_configs"]


REQUIRED_ALERTS = {  # what issue 7 asks for → the alert that covers it
    "consumer lag": "ChatbusConsumerLagHigh",
    "time to first token p99": "ChatbusTimeToFirstTokenP99High",
    "DLQ rate": "ChatbusDeadLetters",
    "a worker down": "ChatbusWorkerDown",
    "archive lag": "ChatbusArchiveLagHigh",
}


def test_the_required_alerts_exist() -> None:
    alerts = {rule["alert"] for rule in load_rules()}
    assert set(REQUIRED_ALERTS.values()) <= alerts


def _runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's headings."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


@pytest.mark.parametrize("rule", load_rules(), ids=lambda r: r.get("alert", r.get("record")))
def test_alert_rule(rule: dict[str, Any], known_series: set[str]) -> None:
    assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
    assert re.fullmatch(r"Chatbus[A-Za-z0-9]+", rule["alert"])
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
    if "for" in rule:
        assert re.fullmatch(r"\d+[smh]", rule["for"])
    unknown = metric_names(rule["expr"]) - known_series
    assert not unknown, f"{rule['alert']} uses series chatbus does not export: {unknown}"
    page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
    assert page == "docs/runbook.md"
    assert anchor in _runbook_anchors(), f"docs/runbook.md has no section #{anchor}"


def test_an_unknown_metric_in_a_rule_is_caught(known_series: set[str]) -> None:
    assert metric_names("rate(chatbus_made_up_total[5m]) > 0") - known_series == {
        "chatbus_made_up_total"
    }


# --- Grafana --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Every PromQL target (the usage panels' SQL runs against the real ledger in
    tests/integration/test_usage_ledger.py)."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if "expr" in target:
                yield panel, target


def sql_targets(dashboard: dict[str, Any]) -> list[str]:
    """The SQL of every panel on the usage ledger's PostgreSQL."""
    return [
        target["rawSql"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "rawSql" in target
    ]


_GRAFANA_RANGES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def grafana_to_promql(expr: str, variables: set[str]) -> str:
    """Replace Grafana's interval macros and the dashboard's variables with sample values."""
    for macro, value in _GRAFANA_RANGES.items():
        expr = expr.replace(macro, value)
    used = set(re.findall(r"\$\{?(\w+)\}?", expr))
    assert used <= variables, f"undefined template variables {used - variables} in {expr!r}"
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def test_dashboard_has_what_grafana_needs(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] and dashboard["uid"] and len(dashboard["uid"]) <= 40
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert "id" not in dashboard or dashboard["id"] is None  # an id would clash on import
    assert dashboard["time"]["from"] and dashboard["time"]["to"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        assert panel["type"] in {
            "row",
            "timeseries",
            "stat",
            "gauge",
            "bargauge",
            "table",
            "heatmap",
            "text",
        }
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y"))
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] != "row":
            assert panel["title"] and panel["targets"], panel["id"]
            assert panel["datasource"]["uid"] in {"${datasource}", "${ledger}"}
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), f"duplicate refIds in {panel['title']!r}"


def test_dashboard_queries_use_known_series(
    dashboard: dict[str, Any], known_series: set[str]
) -> None:
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    used: set[str] = set()
    for panel, target in targets(dashboard):
        names = metric_names(grafana_to_promql(target["expr"], variables))
        unknown = names - known_series
        assert not unknown, f"panel {panel['title']!r} uses unknown series {unknown}"
        used |= names
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["query"]["query"])
            assert query and query.group(1) in known_series
    # what issue 7 asks the dashboard to show
    for series in (
        "chatbus_gateway_requests_total",
        "chatbus_inference_time_to_first_token_seconds_bucket",
        "chatbus_stage_latency_seconds_bucket",
        "chatbus_inference_tokens_total",
        "chatbus_inference_inflight",
        "chatbus_inference_batch_occupancy",
        "chatbus_consumer_lag_records",
        "chatbus_dead_letters_total",
        "chatbus_moderation_flagged_total",
        "chatbus_archive_lag_records",
        "chatbus_ledger_rows_total",
    ):
        assert series in used, f"no panel shows {series}"


def test_grafana_provisioning_examples() -> None:
    (datasources,) = (
        yaml.safe_load(p.read_text())
        for p in (GRAFANA / "provisioning" / "datasources").glob("*.yaml")
    )
    kinds = {d["uid"]: d["type"] for d in datasources["datasources"]}
    assert kinds["chatbus-ledger"] == "grafana-postgresql-datasource"
    (dashboards,) = (
        yaml.safe_load(p.read_text())
        for p in (GRAFANA / "provisioning" / "dashboards").glob("*.yaml")
    )
    assert datasources["apiVersion"] == dashboards["apiVersion"] == 1
    assert datasources["datasources"][0]["type"] == "prometheus"
    assert dashboards["providers"][0]["type"] == "file"


# --- promtool, where installed ---------------------------------------------------------------
def _promtool() -> str | None:
    found = shutil.which("promtool")
    cached = Path.home() / ".cache" / "chatbus" / "bin" / "promtool"
    return found or (str(cached) if cached.exists() else None)


needs_promtool = pytest.mark.skipif(
    _promtool() is None,
    reason="promtool is not installed (docs/deploy.md: go install .../cmd/promtool)",
)


def _run_promtool(*args: str) -> str:
    tool = _promtool()
    assert tool is not None
    done = subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_promtool
def test_promtool_checks_config_and_rules() -> None:
    _run_promtool("check", "config", "prometheus.yml")
    _run_promtool("check", "rules", "alerts.yml")


@needs_promtool
def test_promtool_alert_unit_tests_pass() -> None:
    assert "SUCCESS" in _run_promtool("test", "rules", "alerts_test.yml")


@needs_promtool
def test_promtool_parses_every_dashboard_query(dashboard: dict[str, Any], tmp_path: Path) -> None:
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    rules = [
        {
            "record": f"chatbus:panel{p['id']}:{t['refId']}",
            "expr": grafana_to_promql(t["expr"], variables),
        }
        for p, t in targets(dashboard)
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run_promtool("check", "rules", str(path))
