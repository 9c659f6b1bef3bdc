"""NVML (nvidia-ml-py, ``import pynvml``) for the GPU adapter: the backend interface the
adapter drives (:class:`GpuBackend`), the real backend (:class:`PynvmlBackend`), and NVML's
error codes as the adapters' narrow errors (:func:`nvml_error`).

NVML is a local C library; its calls run in a worker thread. When it is missing or refuses
(no driver, no permission in a VM) the error says which and what to do, and is marked not
retryable: the daemon carries on without that control. The simulator's back-ends are in
``adapters.sim.gpu_backend``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from adapters.base import (
    AdapterError,
    BadReply,
    ControlRejected,
    DeviceUnreachable,
    Unsupported,
)

_ERROR_HINTS = {
    "LIBRARY_NOT_FOUND": "NVML library (libnvidia-ml.so.1) not found: no NVIDIA driver here",
    "DRIVER_NOT_LOADED": "the NVIDIA kernel driver is not loaded (nvidia-smi fails too)",
    "NO_PERMISSION": "no permission to change the power limit: run as root or grant "
    "CAP_SYS_ADMIN; in a VM the hypervisor may forbid it",
    "NOT_SUPPORTED": "this GPU or driver does not support the call",
    "GPU_IS_LOST": "the GPU fell off the bus (Xid 79); it needs a reset or reboot",
    "INVALID_ARGUMENT": "value outside what the GPU accepts",
}
_UNSUPPORTED = {"LIBRARY_NOT_FOUND", "DRIVER_NOT_LOADED", "NO_PERMISSION", "NOT_SUPPORTED"}
#: The calls of one reading, in order, that a backend answers together for the ``reading``
#: call (one worker-thread hop, one round trip to a simulator): the adapter's figures.
READING = ("power_w", "limit_w", "energy_j", "utilisation_pct", "sm_clock_mhz", "temperature_c")


def nvml_error(device: str, what: str, code: str, message: str) -> AdapterError:
    """An NVML error code as the narrow adapter error, with what to do about it."""
    hint = _ERROR_HINTS.get(code, "")
    text = f"{what}: NVML {code}: {message}" + (f" ({hint})" if hint else "")
    if code in _UNSUPPORTED:
        return Unsupported(device, text)
    if code == "GPU_IS_LOST":
        return DeviceUnreachable(device, text)
    if code == "INVALID_ARGUMENT":
        return ControlRejected(device, text)
    return BadReply(device, text)


def nvml_parts(error: AdapterError) -> tuple[str, str] | None:
    """NVML's code and own message in an error :func:`nvml_error` made (None for any other
    error): what the GPU agent carries back, so the daemon's side makes the same error."""
    _what, sep, rest = error.reason.partition(": NVML ")
    code, sep2, message = rest.partition(": ")
    if not sep or not sep2 or not code.replace("_", "").isalnum():
        return None
    hint = _ERROR_HINTS.get(code, "")
    return code, message.removesuffix(f" ({hint})") if hint else message


class GpuBackend(Protocol):
    label: str

    async def count(self) -> int: ...

    async def call(self, index: int, call: str, *args: float) -> Any: ...


class PynvmlBackend:
    """Real GPUs through nvidia-ml-py."""

    label = "nvml"

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: dict[int, Any] = {}
        self._lock = asyncio.Lock()

    def _init(self) -> Any:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError:
                raise Unsupported(
                    "nvml", "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
                ) from None
            try:
                pynvml.nvmlInit()
            except pynvml.NVMLError as exc:
                raise nvml_error("nvml", "nvmlInit", _code(pynvml, exc), str(exc)) from None
            self._nvml = pynvml
        return self._nvml

    def _sync(self, index: int, call: str, *args: float) -> Any:
        nv = self._init()
        if call == "reading":  # each call's error still names that call
            return tuple(self._sync(index, c) for c in READING)
        try:
            if call == "count":
                return nv.nvmlDeviceGetCount()
            if call == "driver_version":
                return str(nv.nvmlSystemGetDriverVersion())
            h = self._handles.get(index)
            if h is None:
                h = self._handles[index] = nv.nvmlDeviceGetHandleByIndex(index)
            if call == "identity":
                return str(nv.nvmlDeviceGetName(h)), str(nv.nvmlDeviceGetUUID(h))
            if call == "power_w":
                return nv.nvmlDeviceGetPowerUsage(h) / 1000.0
            if call == "limit_w":
                return nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0
            if call == "limit_constraints_w":
                lo, hi = nv.nvmlDeviceGetPowerManagementLimitConstraints(h)
                return lo / 1000.0, hi / 1000.0
            if call == "set_limit_w":
                nv.nvmlDeviceSetPowerManagementLimit(h, round(args[0] * 1000.0))
                return None
            if call == "energy_j":
                return nv.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0
            if call == "utilisation_pct":
                return float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
            if call == "sm_clock_mhz":
                return float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))
            if call == "set_locked_clocks":  # needs root; Volta and newer
                nv.nvmlDeviceSetGpuLockedClocks(h, round(args[0]), round(args[1]))
                return None
            if call == "reset_locked_clocks":
                nv.nvmlDeviceResetGpuLockedClocks(h)
                return None
            if call == "temperature_c":
                return float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
        except nv.NVMLError as exc:
            raise nvml_error(f"gpu{index}", call, _code(nv, exc), str(exc)) from None
        raise ValueError(f"unknown NVML call {call!r}")

    async def count(self) -> int:
        return int(await asyncio.to_thread(self._sync, -1, "count"))

    async def call(self, index: int, call: str, *args: float) -> Any:
        return await asyncio.to_thread(self._sync, index, call, *args)


def _code(nv: Any, exc: Any) -> str:
    for name in dir(nv):
        if name.startswith("NVML_ERROR_") and getattr(nv, name) == getattr(exc, "value", None):
            return name.removeprefix("NVML_ERROR_")
    return "UNKNOWN"
