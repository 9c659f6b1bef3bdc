"""Reference docs generated from the code: the site file's schema and the HTTP API.

    gridsched docs config  > docs/reference/config.md
    gridsched docs openapi > docs/reference/openapi.json
    gridsched docs api     > docs/reference/api.md

tests/test_docs.py fails when the committed files differ from what this writes.
"""

from __future__ import annotations

import argparse
import inspect
import json
import tempfile
import types
import typing
from enum import Enum
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from models.device_adapter import AdapterConfig
from models.devices import DeviceClass, Mode
from models.meter import MeterRegister, SiteMeter
from models.signals import GridEvent
from models.site import (
    BatchJob,
    CoincidentPeak,
    Daemon,
    HashpriceFeed,
    Inference,
    InferenceDemand,
    Metrics,
    Mining,
    OnsiteGeneration,
    OpenADR,
    OpenADRResource,
    Penalties,
    PriceFeed,
    PriceSource,
    SiteConfig,
    SiteSpec,
    Tariff,
)

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("[site]", SiteSpec),
    ("[site.onsite]", OnsiteGeneration),
    ("[site.meter]", SiteMeter),
    ("[site.meter.map]", MeterRegister),
    ("[prices]", PriceSource),
    ("[mining]", Mining),
    ("[tariff]", Tariff),
    ("[[tariff.coincident_peaks]]", CoincidentPeak),
    ("[inference]", Inference),
    ("[[inference.batch]]", BatchJob),
    ("[inference.demand]", InferenceDemand),
    ("[[devices]]", DeviceClass),
    ("[[devices.modes]]", Mode),
    ("[devices.adapter]", AdapterConfig),
    ("[penalties]", Penalties),
    ("[daemon]", Daemon),
    ("[daemon.price_feed]", PriceFeed),
    ("[daemon.hashprice_feed]", HashpriceFeed),
    ("[openadr]", OpenADR),
    ("[[openadr.resources]]", OpenADRResource),
    ("[metrics]", Metrics),
    ("[[events]]", GridEvent),
]


def _type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(t)[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(t))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(t) if a is not Ellipsis]
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        k, v = typing.get_args(t)
        return f"table of {_type_name(k)} to {_type_name(v)}"
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(t))
    if isinstance(t, type) and issubclass(t, Enum):
        return " \\| ".join(f"`{m.value}`" for m in t)
    if isinstance(t, type) and issubclass(t, BaseModel):
        return "table"
    if t is type(None):
        return "none"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        t, getattr(t, "__name__", str(t))
    )


def _metadata(f: FieldInfo) -> list[Any]:
    """Field constraints, including those of an Annotated type inside ``X | None``."""
    meta = list(f.metadata)
    for arg in typing.get_args(f.annotation):
        if typing.get_origin(arg) is typing.Annotated:
            meta += list(getattr(arg, "__metadata__", ()))
            meta += [m for a in typing.get_args(arg)[1:] for m in getattr(a, "metadata", [])]
    return meta


def _constraints(f: FieldInfo) -> str:
    out = []
    for m in _metadata(f):
        for attr, sym in (
            ("gt", ">"),
            ("ge", ">="),
            ("lt", "<"),
            ("le", "<="),
            ("min_length", "min length"),
            ("max_length", "max length"),
            ("pattern", "pattern"),
        ):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sym} `{v}`" if attr == "pattern" else f"{sym} {v}")
    return ", ".join(dict.fromkeys(out)).replace("|", "\\|")


def _default(f: FieldInfo) -> str:
    if f.is_required():
        return "**required**"
    d = f.get_default(call_default_factory=True)
    if isinstance(d, BaseModel):
        return "(table)"
    if isinstance(d, Enum):
        return f"`{d.value}`"
    if d is None:
        return "none"
    if isinstance(d, tuple | list | dict) and not d:
        return "empty"
    return f"`{json.dumps(d, default=str)}`"


def config_reference() -> str:
    lines = [
        "# Site file reference (generated)",
        "",
        "Every key of the site TOML file, from the schema the code validates against: type,",
        "default and constraints. Written by `gridsched docs config`; the narrative guide is",
        "[../configuration.md](../configuration.md). Unknown keys are errors.",
        "",
    ]
    for title, model in SECTIONS:
        first = inspect.cleandoc(model.__doc__ or "").split("\n\n")[0]
        doc = first.replace("\n", " ")
        lines += [f"## `{title}`", ""]
        if doc:
            lines += [doc, ""]
        lines += ["| key | type | default | constraints |", "|---|---|---|---|"]
        for name, f in model.model_fields.items():
            if model is SiteConfig or name == "base_dir":
                continue
            lines.append(
                f"| `{name}` | {_type_name(f.annotation)} | {_default(f)} | {_constraints(f)} |"
            )
        lines.append("")
    return "\n".join(lines)


def openapi() -> dict[str, Any]:
    from models.site import parse_site
    from scheduler.service.api import create_app
    from scheduler.service.daemon import Daemon as DaemonService

    site = {
        "site": {"name": "reference", "interconnect_kw": 1000},
        "devices": [
            {
                "name": "asic",
                "kind": "asic",
                "count": 1,
                "modes": [{"name": "stock", "power_kw": 3, "hashrate_ths": 100}],
            }
        ],
    }
    with tempfile.TemporaryDirectory() as tmp:
        daemon = DaemonService(parse_site(site, "reference"), f"{tmp}/ref.db")
        try:
            return create_app(daemon, serving=False).openapi()
        finally:
            daemon.store.close()


def api_reference() -> str:
    spec = openapi()
    lines = [
        "# HTTP API reference (generated)",
        "",
        "From the daemon's OpenAPI schema ([openapi.json](openapi.json), also served at",
        "`/openapi.json` with a browser at `/docs`). Written by `gridsched docs api`; the guide",
        "with signing examples is [../daemon.md](../daemon.md).",
        "",
    ]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            lines += [f"## `{method.upper()} {path}`", "", op.get("summary", ""), ""]
            params = op.get("parameters", [])
            if params:
                lines += ["| parameter | in | required |", "|---|---|---|"]
                lines += [
                    f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} |"
                    for p in params
                ]
                lines.append("")
            body = op.get("requestBody", {}).get("content", {})
            if body:
                lines += [f"Body: {', '.join(f'`{c}`' for c in body)}.", ""]
            codes = ", ".join(
                f"{code} {r.get('description', '')}".strip()
                for code, r in op.get("responses", {}).items()
            )
            lines += [f"Responses: {codes}.", ""]
    return "\n".join(lines)


def cmd_docs(args: argparse.Namespace) -> int:
    if args.what == "config":
        print(config_reference())
    elif args.what == "openapi":
        print(json.dumps(openapi(), indent=1, sort_keys=True))
    else:
        print(api_reference())
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("docs", help="print the generated reference docs (config, openapi, api)")
    p.add_argument(
        "what",
        choices=["config", "openapi", "api"],
        help="config: the site file keys; openapi: the API definition (JSON); api: as Markdown",
    )
    p.set_defaults(func=cmd_docs)
