"""The REST calls a VEN makes to an OpenADR 3 VTN (3.1.0, and 3.0.1 where they differ).

Where 3.0.1 and 3.1.0 differ (the OpenAPI definitions of both): 3.1.0 keeps resources at
``/resources`` with a ``venID`` and requires ``objectType`` on ven and resource requests
(``VEN_VEN_REQUEST``, ``VEN_RESOURCE_REQUEST``); 3.0.1 nests resources under
``/vens/{venID}/resources`` and has neither. ``/notifiers`` exists only in 3.1.0.
Lists are paged with ``skip``/``limit`` (at most 50 per page in 3.1.0) until an empty page
(a VTN may return fewer than ``limit``); a listing's full pages
can be asked for a few at once (``pages``), as the VEN's poll does with as many as the last
listing had, so that a poll of many events takes about one round trip, not one per page.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from adapters.neterrors import describe
from scheduler.service.ven_auth import TokenSource

__all__ = ["MAX_BATCH", "PAGE_LIMIT", "VtnClient", "VtnError"]

PAGE_LIMIT = 50
MAX_PAGES = 200  # 10,000 objects: a VTN that pages forever is a fault, not a listing
MAX_BATCH = 4  # pages asked for at once: a VTN is not to be flooded by one VEN


class VtnError(RuntimeError):
    """A VTN request that failed; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, what: str, status: int | None, detail: str) -> None:
        super().__init__(f"{what}: {'HTTP ' + str(status) if status else 'no answer'} {detail}")
        self.status = status


