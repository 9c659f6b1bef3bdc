"""Writes gridsched.json, the Grafana dashboard (Grafana 11, schemaVersion 39).

    .venv/bin/python deploy/grafana/make_dashboard.py

Kept as code so that every panel's query names a metric the daemon exports
(tests/test_deploy.py checks them against a real scrape).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DS = {"type": "prometheus", "uid": "${datasource}"}


def ts(
    pid: int,
    title: str,
    targets: list[tuple[str, str]],
    unit: str,
    x: int,
    y: int,
    w: int = 12,
    h: int = 8,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {"lineWidth": 1, "fillOpacity": extra.pop("fill", 0)},
            },
            "overrides": extra.pop("overrides", []),
        },
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi"},
        },
        "targets": [
            {"refId": chr(65 + i), "datasource": DS, "expr": e, "legendFormat": lf}
            for i, (e, lf) in enumerate(targets)
        ],
        **extra,
    }


def stat(
    pid: int,
    title: str,
    expr: str,
    unit: str,
    x: int,
    y: int,
    thresholds: list[tuple[float | None, str]],
) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "stat",
        "title": title,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": 4, "h": 4},
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"value": v, "color": c} for v, c in thresholds],
                },
            }
        },
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"},
        "targets": [{"refId": "A", "datasource": DS, "expr": expr}],
    }


def dashboard() -> dict[str, Any]:
    cap_override = [
        {
            "matcher": {"id": "byName", "options": "cap"},
            "properties": [
                {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
                {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            ],
        }
    ]
    panels = [
        stat(
            1,
            "Import",
            'sum(gridsched_site_power_watts{kind="import", site=~"$site"})',
            "watt",
            0,
            0,
            [(None, "green")],
        ),
        stat(
            2,
            "Headroom to cap",
            'sum(gridsched_site_import_cap_watts{site=~"$site"}) - sum(gridsched_site_power_watts{kind="import", site=~"$site"})',
            "watt",
            4,
            0,
            [(None, "red"), (0, "orange"), (100000, "green")],
        ),
        stat(
            3,
            "Plan age",
            'max(gridsched_plan_age_seconds{site=~"$site"})',
            "s",
            8,
            0,
            [(None, "green"), (600, "orange"), (900, "red")],
        ),
        stat(
            4,
            "Devices not read",  # unreachable, or answering in words that cannot be read
            'sum(gridsched_devices{health=~"unreachable|unreadable", site=~"$site"})',
            "none",
            12,
            0,
            [(None, "green"), (1, "orange")],
        ),
        stat(
            5,
            "Active DR events",
            'sum(gridsched_signals_active{type=~"curtail|alert", site=~"$site"}) or vector(0)',
            "none",
            16,
            0,
            [(None, "green"), (1, "orange")],
        ),
        stat(
            6,
            "Fail-safe",
            'max(gridsched_failsafe_active{site=~"$site"})',
            "bool",
            20,
            0,
            [(None, "green"), (1, "red")],
        ),
        ts(
            10,
            "Power by kind against the cap",
            [
                (
                    'sum by (kind) (gridsched_site_power_watts{kind=~"asic|gpu", site=~"$site"})',
                    "{{kind}} (IT)",
                ),
                ('sum(gridsched_site_power_watts{kind="import", site=~"$site"})', "import"),
                ('sum(gridsched_site_import_cap_watts{site=~"$site"})', "cap"),
            ],
            "watt",
            0,
            4,
            fill=10,
            overrides=cap_override,
        ),
        ts(
            11,
            "Plan against measured import",
            [
                ('sum(gridsched_plan_import_watts{site=~"$site"})', "planned"),
                ('sum(gridsched_site_power_watts{kind="import", site=~"$site"})', "measured"),
            ],
            "watt",
            12,
            4,
        ),
        ts(
            12,
            "Energy price",
            [('avg(gridsched_market_price_usd_per_mwh{site=~"$site"})', "USD/MWh")],
            "currencyUSD",
            0,
            12,
        ),
        ts(
            13,
            "Hashprice",
            [('avg(gridsched_market_hashprice_usd_per_ths_day{site=~"$site"})', "USD/TH/s/day")],
            "currencyUSD",
            12,
            12,
        ),
        ts(
            14,
            "Revenue and energy cost per hour",
            [
                (
                    'sum by (source) (rate(gridsched_revenue_usd_total{site=~"$site"}[$__rate_interval])) * 3600',
                    "{{source}}",
                ),
                (
                    'sum(rate(gridsched_energy_cost_usd_total{site=~"$site"}[$__rate_interval])) * 3600',
                    "energy cost",
                ),
            ],
            "currencyUSD",
            0,
            20,
        ),
        ts(
            15,
            "Power by class and mode",
            [
                (
                    'sum by (class, mode) (gridsched_class_power_watts{site=~"$site"})',
                    "{{class}} {{mode}}",
                )
            ],
            "watt",
            12,
            20,
            fill=30,
            stack=True,
        ),
        ts(
            16,
            "Hashrate",
            [
                (
                    'sum by (class) (gridsched_mining_hashrate_hashes_per_second{site=~"$site"})',
                    "{{class}}",
                )
            ],
            "Hs",
            0,
            28,
        ),
        ts(
            17,
            "Tokens per second",
            [
                (
                    'sum by (class) (gridsched_inference_tokens_per_second{site=~"$site"})',
                    "{{class}}",
                )
            ],
            "short",
            12,
            28,
        ),
        ts(
            18,
            "Device health",
            [('sum by (health) (gridsched_devices{site=~"$site"})', "{{health}}")],
            "none",
            0,
            36,
            fill=30,
        ),
        ts(
            19,
            "Solve time (p90) and fast-path shed time (p90)",
            [
                (
                    'histogram_quantile(0.9, sum by (le) (rate(gridsched_solver_duration_seconds_bucket{site=~"$site"}[$__rate_interval])))',
                    "solve",
                ),
                (
                    'histogram_quantile(0.9, sum by (le) (rate(gridsched_fastpath_duration_seconds_bucket{site=~"$site"}[$__rate_interval])))',
                    "fast path (every shed; devices not answering wait out their timeout)",
                ),
            ],
            "s",
            12,
            36,
        ),
        ts(
            20,
            "GPU power against limit",
            [
                ('gridsched_gpu_power_watts{site=~"$site"}', "GPU {{gpu}}"),
                ('gridsched_gpu_power_limit_watts{site=~"$site"}', "limit {{gpu}}"),
            ],
            "watt",
            0,
            44,
            w=24,
        ),
        ts(
            21,
            "Feed age (seconds since a good price / hashprice reading)",
            [('max by (feed) (gridsched_feed_age_seconds{site=~"$site"})', "{{feed}}")],
            "s",
            0,
            52,
            w=24,
        ),
        ts(
            22,
            "Cap compliance (1: the state now; unverified: devices not read, no meter)",
            [('max by (state) (gridsched_cap_compliance{site=~"$site"})', "{{state}}")],
            "none",
            0,
            60,
        ),
        ts(
            23,
            "Import estimated for devices that cannot be read",
            [('sum(gridsched_site_power_estimated_watts{site=~"$site"})', "estimated")],
            "watt",
            12,
            60,
        ),
    ]
    for p in panels:
        if p.pop("stack", False):
            p["fieldConfig"]["defaults"]["custom"]["stacking"] = {"mode": "normal"}
    return {
        "uid": "gridsched-site",
        "title": "gridsched: site power, money and grid signals",
        "tags": ["gridsched"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-24h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                },
                {
                    "name": "site",
                    "type": "query",
                    "datasource": DS,
                    "query": {
                        "query": "label_values(gridsched_site_power_watts, site)",
                        "refId": "site",
                    },
                    "definition": "label_values(gridsched_site_power_watts, site)",
                    "includeAll": True,
                    "multi": True,
                    "current": {"text": "All", "value": "$__all"},
                    "refresh": 2,
                },
            ]
        },
        "annotations": {
            "list": [
                {
                    "name": "DR events",
                    "datasource": DS,
                    "enable": True,
                    "iconColor": "red",
                    "expr": 'sum by (type) (gridsched_signals_active{type=~"curtail|alert", site=~"$site"}) > 0',
                    "step": "60s",
                    "titleFormat": "DR {{type}} in force",
                    "useValueForTime": False,
                },
                {
                    "name": "Fail-safe",
                    "datasource": DS,
                    "enable": True,
                    "iconColor": "orange",
                    "expr": 'max(gridsched_failsafe_active{site=~"$site"}) > 0',
                    "step": "60s",
                    "titleFormat": "fail-safe cap",
                },
            ]
        },
        "panels": panels,
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("gridsched.json")
    out.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {out}")
