"""What a node learns at configure from the event log of a previous run of itself (killed, crashed, restarted):
the highest alert number it used, so ids are never reused, and the alerts it left open (BEGIN or ONGOING without
END), which the new run ENDs: whoever follows the alerts must not wait forever for an END that died with the old
process. Alerts still true are then announced again by the new run's own checks, under new ids. No rclpy in here.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vila_ros.ros.events import END, AlertIds, AlertUpdate

# Only the log's tail is read: ids only grow, and an alert open longer than that many bytes of log is very old.
TAIL_BYTES = 16 * 1024 * 1024
_NUMBER = re.compile(r"(\d+)$")
SEVERITIES = {"INFO": 0, "WARNING": 1, "CRITICAL": 2}
RESTART_TEXT = "the perception node restarted; the previous run ended without closing this alert"


@dataclass
class Recovery:
    last_number: int = 0  # the highest n of an `<camera>/<category>/<n>` id in the log
    open_alerts: dict[str, dict] = field(default_factory=dict)  # alert id -> its last record


def read_event_log(path: str | Path | None) -> Recovery:
    """The previous runs' state from the JSON-lines log at `path` (missing, unreadable or partly corrupt: what can
    be read; a line cut by a kill is skipped)."""
    recovery = Recovery()
    if not path:
        return recovery
    try:
        with open(Path(path).expanduser(), "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - TAIL_BYTES))
            lines = log.read().splitlines()
    except OSError:
        return recovery
    for line in lines:
        try:
            record = json.loads(line)
            alert_id, state = str(record["alert_id"]), record["state"]
        except (ValueError, KeyError, TypeError):
            continue
        match = _NUMBER.search(alert_id)
        if match:
            recovery.last_number = max(recovery.last_number, int(match.group(1)))
        if state == "END":
            recovery.open_alerts.pop(alert_id, None)
        else:
            recovery.open_alerts[alert_id] = record
    return recovery


def closing_updates(recovery: Recovery, clock_ns: int) -> list[AlertUpdate]:
    """An END for every alert the previous run left open, stamped with its last stamp (or `clock_ns`)."""
    updates = []
    for alert_id, record in recovery.open_alerts.items():
        stamp = record.get("stamp_ns")
        updates.append(AlertUpdate(
            alert_id, str(record.get("camera", "")), str(record.get("category", "")), END,
            stamp if isinstance(stamp, int) and stamp > 0 else clock_ns, 0.0, (), RESTART_TEXT,
            SEVERITIES.get(record.get("severity"), 1), ""))
    return updates


def run_id() -> str:
    """A short id of this run (its start in milliseconds, base 36), for alert ids when there is no log to continue
    from."""
    number, digits = time.time_ns() // 1_000_000, ""
    while number:
        number, digit = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
    return digits


def resume(ids: AlertIds, log_path: str, clock_ns: int, warn: Callable[[str], None]) -> list[AlertUpdate]:
    """Continue `ids` from the event log at `log_path` (without a log: ids carry this run's id instead) and return
    the ENDs of the alerts a previous run left open (published once the node's publishers are active)."""
    recovery = read_event_log(log_path)
    ids.run = "" if log_path else (ids.run or run_id())
    ids.resume(recovery.last_number)
    if recovery.open_alerts:
        warn(f"{len(recovery.open_alerts)} alerts of a previous run were never ENDed: ENDing them now")
    return closing_updates(recovery, clock_ns)
