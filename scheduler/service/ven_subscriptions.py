"""The VEN's webhook subscriptions at the VTN: posted, checked, renewed, deleted.

3.1.0: one subscription for EVENT and PROGRAM create/update/delete (``programID`` optional).
3.0.1: ``programID`` is required, so one subscription per program the VTN shows, and one
more whenever a new program appears. A subscription the VTN no longer knows (reset, restored
from a backup) is posted again at the next check: without it the VTN would stop notifying
without a word.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from scheduler.service.ven_client import VtnClient, VtnError

__all__ = ["ALL_PROGRAMS", "Subscriptions"]

log = logging.getLogger(__name__)

ALL_PROGRAMS = "*"


class Subscriptions:
    def __init__(
        self, vtn: VtnClient, client_name: str, callback_url: str | None, token: str | None
    ) -> None:
        self._vtn = vtn
        self._name = client_name
        self._url = callback_url
        self._token = token
        self.ids: dict[str, str] = {}  # program id (or ALL_PROGRAMS) -> subscription id

    @property
    def first(self) -> str | None:
        return next(iter(self.ids.values()), None)

    def _scopes(self, program_ids: list[str]) -> list[str]:
        return [ALL_PROGRAMS] if self._vtn.version == "3.1.0" else list(program_ids)

    async def _post(self, scope: str) -> str:
        if self._url is None:
            raise VtnError("POST /subscriptions", None, "no callback URL")
        op: dict[str, Any] = {
            "objects": ["EVENT", "PROGRAM"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "callbackUrl": self._url,
        }
        if self._token:
            op["bearerToken"] = self._token
        body: dict[str, Any] = {"clientName": self._name, "objectOperations": [op]}
        if scope != ALL_PROGRAMS:
            body["programID"] = scope
        got = await self._vtn.call("POST", "/subscriptions", json=body)
        if not isinstance(got, dict) or not isinstance(got.get("id"), str):
            raise VtnError("POST /subscriptions", 201, f"no subscription id in {str(got)[:200]}")
        return str(got["id"])

    async def renew(self, program_ids: list[str]) -> None:
        """Post every subscription anew, then delete the ones they replace."""
        if self._url is None:
            return
        old = dict(self.ids)
        fresh = {scope: await self._post(scope) for scope in self._scopes(program_ids)}
        self.ids = fresh
        for sid in old.values():
            if sid not in fresh.values():
                with contextlib.suppress(VtnError):
                    await self._vtn.call("DELETE", f"/subscriptions/{sid}")

    async def ensure(self, program_ids: list[str]) -> None:
        """Subscribe the programs not yet covered (3.0.1: a new program)."""
        if self._url is None:
            return
        for scope in self._scopes(program_ids):
            if scope not in self.ids:
                self.ids[scope] = await self._post(scope)

    async def check(self) -> None:
        """Post again each subscription the VTN answers 404 for."""
        for scope, sid in list(self.ids.items()):
            try:
                await self._vtn.call("GET", f"/subscriptions/{sid}")
            except VtnError as exc:
                if exc.status != 404:
                    raise
                log.warning("VEN: subscription %s gone at the VTN; posting it again", sid)
                self.ids[scope] = await self._post(scope)

    async def delete_all(self) -> None:
        ids, self.ids = list(self.ids.values()), {}
        for sid in ids:
            with contextlib.suppress(Exception):  # shutting down: said in the log, not blocking
                await self._vtn.call("DELETE", f"/subscriptions/{sid}")
                log.info("VEN: subscription %s deleted", sid)
