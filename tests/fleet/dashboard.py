"""The centre's Grafana dashboard (firmware_tools/grafana/fieldear-fleet.json) as data: its panels' targets, the
metric and label names a PromQL expression uses, and its SQL with Grafana's macros expanded. Shared by
tests/fleet/test_dashboard.py and the panel preview of the load bench (tests/bench/dashboard_preview.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

GRAFANA = Path(__file__).resolve().parents[2] / "firmware_tools" / "grafana"
DASHBOARD = GRAFANA / "fieldear-fleet.json"

# PromQL words that are not metric names (functions are recognised by the "(" after them)
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def targets(kind: str):
    """(panel title, target) of every target whose datasource is of type ``kind`` (prometheus, postgres)."""
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            if target["datasource"]["type"] == kind:
                yield panel["title"], target


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression uses."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", " ".join(re.findall(r"\{([^}]*)\}", expr))))
    for clause in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        labels |= {w.strip() for w in clause.split(",") if w.strip()}
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    words = re.findall(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", expr)
    return {w for w in words if w.lower() not in PROMQL_WORDS}, labels


def expand_macros(sql: str, t_from: float = 0, t_to: float = 4102444800) -> str:
    """The dashboard's Grafana SQL macros expanded as Grafana would for the time range [t_from, t_to] (unix s)."""
    sql = re.sub(r"\$__unixEpochFilter\((\w+)\)", rf"\1 >= {t_from!r} AND \1 <= {t_to!r}", sql)
    if "$__" in sql:
        raise ValueError(f"unexpanded Grafana macro in {sql}")
    return sql
