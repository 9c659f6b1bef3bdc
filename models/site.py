"""The site configuration: one TOML file describes the site, its tariff, its markets,
its inference business, its devices and the penalties of its soft constraints.

``load_site(path)`` validates everything and raises ``ConfigError`` listing each bad key
path, the value found and what would be valid. Each section's model lives in a module of its
own (``config_site``, ``config_inference``, ``config_daemon``); they are all importable from
here, as before.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Self

from pydantic import ValidationError, model_validator

from models.config_base import NonNeg, Pos, Strict
from models.config_daemon import (
    Daemon,
    FeedKind,
    HashpriceFeed,
    Metrics,
    OpenADR,
    OpenADRResource,
    Posture,
    PriceFeed,
)
from models.config_inference import (
    BatchJob,
    Inference,
    InferenceDemand,
)
from models.config_site import (
    CoincidentPeak,
    Mining,
    OnsiteGeneration,
    Penalties,
    PriceFormat,
    PriceSource,
    SiteSpec,
    Tariff,
)
from models.devices import DeviceClass
from models.errors import KEY_MARK, at_key
from models.signals import GridEvent, class_problems, level_problems

__all__ = [
    "BatchJob",
    "CoincidentPeak",
    "Daemon",
    "FeedKind",
    "HashpriceFeed",
    "Inference",
    "InferenceDemand",
    "Metrics",
    "Mining",
    "NonNeg",
    "OnsiteGeneration",
    "OpenADR",
    "OpenADRResource",
    "Penalties",
    "Pos",
    "Posture",
    "PriceFeed",
    "PriceFormat",
    "PriceSource",
    "SiteConfig",
    "SiteSpec",
    "Strict",
    "Tariff",
    "load_site",
    "parse_site",
    "validation_problems",
]


class SiteConfig(Strict):
    site: SiteSpec
    prices: PriceSource = PriceSource()
    mining: Mining = Mining()
    tariff: Tariff = Tariff()
    inference: Inference = Inference()
    devices: tuple[DeviceClass, ...]
    penalties: Penalties = Penalties()
    events: tuple[GridEvent, ...] = ()
    daemon: Daemon = Daemon()
    openadr: OpenADR = OpenADR()
    metrics: Metrics = Metrics()
    base_dir: str = "."

    def _no_shared_hosts(self) -> None:
        """A miner's address in two classes would be counted twice and driven by both."""
        from models.device_adapter import expand_hosts

        owner: dict[str, str] = {}
        shared: dict[tuple[str, str], list[str]] = {}
        for d in self.devices:
            if d.adapter is None or not d.adapter.hosts:
                continue
            for h in expand_hosts(d.adapter.hosts):
                first = owner.setdefault(h, d.name)
                if first != d.name:
                    shared.setdefault((first, d.name), []).append(h)
        if shared:
            (a, b), hosts = next(iter(shared.items()))
            raise ValueError(
                f"classes {a!r} and {b!r} both list {len(hosts)} address(es) in adapter.hosts "
                f"(e.g. {hosts[0]}): a miner belongs to one class"
            )

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = [d.name for d in self.devices]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate device class names {dup}")
        if not self.devices:
            raise ValueError("at least one device class is needed under [[devices]]")
        self._no_shared_hosts()
        for r in self.openadr.resources:
            unknown = [c for c in r.classes if c not in names]
            if unknown:
                raise ValueError(
                    f"openadr resource {r.name!r}: classes {unknown} are not device classes "
                    f"(valid: {names})"
                )
        for where, what in class_problems(self.events, names):
            raise ValueError(f"{where}: {what}")
        for what in level_problems(self.events, self.tariff.dr_levels_kw):
            raise at_key("events", what)
        inf = self.inference
        measured = [d.name for d in self.devices if d.prefill_tokens_s]
        if inf.ttft_p95_s is not None and measured and inf.ttft_prompt_tokens is None:
            raise ValueError(
                f"inference.ttft_prompt_tokens: required with ttft_p95_s and the prefill "
                f"rates of classes {measured} (the prompt length, in tokens, the objective "
                "is held for)"
            )
        return self

    def resolve(self, path: str) -> Path:
        """A path from the file, relative to the file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _value_at(data: Any, loc: tuple[int | str, ...]) -> tuple[bool, Any]:
    cur = data
    for part in loc:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, cur


def _unknown_key_words(loc: tuple[int | str, ...]) -> str:
    """An unknown key, with the nearest the section takes and all of them."""
    import difflib

    keys = _keys_at(loc[:-1])
    if not keys:
        return "unknown key (check the spelling; see docs/configuration.md)"
    near = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.6)
    guess = f"did you mean {near[0]!r}? " if near else ""
    return f"unknown key; {guess}this section takes: {', '.join(sorted(keys))}"


def _keys_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the section at ``loc`` of the site file takes (none found: [])."""
    import typing

    from pydantic import BaseModel

    def models(tp: Any) -> list[type[BaseModel]]:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return [tp]
        return [m for arg in typing.get_args(tp) for m in models(arg)]

    def items(tp: Any) -> list[Any]:  # what a list's or a dict's entries are
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is dict:
            return [args[-1]]
        if origin in (list, tuple):  # tuple[X, ...] or tuple[X, Y]
            return [a for a in args if a is not Ellipsis]
        return [i for arg in typing.get_args(tp) for i in items(arg)]

    current: list[Any] = [SiteConfig]
    for part in loc:
        nxt: list[Any] = []
        for tp in current:
            if isinstance(part, int):
                nxt += items(tp)
                continue
            for m in models(tp):
                for name, f in m.model_fields.items():
                    if part in (name, f.alias):
                        nxt.append(f.annotation)
        if not nxt:
            return []
        current = nxt
    keys = {f.alias or n for tp in current for m in models(tp) for n, f in m.model_fields.items()}
    return sorted(keys - {"base_dir"})  # set from the file's own directory, not a key of it