class VtnClient:
    """One VTN, with a bearer token from ``tokens`` on every call (renewed after a 401)."""

    def __init__(
        self, http: httpx.AsyncClient, vtn_url: str, tokens: TokenSource, version: str = "3.1.0"
    ) -> None:
        if version not in ("3.0.1", "3.1.0"):
            raise ValueError(f"OpenADR version {version!r}: valid are '3.0.1', '3.1.0'")
        self._http = http
        self.base = vtn_url.rstrip("/")
        self.tokens = tokens
        self.version = version

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> Any:
        """The JSON answer of one request; raises ``VtnError`` on any other status."""
        what = f"{method} {path}"
        for attempt in (1, 2):
            token = await self.tokens.token()
            try:
                r = await self._http.request(
                    method,
                    self.base + path,
                    params=params,
                    json=json,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.HTTPError as exc:
                raise VtnError(what, None, f"({describe(exc)})") from exc
            if r.status_code == 401 and attempt == 1:
                self.tokens.invalidate()  # revoked or shorter-lived than it said: fetch anew
                continue
            if r.status_code not in ok:
                raise VtnError(what, r.status_code, r.text[:300])
            if r.status_code == 204 or not r.content:
                return None
            try:
                return r.json()
            except ValueError as exc:
                raise VtnError(what, r.status_code, f"answer is not JSON: {exc}") from exc
        raise VtnError(what, 401, "unauthorized with a fresh token (check the credentials)")

    async def list_all(self, path: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every object of a paged listing (``skip``/``limit``)."""
        out: list[Any] = []
        async for page in self.pages(path, params):
            out.extend(page)
        return out

    async def _page(self, path: str, params: dict[str, Any] | None, skip: int) -> list[Any]:
        q = {**(params or {}), "skip": skip, "limit": PAGE_LIMIT}
        got = await self.call("GET", path, params=q)
        if not isinstance(got, list):
            raise VtnError(f"GET {path}", 200, f"expected a JSON array, got {str(got)[:100]}")
        return got

    async def pages(
        self, path: str, params: dict[str, Any] | None = None, batch: int = 1
    ) -> AsyncGenerator[list[Any]]:
        """The pages of a listing in order, until an empty one; ``batch`` full pages are
        asked for at once (at most ``MAX_BATCH``). A page shorter than ``limit`` is not the
        end: ``limit`` is the most a VTN returns (OpenAPI), and one that pages by fewer
        would hide the rest (the aggregator's walk, session 24); the next page is asked
        from where it ended, one at a time. A failed page raises after the pages before it
        were yielded, so that the caller can act on those."""
        batch = max(1, min(batch, MAX_BATCH))
        skip = pages = 0
        while pages < MAX_PAGES:
            tasks = [
                asyncio.ensure_future(self._page(path, params, skip + k * PAGE_LIMIT))
                for k in range(batch)
            ]
            try:
                for task in tasks:
                    got = await task
                    if not got:
                        return
                    yield got
                    skip, pages = skip + len(got), pages + 1
                    if len(got) < PAGE_LIMIT:  # a short page: go on from its end, alone
                        batch = 1
                        break
            finally:  # the pages past the end, or past a failure: not waited for
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        raise VtnError(f"GET {path}", 200, f"more than {MAX_PAGES} pages; giving up")

    async def event_gone(self, event_id: str) -> bool:
        """Whether the VTN no longer shows this VEN the event (404, or 403: no longer
        targeted here); False when it still has it. Other failures raise."""
        try:
            await self.call("GET", f"/events/{event_id}")
        except VtnError as exc:
            if exc.status in (403, 404):
                return True
            raise
        return False

    # -- enrollment ---------------------------------------------------------------------------

    async def ensure_ven(self, ven_name: str) -> dict[str, Any]:
        """This VEN's ven object: the one named ``ven_name``, else a new one."""
        found = await self.list_all("/vens", {"venName": ven_name})
        mine = [v for v in found if isinstance(v, dict) and v.get("venName") == ven_name]
        if mine:
            return dict(mine[0])
        body: dict[str, Any] = {"venName": ven_name}
        if self.version == "3.1.0":
            body["objectType"] = "VEN_VEN_REQUEST"
        got = await self.call("POST", "/vens", json=body)
        if not isinstance(got, dict) or not isinstance(got.get("id"), str):
            raise VtnError("POST /vens", 201, f"no ven id in the answer {str(got)[:200]}")
        return got

    def _resources_path(self, ven_id: str) -> tuple[str, dict[str, Any]]:
        if self.version == "3.0.1":
            return f"/vens/{ven_id}/resources", {}
        return "/resources", {"venID": ven_id}

    async def ensure_resources(self, ven_id: str, names: list[str]) -> dict[str, str]:
        """Resource name -> id for each of ``names``, creating those the VTN lacks."""
        path, query = self._resources_path(ven_id)
        have = await self.list_all(path, query)
        ids = {
            r["resourceName"]: r["id"]
            for r in have
            if isinstance(r, dict) and r.get("venID", ven_id) == ven_id and "id" in r
        }
        for name in names:
            if name in ids:
                continue
            body: dict[str, Any] = {"resourceName": name}
            if self.version == "3.1.0":
                body |= {"objectType": "VEN_RESOURCE_REQUEST", "venID": ven_id}
            got = await self.call("POST", path, json=body)
            if not isinstance(got, dict) or not isinstance(got.get("id"), str):
                raise VtnError(f"POST {path}", 201, f"no resource id in {str(got)[:200]}")
            ids[name] = got["id"]
        return ids

    # -- subscriptions and notifiers ----------------------------------------------------------

    async def notifiers(self) -> dict[str, Any]:
        """The VTN's notifier bindings; ``{"WEBHOOK": True}`` only on 3.0.1."""
        if self.version == "3.0.1":
            return {"WEBHOOK": True}
        try:
            got = await self.call("GET", "/notifiers")
        except VtnError as exc:
            if exc.status in (404, 501):  # optional in practice; webhooks and polling remain
                return {"WEBHOOK": True}
            raise
        return got if isinstance(got, dict) else {"WEBHOOK": True}

    async def mqtt_topics(self, path: str) -> dict[str, str]:
        got = await self.call("GET", f"/notifiers/mqtt/topics/{path}")
        topics = got.get("topics") if isinstance(got, dict) else None
        if not isinstance(topics, dict):
            raise VtnError(f"GET /notifiers/mqtt/topics/{path}", 200, "no topics object")
        return {k: v for k, v in topics.items() if isinstance(v, str)}
