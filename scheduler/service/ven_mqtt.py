"""MQTT notifications from a 3.1.0 VTN (Definition, "Notifications via Additional Protocols").

``GET /notifiers`` names the broker (``URIS``) and how to authenticate: ``ANONYMOUS``,
``OAUTH2_BEARER_TOKEN`` (user name as given, ``{clientID}`` replaced by ours, the access
token as password) or ``CERTIFICATE`` (not supported here: reported, webhooks and polling
carry on). Messages are the same JSON notification objects webhooks carry. The listener
reconnects with back-off and says in ``status`` when it last connected and last failed;
cancelled, it leaves the broker and leaves no lost connection's error unread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from adapters.neterrors import describe

__all__ = ["MqttBinding", "MqttListener", "parse_binding"]

log = logging.getLogger(__name__)

Deliver = Callable[[dict[str, Any]], Awaitable[None]]
Password = Callable[[], Awaitable[str]]


class MqttBinding:
    def __init__(self, host: str, port: int, tls: bool, method: str, username: str | None):
        self.host, self.port, self.tls = host, port, tls
        self.method, self.username = method, username


def parse_binding(mqtt: Any, client_id: str) -> MqttBinding:
    """The broker to use from a ``mqttNotifierBindingObject``; ValueError naming the field."""
    if not isinstance(mqtt, dict):
        raise ValueError("MQTT: expected an object {URIS, serialization, authentication}")
    uris = mqtt.get("URIS")
    if not isinstance(uris, list) or not uris or not isinstance(uris[0], str):
        raise ValueError("MQTT.URIS: expected a non-empty list of broker URIs")
    if mqtt.get("serialization", "JSON") != "JSON":
        raise ValueError(f"MQTT.serialization {mqtt.get('serialization')!r}: only JSON is read")
    u = urlsplit(uris[0])
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not u.hostname:
        raise ValueError(f"MQTT.URIS[0] {uris[0]!r}: expected mqtt://host:port or mqtts://...")
    tls = u.scheme in ("mqtts", "ssl")
    auth = mqtt.get("authentication") or {"method": "ANONYMOUS"}
    method = str(auth.get("method", "ANONYMOUS")) if isinstance(auth, dict) else "?"
    if method not in ("ANONYMOUS", "OAUTH2_BEARER_TOKEN"):
        raise ValueError(
            f"MQTT.authentication.method {method!r}: gridsched supports ANONYMOUS and "
            "OAUTH2_BEARER_TOKEN"
        )
    user = None
    if method == "OAUTH2_BEARER_TOKEN":
        user = str(auth.get("username", "{clientID}")).replace("{clientID}", client_id)
    return MqttBinding(u.hostname, u.port or (8883 if tls else 1883), tls, method, user)


class MqttListener:
    """Subscribes to ``topics`` and hands every JSON notification to ``deliver``."""

    def __init__(
        self,
        binding: MqttBinding,
        topics: list[str],
        deliver: Deliver,
        password: Password,
        max_backoff_s: float = 60.0,
    ) -> None:
        self.binding = binding
        self.topics = sorted(set(topics))
        self._deliver = deliver
        self._password = password
        self._max_backoff_s = max_backoff_s
        self.connected = asyncio.Event()
        self.status: dict[str, Any] = {
            "broker": f"{binding.host}:{binding.port}",
            "topics": self.topics,
            "connected": False,
            "last_connect_at": None,
            "last_message_at": None,
            "last_error": None,
            "last_error_at": None,
            "messages": 0,
        }

    async def run(self) -> None:
        import aiomqtt  # optional dependency: only VTNs with an MQTT notifier need it

        backoff = 1.0
        try:
            while True:
                try:
                    pw = await self._password() if self.binding.method != "ANONYMOUS" else None
                    async with aiomqtt.Client(
                        self.binding.host,
                        self.binding.port,
                        username=self.binding.username,
                        password=pw,
                        tls_params=aiomqtt.TLSParameters() if self.binding.tls else None,
                    ) as client:
                        _read_its_loss(client)
                        for topic in self.topics:
                            await client.subscribe(topic, qos=1)
                        self.status |= {"connected": True, "last_connect_at": time.time()}
                        self.connected.set()
                        backoff = 1.0
                        async for msg in client.messages:
                            await self._one(msg.payload)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # broker down, refused, dropped: keep trying, loudly
                    self.connected.clear()
                    self.status |= {
                        "connected": False,
                        "last_error": describe(exc)[:300],
                        "last_error_at": time.time(),
                    }
                    log.warning("MQTT notifier %s: %s", self.status["broker"], exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
        finally:  # stopped (cancelled): no longer listening
            self.connected.clear()
            self.status["connected"] = False

    async def _one(self, payload: Any) -> None:
        try:
            body = json.loads(payload if isinstance(payload, bytes | str) else bytes(payload))
        except (ValueError, TypeError) as exc:
            self.status |= {
                "last_error": f"message is not JSON: {exc}",
                "last_error_at": time.time(),
            }
            return
        if not isinstance(body, dict):
            self.status |= {"last_error": "message is not a notification object"}
            return
        self.status["messages"] += 1
        self.status["last_message_at"] = time.time()
        await self._deliver(body)


def _read_its_loss(client: Any) -> None:
    """Read the error of ``client``'s connection when it is lost. aiomqtt keeps it in a
    future that only its message iterator reads: when the listener is stopped in the same
    turn of the loop as the loss, nobody did, and asyncio logged "Future exception was never
    retrieved" when the client was collected. The loss itself is said by ``run`` (or moot,
    the listener having stopped)."""
    lost = getattr(client, "_disconnected", None)  # aiomqtt 2.x; elsewhere nothing to do
    if isinstance(lost, asyncio.Future):
        lost.add_done_callback(_read)


def _read(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
