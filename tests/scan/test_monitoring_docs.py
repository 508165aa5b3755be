"""docs/monitoring: the alert rules and the Grafana dashboard use the exporter's metrics."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from _tools import require_tool

DOCS = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
EXPORTED = {"x509_cert_not_after", "x509_cert_not_before", "x509_cert_expired",
            "certfleet_listener_up", "certfleet_listener_current_version",
            "certfleet_chain_not_after", "certfleet_scan_duration_seconds",
            "certfleet_last_deploy_timestamp_seconds", "certfleet_last_deploy_outcome"}
METRIC = re.compile(r"\b(x509_[a-z_]+|certfleet_[a-z_]+)\b")


def test_alert_rules_load_and_name_exported_metrics() -> None:
    rules = yaml.safe_load((DOCS / "certfleet-alerts.yml").read_text())
    [group] = rules["groups"]
    alerts = {rule["alert"]: rule for rule in group["rules"]}
    assert {"CertificateExpiresSoon", "CertificateExpired", "ListenerDown"} <= set(alerts)
    used = {name for rule in alerts.values() for name in METRIC.findall(rule["expr"])}
    assert used and used <= EXPORTED


def test_dashboard_loads_and_names_exported_metrics() -> None:
    dashboard = json.loads((DOCS / "certfleet-dashboard.json").read_text())
    assert dashboard["title"] and dashboard["panels"]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used and used <= EXPORTED
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_promtool_checks_the_rules() -> None:
    promtool = require_tool("promtool")
    out = subprocess.run([promtool, "check", "rules", str(DOCS / "certfleet-alerts.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
