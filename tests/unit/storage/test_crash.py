"""Crash safety (threat model P8) of keyblob.atomic's replacing write: SIGKILL a writer at
random instants, then check that the file is complete, never torn, and that only temp files
are left over.  Every store's put, over every backend: tests/contract/test_store_crash.py."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import keyblob.atomic
from keyblob.storage import MAX_ITEM_SIZE

SRC = Path(keyblob.atomic.__file__).resolve().parents[1]
ITERATIONS = 20
TIME_BUDGET = 4.0  # seconds; stop iterating once spent
MAX_DELAY = 0.04  # seconds between the child being ready and the kill


def payload(counter: int) -> bytes:
    """64 KiB that say which counter they belong to, in every 8-byte word."""
    return counter.to_bytes(8, "big") * (MAX_ITEM_SIZE // 8)


_PAYLOAD_SOURCE = """
def payload(counter):
    return counter.to_bytes(8, "big") * (65536 // 8)
"""

_REPLACE_WRITER = (
    _PAYLOAD_SOURCE
    + """
import sys
from pathlib import Path
from keyblob.atomic import write_atomic
path = Path(sys.argv[1])
counter = int(sys.argv[2])
print("ready", flush=True)
while True:
    counter += 1
    write_atomic(path, payload(counter), exclusive=False)
"""
)


def run_and_kill(script: str, args: list[str], delay: float) -> None:
    """Start ``script``, wait until it is writing, let it run ``delay`` s, SIGKILL it."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    try:
        assert child.stdout is not None
        ready = child.stdout.readline()
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=10)
    finally:
        child.kill()
        child.wait()
    # Anything but death by our SIGKILL means the writer failed on its own: show why.
    assert ready == b"ready\n", err.decode(errors="replace")
    assert child.returncode == -signal.SIGKILL, err.decode(errors="replace")


def test_write_atomic_replace_survives_sigkill_at_random_instants(tmp_path: Path) -> None:
    rng = random.Random(20240602)
    path = tmp_path / "target"
    path.write_bytes(payload(0))
    previous = 0
    deadline = time.monotonic() + TIME_BUDGET
    for _ in range(ITERATIONS):
        if time.monotonic() > deadline:
            break
        run_and_kill(_REPLACE_WRITER, [str(path), str(previous)], rng.uniform(0, MAX_DELAY))
        data = path.read_bytes()
        counter = int.from_bytes(data[:8], "big")
        # Either the old content or a newer one, and always complete.
        assert data == payload(counter), "torn file"
        assert counter >= previous
        for name in os.listdir(tmp_path):
            assert name == "target" or (name.startswith(".target.") and name.endswith(".tmp"))
        previous = counter
    assert previous > 0  # the writers did replace the file