def _seconds_hint(loc: tuple[Any, ...], value: Any) -> str:
    """``min_on_s = "10min"``: a ``*_s`` key takes seconds; say how many that was."""
    if not (loc and isinstance(loc[-1], str) and loc[-1].endswith("_s") and isinstance(value, str)):
        return ""
    from models.durations import parse_duration_s

    try:
        seconds = parse_duration_s(value)
    except ValueError:
        seconds = 600
    return f"; {loc[-1]} takes a number of seconds, e.g. {seconds}"


def validation_problems(exc: ValidationError, data: Any) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if msg.startswith(KEY_MARK):  # a model validator's error about one of its keys
            key, _, msg = msg[len(KEY_MARK) :].partition(KEY_MARK)
            loc += tuple(key.split("."))
        found, value = _value_at(data, loc)
        if err["type"] == "extra_forbidden":
            msg = _unknown_key_words(loc)
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] in ("tuple_type", "list_type") and found:
            # pydantic says "a valid tuple": the site file writes a TOML array
            parts = (value.split()[:3] if isinstance(value, str) else []) or ["a", "b"]
            example = "[" + ", ".join(f'"{w}"' for w in parts) + "]"
            msg = f"expected a list (a TOML array, e.g. {example}), got {value!r}"
            problems.append((_format_loc(loc), msg))
            continue
        elif found and not isinstance(value, dict | list):
            msg = f"{msg} (got {value!r}){_seconds_hint(loc, value)}"
        problems.append((_format_loc(loc), msg))
    return problems


def parse_site(data: dict[str, Any], source: str, base_dir: str = ".") -> SiteConfig:
    from models.errors import ConfigError

    try:
        return SiteConfig.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(source, validation_problems(exc, data)) from None


def load_site(path: str | Path) -> SiteConfig:
    """Read and validate a site TOML file."""
    from models.errors import ConfigError
    from models.textfile import TOO_DEEP, read_text

    p = Path(path)
    text = read_text(p)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), [("(syntax)", str(exc))]) from None
    except RecursionError:
        raise ConfigError(str(p), [("(syntax)", TOO_DEEP)]) from None
    return parse_site(data, str(p), str(p.resolve().parent))
