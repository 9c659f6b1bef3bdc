"""The open-files limit of a process that talks to many devices at once.

Every command or reading in flight holds a TCP connection, a stock Antminer write left
unanswered at the adapter's timeout keeps its connection while it finishes (up to the
family's ``write_timeout_s``), and kept sessions (Braiins OS+ channels, VNish and GPU agent
sessions) hold theirs between calls. A shell's default soft limit is 1,024 files, and a
connection that cannot be opened past it (EMFILE) reads as a device fault. The controller
raises its soft limit toward what its fleet may hold, up to the hard limit (``ulimit -Hn``;
the systemd unit sets ``LimitNOFILE``), and says so when the hard limit is short.
"""

from __future__ import annotations

import contextlib
import resource

__all__ = ["fd_limit", "fleet_fds_needed", "raise_fd_limit", "short_of"]

#: Files a controller holds besides its devices' connections: the state file, the HTTP
#: listeners and their clients, the metrics process's pipe, logs.
SPARE_FDS = 256


def fd_limit() -> tuple[int, int]:
    """(soft, hard) open-files limit of this process; unlimited reads as a very large number."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    big = 1 << 30
    return (
        big if soft == resource.RLIM_INFINITY else soft,
        big if hard == resource.RLIM_INFINITY else hard,
    )


def raise_fd_limit(needed: int) -> int:
    """Lift the soft open-files limit toward ``needed`` (never above the hard limit, never
    lowered); the soft limit it is now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):  # a sandbox, or past nr_open
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return fd_limit()[0]


def fleet_fds_needed(devices: int, commands: int, readings: int) -> int:
    """Files a controller of ``devices`` may hold: a connection per device (a kept session, or
    a write finishing after its answer timed out), every command and reading in flight (no
    more of either than there are devices), and SPARE_FDS."""
    return devices + min(commands, devices) + min(readings, devices) + SPARE_FDS


def short_of(needed: int) -> str | None:
    """Raise the soft limit toward ``needed``; a sentence for the log when the hard limit
    leaves it short, None when it does not."""
    soft = raise_fd_limit(needed)
    if soft >= needed:
        return None
    return (
        f"open-files limit {soft} (hard limit, `ulimit -Hn`) is below the {needed} this "
        "fleet may hold (a connection per device, the commands and readings in flight, "
        f"{SPARE_FDS} spare): a connection past it fails as a device fault; raise the hard "
        "limit (systemd: LimitNOFILE=, as deploy/systemd/gridsched.service sets it)"
    )
