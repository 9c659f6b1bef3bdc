"""Schemathesis hooks for the fuzz test: sign every generated signal body, count answers.

Loaded by ``st run`` through ``SCHEMATHESIS_HOOKS``. Each ``POST /v1/signals`` body that
schemathesis generates is serialised here, signed with the daemon's Standard Webhooks
secret (``GRIDSCHED_WEBHOOK_SECRET``) and sent as exactly those bytes, so the fuzzing reaches
the handler instead of stopping at the 401. Each answer's status is appended to the file
named by ``GRIDSCHED_FUZZ_LOG`` (one ``METHOD PATH STATUS`` line), so that the test can
check that signed requests really got past authentication.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import schemathesis

from scheduler.service.security import sign


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.method.upper() != "POST" or case.operation.path != "/v1/signals":
        return
    body = b"" if case.body is None or type(case.body).__name__ == "NotSet" else case.body
    if not isinstance(body, bytes | str):
        body = json.dumps(body)
    raw = body.encode() if isinstance(body, str) else body
    msg_id, ts = f"fuzz-{uuid.uuid4().hex}", int(time.time())
    kwargs["data"] = raw
    case.headers = {
        **(case.headers or {}),
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(os.environ["GRIDSCHED_WEBHOOK_SECRET"], msg_id, ts, raw),
    }


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    path = os.environ.get("GRIDSCHED_FUZZ_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{case.method.upper()} {case.operation.path} {response.status_code}\n")
