"""GPUs through NVML: limits clamped and refusals named, a missing NVML said so, the serving
hook told the capacity (with its bearer secret, which never prints)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest

from adapters.base import DeviceUnreachable, ModeRequest, Unsupported
from adapters.gpu import NvmlGpu, PynvmlBackend, ServingHook
from adapters.secrets import Secret, load_secret
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import LocalSimBackend
from models.errors import ConfigError
from tests.support.httpserver import loopback_http
from tests.support.simfleet import run


def test_gpu_limits_are_clamped_and_refusals_are_clear() -> None:
    gpu = SimGpu(0, settle_s=0.01)
    dev = NvmlGpu("g/0", "0", LocalSimBackend([gpu]), 0, 10.0)

    async def go() -> None:
        await dev.connect()
        applied = await dev.apply(ModeRequest("run", 900.0))
        assert applied.target_w == 700.0 and "NVML allows [200, 700]" in applied.note
        gpu.fault = "no_permission"
        with pytest.raises(Unsupported, match=r"NO_PERMISSION.*CAP_SYS_ADMIN"):
            await dev.apply(ModeRequest("run", 400.0))
        gpu.fault = "gpu_lost"
        with pytest.raises(DeviceUnreachable, match="GPU_IS_LOST"):
            await dev.read()

    run(go())


def test_missing_nvml_says_so() -> None:
    backend = PynvmlBackend()
    try:
        n = run(backend.count())
    except Unsupported as exc:
        assert "NVML" in str(exc) or "nvidia-ml-py" in str(exc)
        assert not exc.retryable
    else:
        pytest.skip(f"NVML works here ({n} GPUs): see the gpu-marked tests")


class _Hook(BaseHTTPRequestHandler):
    got: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.got.append({"auth": self.headers.get("Authorization"), **json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_serving_hook_hears_the_capacity() -> None:
    with loopback_http(_Hook) as base:
        hook = ServingHook(base + "/capacity", 10.0, Secret("tok"))
        dev = NvmlGpu("g/1", "0", LocalSimBackend([SimGpu(0)]), 0, 10.0, lambda w: w, hook)

        async def go() -> None:
            await dev.connect()
            await dev.apply(ModeRequest("run", 500.0))
            await dev.apply(ModeRequest("sleep"))

        run(go())
    assert _Hook.got[0]["capacity_tokens_s"] == 500.0 and _Hook.got[0]["serving"] is True
    assert _Hook.got[0]["auth"] == "Bearer tok"
    assert _Hook.got[1]["capacity_tokens_s"] == 0.0 and _Hook.got[1]["serving"] is False


def test_secrets_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GS_TEST_PW", "hunter2")
    s = load_secret("x.password", "GS_TEST_PW", None)
    assert s is not None and s.reveal() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in f"{s}"
    monkeypatch.delenv("GS_TEST_PW")
    with pytest.raises(ConfigError, match="GS_TEST_PW is not set"):
        load_secret("x.password", "GS_TEST_PW", None)
