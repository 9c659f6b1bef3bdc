"""The serving layer's hook: how the GPU adapter tells an inference router or engine a GPU's
capacity (an HTTP POST of JSON), before its power limit drops and after it rises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.base import ControlRejected
from adapters.secrets import Secret


@dataclass
class ServingHook:
    """Tells the inference serving layer its capacity, by an HTTP POST of JSON."""

    url: str
    timeout_s: float = 2.0
    token: Secret | None = None

    async def notify(self, payload: dict[str, Any]) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {self.token.reveal()}"} if self.token else {}
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            resp = await client.post(self.url, json=payload, headers=headers)
        if resp.status_code >= 300:
            raise ControlRejected(
                str(payload.get("device")), f"serving hook {self.url} answered {resp.status_code}"
            )
