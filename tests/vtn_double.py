"""A VTN test double: a real HTTP server on loopback, checked against the OpenADR 3 spec.

Every request it receives and every response it gives is validated with openapi-core
against ``../shared/openadr3/<version>/openadr3.yaml``; so is every notification it sends
(webhook body, MQTT message) against ``components/schemas/notification``. A violation is
recorded in ``violations`` (a request one is answered 400), and tests assert there are none.

The definition as published cannot be used as is; ``ERRATA`` lists the smallest patches that
make it usable, each with the reason, and ``test_ven.py`` shows each one is needed.

It implements what a VEN uses: ``/auth/server``, ``/auth/token`` (client credentials;
tokens expire by this server's clock after ``token_lifetime_s``), ``/programs``, ``/events``,
``/vens``, ``/resources`` (3.1.0) or ``/vens/{id}/resources`` (3.0.1), ``/subscriptions``,
``/reports`` with ``skip``/``limit``, and ``/notifiers`` (MQTT when given a broker port).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import json
import socket
import ssl
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml  # type: ignore[import-untyped]
from openapi_core import OpenAPI
from openapi_core.contrib.starlette.requests import StarletteOpenAPIRequest
from openapi_core.contrib.starlette.responses import StarletteOpenAPIResponse
from openapi_schema_validator import OAS30Validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# openapi-core checks the bearer scheme and warns that it cannot check the oauth2 one
warnings.filterwarnings("ignore", "Unsupported scheme type", UserWarning)

SPEC_DIR = Path(__file__).resolve().parents[2] / "shared" / "openadr3"

_OBJECTS = {
    "PROGRAM": "program",
    "EVENT": "event",
    "REPORT": "report",
    "SUBSCRIPTION": "subscription",
    "VEN": "ven",
    "RESOURCE": "resource",
}


def _errata_310(spec: dict[str, Any]) -> list[str]:
    s = spec["components"]["schemas"]
    done = []
    t = s["BlVenRequest"]["properties"]["targets"]
    if t.get("default") not in (None, []):
        t["default"] = None
        done.append("BlVenRequest.targets default is the string 'null          -' (a YAML typo)")
    for server, bl in (("ven", "BlVenRequest"), ("resource", "BlResourceRequest")):
        fixed = copy.deepcopy(s[bl])
        fixed["properties"].pop("objectType", None)
        fixed["required"] = [r for r in fixed["required"] if r != "objectType"]
        s[server]["allOf"] = [{"$ref": "#/components/schemas/objectMetadata"}, fixed]
        done.append(
            f"{server}: objectMetadata wants objectType {server.upper()}, {bl} wants "
            f"BL_{server.upper()}_REQUEST; no object is both, so {bl}'s is dropped"
        )
    done.append(_map_notification(spec))
    pd = s["programRequest"]["properties"]["payloadDescriptors"]["items"]["discriminator"]
    pd["mapping"] = {
        "EVENT_PAYLOAD_DESCRIPTOR": "#/components/schemas/eventPayloadDescriptor",
        "REPORT_PAYLOAD_DESCRIPTOR": "#/components/schemas/reportPayloadDescriptor",
    }
    done.append("program payloadDescriptors: discriminator values name no schema; mapped")
    return done


def _map_notification(spec: dict[str, Any]) -> str:
    obj = spec["components"]["schemas"]["notification"]["properties"]["object"]
    obj["discriminator"]["mapping"] = {k: f"#/components/schemas/{v}" for k, v in _OBJECTS.items()}
    return "notification.object: discriminator values (EVENT...) name no schema; mapped"


@functools.cache
def _parsed(version: str) -> dict[str, Any]:
    """The published definition as parsed once per run (1.1 s of YAML each time, and a test
    run starts some 60 VTN doubles); callers get copies of it."""
    spec: dict[str, Any] = yaml.safe_load((SPEC_DIR / version / "openadr3.yaml").read_text())
    return spec


def load_spec(version: str, errata: bool = True) -> tuple[dict[str, Any], list[str]]:
    spec = copy.deepcopy(_parsed(version))  # the errata change it: a copy of its own
    if not errata:
        return spec, []
    return spec, (_errata_310(spec) if version == "3.1.0" else [_map_notification(spec)])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _problem(status: int, title: str) -> JSONResponse:
    return JSONResponse({"title": title, "status": status, "detail": title}, status_code=status)


class VtnDouble:
    """Start with ``start()``; ``url`` is its base URL. Thread-safe enough for tests."""

    def __init__(
        self,
        version: str = "3.1.0",
        clients: dict[str, str] | None = None,
        bl_clients: frozenset[str] = frozenset({"bl"}),
        token_lifetime_s: int = 3600,
        mqtt_port: int | None = None,
    ) -> None:
        self.version = version
        self.clients = clients or {"ven-1": "ven-secret", "bl": "bl-secret"}
        self.bl_clients = bl_clients
        self.token_lifetime_s = token_lifetime_s
        self.mqtt_port = mqtt_port
        self.spec, self.errata = load_spec(version)
        self.objects: dict[str, dict[str, dict[str, Any]]] = {v: {} for v in _OBJECTS.values()}
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (client id, expires at)
        self.violations: list[str] = []
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.notified: list[tuple[str, dict[str, Any]]] = []  # (channel, body)
        self.answered_at: dict[str, float] = {}  # object id -> its webhook's 2xx (benchmarks)
        self.failing = False  # answer every call 500 (a VTN in trouble)
        #: the most objects one listing page holds whatever `limit` asks (None: `limit`); the
        #: OpenAPI's `limit` is a "maximum number of records to return", so a VTN may give fewer
        self.page_cap: int | None = None
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._mqtt: Any = None
        root = {"$ref": "#/components/schemas/notification", "components": self.spec["components"]}
        self._notification_schema = OAS30Validator(root)
        self._lock = threading.Lock()
        self._sending: set[asyncio.Task[None]] = set()
        self._valid_responses: set[tuple[str, str, int, bytes]] = set()
        # one TLS context for every webhook: building one (the CA bundle) costs ~0.1 s of CPU
        # on a loaded machine, which a real VTN does not spend per notification
        self._tls = ssl.create_default_context()

    # -- server life cycle --------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ven_env(self, callback: bool = True) -> dict[str, str]:
        """The environment a ``gridsched run`` VEN enrolls here with, as client ven-1;
        ``callback``: told of events by webhook, at the port the daemon gets (``{port}``)."""
        env = {
            "GRIDSCHED_VTN_URL": self.url,
            "GRIDSCHED_VTN_CLIENT_ID": "ven-1",
            "GRIDSCHED_VTN_CLIENT_SECRET": "ven-secret",
        }
        if callback:
            env["GRIDSCHED_VTN_CALLBACK_URL"] = "http://127.0.0.1:{port}/openadr3/notifications"
        return env

    def start(self) -> VtnDouble:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        spec = copy.deepcopy(self.spec)
        spec["servers"] = [{"url": self.url}]
        self._api = OpenAPI.from_dict(spec)
        app = Starlette(
            routes=[Route("/{path:path}", self._endpoint, methods=["GET", "POST", "PUT", "DELETE"])]
        )
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        if not wait_until(lambda: self._server is not None and self._server.started, 30.0):
            raise RuntimeError(f"the VTN double did not start serving on {self.url} in 30 s")
        if self.mqtt_port is not None and self._mqtt is None:
            import paho.mqtt.client as mqtt
            from paho.mqtt.enums import CallbackAPIVersion

            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"vtn-{uuid.uuid4()}")
            c.connect("127.0.0.1", self.mqtt_port)
            c.loop_start()
            self._mqtt = c
        return self

    def stop(self) -> None:
        """Stop serving (the objects are kept: ``start()`` again is a VTN restart)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None

    def close(self) -> None:
        self.stop()
        if self._mqtt is not None:
            self._mqtt.loop_stop()
            self._mqtt.disconnect()
            self._mqtt = None

    # -- validation ---------------------------------------------------------------------------

    def _violation(self, what: str, exc: BaseException) -> None:
        cause = exc.__cause__ or exc.__context__
        detail = f"{exc!r}" + (f" <- {cause!r}" if cause else "")
        with self._lock:
            self.violations.append(f"{what}: {detail}"[:1500])

    def check_notification(self, body: dict[str, Any], channel: str) -> None:
        errors = [e.message[:300] for e in self._notification_schema.iter_errors(body)]
        if errors:
            with self._lock:
                self.violations.append(f"{channel} notification: {errors}")

    async def _endpoint(self, request: Request) -> Response:
        body = await request.body()
        oreq = StarletteOpenAPIRequest(request, body)
        path = request.url.path
        try:
            self._api.validate_request(oreq)
        except Exception as exc:
            self._violation(f"request {request.method} {path}", exc)
            response: Response = _problem(400, f"request violates the OpenADR 3 definition: {exc}")
        else:
            response = await self._dispatch(request, body)
        # each distinct response is validated once: a listing the VEN polls again unchanged
        # (the same bytes) cost the double ~0.3 s a page of 50 events on a loaded 2-core
        # host, most of a poll's time, which a real VTN does not spend
        key = (request.method, path, response.status_code, hashlib.sha256(response.body).digest())
        if key not in self._valid_responses:
            try:
                self._api.validate_response(
                    oreq, StarletteOpenAPIResponse(response, bytes(response.body))
                )
            except Exception as exc:
                self._violation(f"response {request.method} {path} {response.status_code}", exc)
            else:
                if len(self._valid_responses) > 10_000:
                    self._valid_responses.clear()
                self._valid_responses.add(key)
        with self._lock:
            self.requests.append((request.method, path, response.status_code))
        return response

    # -- behaviour ----------------------------------------------------------------------------

    def _client(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        got = self.tokens.get(token)
        if got is None or got[1] < time.time():
            return None
        return got[0]

    async def _dispatch(self, request: Request, body: bytes) -> Response:
        parts = [p for p in request.url.path.split("/") if p]
        method = request.method
        if parts == ["auth", "server"]:
            return JSONResponse({"tokenURL": f"{self.url}/auth/token"})
        if parts == ["auth", "token"]:
            return self._token(request, body)
        if self.failing:
            return _problem(500, "VTN failing (test double)")
        client = self._client(request)
        if client is None:
            return _problem(401, "missing, unknown or expired bearer token")
        if parts == ["notifiers"]:
            out: dict[str, Any] = {"WEBHOOK": True}
            if self.mqtt_port is not None:
                out["MQTT"] = {
                    "URIS": [f"mqtt://127.0.0.1:{self.mqtt_port}"],
                    "serialization": "JSON",
                    "authentication": {"method": "ANONYMOUS"},
                }
            return JSONResponse(out)
        if parts[:3] == ["notifiers", "mqtt", "topics"]:
            return self._topics(parts[3:])
        if (
            self.version == "3.0.1"
            and len(parts) >= 3
            and parts[0] == "vens"
            and parts[2] == ("resources")
        ):
            kind, oid = "resource", (parts[3] if len(parts) > 3 else None)
            data = json.loads(body) if body else None
            if isinstance(data, dict):
                data["venID"] = parts[1]
            return self._crud(method, kind, oid, data, request, client, ven_id=parts[1])
        kinds = {k + "s": k for k in _OBJECTS.values()}
        if not parts or parts[0] not in kinds or len(parts) > 2:
            return _problem(404, "no such endpoint in this double")
        data = json.loads(body) if body else None
        oid = parts[1] if len(parts) == 2 else None
        return self._crud(method, kinds[parts[0]], oid, data, request, client)

    def _token(self, request: Request, body: bytes) -> Response:
        from urllib.parse import parse_qs

        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        cid, secret = form.get("client_id", ""), form.get("client_secret", "")
        if form.get("grant_type") != "client_credentials" or self.clients.get(cid) != secret:
            return _problem(401, "invalid client")
        token = uuid.uuid4().hex
        self.tokens[token] = (cid, time.time() + self.token_lifetime_s)
        return JSONResponse(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime_s}
        )

    def _topics(self, rest: list[str]) -> Response:
        base = "/".join(rest)
        t = {
            "CREATE": f"openadr/{base}/create",
            "UPDATE": f"openadr/{base}/update",
            "DELETE": f"openadr/{base}/delete",
            "ALL": f"openadr/{base}/+",
        }
        return JSONResponse({"topics": t})

    def _crud(
        self,
        method: str,
        kind: str,
        oid: str | None,
        data: Any,
        request: Request,
        client: str,
        ven_id: str | None = None,
    ) -> Response:
        store = self.objects[kind]
        bl = client in self.bl_clients
        writes_bl = {"program", "event"}
        if method != "GET" and kind in writes_bl and not bl:
            return _problem(403, f"only business logic may write {kind}s")
        if method == "GET" and oid is None:
            q = request.query_params
            items = list(store.values())
            for key in ("venName", "resourceName", "programID", "venID", "eventID", "clientName"):
                if key in q:
                    items = [o for o in items if o.get(key) == q[key]]
            if ven_id is not None:
                items = [o for o in items if o.get("venID") == ven_id]
            skip, limit = int(q.get("skip", 0)), int(q.get("limit", 50))
            limit = limit if self.page_cap is None else min(limit, self.page_cap)
            return JSONResponse(items[skip : skip + limit])
        if method == "POST" and oid is None:
            obj = self._new(kind, data, client)
            store[obj["id"]] = obj
            self._notify(kind, "CREATE", obj)
            return JSONResponse(obj, status_code=201)
        if oid is None or oid not in store:
            return _problem(404, f"no {kind} {oid}")
        if method == "GET":
            return JSONResponse(store[oid])
        if method == "PUT":
            old = store[oid]
            obj = self._new(kind, data, client, old)
            store[oid] = obj
            self._notify(kind, "UPDATE", obj)
            return JSONResponse(obj)
        obj = store.pop(oid)  # DELETE
        self._notify(kind, "DELETE", obj)
        return JSONResponse(obj)

    def _new(
        self, kind: str, data: Any, client: str, old: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        obj = dict(data or {})  # objectType (VEN_VEN_REQUEST...) becomes the object's type
        now = _now()
        obj |= {
            "id": old["id"] if old else f"{kind}-{uuid.uuid4().hex[:12]}",
            "createdDateTime": old["createdDateTime"] if old else now,
            "modificationDateTime": now,
            "objectType": kind.upper(),
        }
        if kind in ("ven", "resource", "subscription", "report") and self.version == "3.1.0":
            obj.setdefault("clientID", client)
        return obj

    # -- notifications ------------------------------------------------------------------------

    def _notify(self, kind: str, operation: str, obj: dict[str, Any]) -> None:
        if kind not in ("program", "event"):
            return
        op = (
            operation
            if self.version == "3.1.0"
            else {"CREATE": "POST", "UPDATE": "PUT"}.get(operation, operation)
        )
        note = {"objectType": kind.upper(), "operation": op, "object": obj}
        self.check_notification(note, "outgoing")
        for sub in list(self.objects["subscription"].values()):
            for oo in sub.get("objectOperations", []):
                if kind.upper() in oo.get("objects", []) and operation in oo.get("operations", []):
                    self._send_webhook(oo["callbackUrl"], oo.get("bearerToken"), note)
        if self._mqtt is not None:
            payload = json.dumps(note)
            for topic in (f"openadr/{kind}s/{operation.lower()}",):
                self._mqtt.publish(topic, payload, qos=1)
            with self._lock:
                self.notified.append(("mqtt", note))

    def _send_webhook(self, url: str, token: str | None, note: dict[str, Any]) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}

        async def send() -> None:
            try:
                async with httpx.AsyncClient(timeout=30, verify=self._tls) as c:
                    r = await c.post(url, json=note, headers=headers)
                if r.is_success:
                    self.answered_at.setdefault(str(note["object"]["id"]), time.time())
                with self._lock:
                    self.notified.append((f"webhook {r.status_code}", note))
            except httpx.HTTPError as exc:
                with self._lock:
                    self.notified.append((f"webhook failed {exc!r}", note))

        task = asyncio.get_running_loop().create_task(send())
        self._sending.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._sending.discard)


def wait_until(cond: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()
