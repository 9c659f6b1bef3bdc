"""OAuth 2 client credentials for a VEN (RFC 6749 section 4.4; OpenADR 3 ``/auth``).

The token URL is the one configured, else what ``GET /auth/server`` names (3.1.0), else
``<vtn>/auth/token`` (the optional endpoint both 3.0.1 and 3.1.0 define). A token is renewed
when ``REFRESH_FRACTION`` of its ``expires_in`` has passed on this host's monotonic clock, so
neither the VTN's clock nor ours being off matters; a 401 drops it at once (the VTN may have
revoked it, or its lifetime may have been shorter than it said).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from adapters.neterrors import describe

__all__ = ["AuthError", "TokenSource"]

#: renew after this share of the lifetime the token endpoint gave
REFRESH_FRACTION = 0.8
#: lifetime assumed when the token endpoint gives none (RFC 6749 makes expires_in optional)
DEFAULT_LIFETIME_S = 300.0


class AuthError(RuntimeError):
    """The VTN's authorization server refused or could not be reached."""


@dataclass
class _Token:
    value: str
    renew_at: float  # monotonic


def _json(r: httpx.Response, call: str) -> Any:
    """The answer's JSON, or an AuthError naming the call and what came back."""
    try:
        return r.json()
    except ValueError:
        raise AuthError(
            f"{call}: HTTP {r.status_code}, the answer is not JSON: {r.text[:120]!r}"
        ) from None


class TokenSource:
    """Bearer tokens for one client id, fetched on demand and renewed before expiry."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        vtn_url: str,
        client_id: str,
        client_secret: str,
        token_url: str | None = None,
        scope: str | None = None,
        discover: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self.clock = clock  # monotonic seconds: when a token is due for renewal
        self._vtn = vtn_url.rstrip("/")
        self._id = client_id
        self._secret = client_secret
        self.token_url = token_url
        self._scope = scope
        self._discover_url = discover  # 3.1.0 has GET /auth/server; 3.0.1 does not
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self.fetched = 0  # tokens obtained so far (status, tests)

    async def _discover(self) -> str:
        if not self._discover_url:
            return f"{self._vtn}/auth/token"
        try:
            r = await self._http.get(f"{self._vtn}/auth/server")
        except httpx.HTTPError as exc:
            raise AuthError(f"GET {self._vtn}/auth/server: {describe(exc)}") from exc
        if r.status_code == 200:
            found = _json(r, f"GET {self._vtn}/auth/server")
            url = found.get("tokenURL") if isinstance(found, dict) else None
            if isinstance(url, str) and url:
                return url
        # 3.0.1 has no /auth/server: its optional token endpoint sits at /auth/token
        return f"{self._vtn}/auth/token"

    async def token(self) -> str:
        """A valid access token, fetching a new one when the last is due for renewal."""
        async with self._lock:
            now = self.clock()
            if self._token is not None and now < self._token.renew_at:
                return self._token.value
            if self.token_url is None:
                self.token_url = await self._discover()
            form = {
                "grant_type": "client_credentials",
                "client_id": self._id,
                "client_secret": self._secret,
            }
            if self._scope:
                form["scope"] = self._scope
            try:
                r = await self._http.post(self.token_url, data=form)
            except httpx.HTTPError as exc:
                raise AuthError(f"POST {self.token_url}: {describe(exc)}") from exc
            if r.status_code != 200:
                # RFC 6749 5.2: a refusal of the client is a 4xx; a 5xx is the VTN's own
                hint = (
                    "check the client id and secret the utility issued"
                    if 400 <= r.status_code < 500
                    else "the VTN's own failure: it is asked again with back-off"
                )
                raise AuthError(
                    f"POST {self.token_url}: HTTP {r.status_code} {r.text[:200]!r} ({hint})"
                )
            body = _json(r, f"POST {self.token_url}")
            value = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(value, str) or not value:
                raise AuthError(f"POST {self.token_url}: no access_token in {str(body)[:200]!r}")
            life = body.get("expires_in")
            life_s = float(life) if isinstance(life, int | float) and life > 0 else None
            life_s = DEFAULT_LIFETIME_S if life_s is None else life_s
            self._token = _Token(value, now + REFRESH_FRACTION * life_s)
            self.fetched += 1
            return value

    def invalidate(self) -> None:
        """Forget the token (after a 401): the next call fetches a new one."""
        self._token = None
