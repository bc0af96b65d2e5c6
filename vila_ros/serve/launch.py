"""`vila-ros serve` as a child process on loopback (tests, benchmarks): started, waited for, stopped."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(model_dir: str | Path, *extra: str, startup_s: float = 120.0) -> Iterator[str]:
    """Yields the server's base URL (http://127.0.0.1:PORT) once /health answers."""
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from vila_ros.cli import main; sys.exit(main())",
                             "serve", "--model", str(model_dir), "--host", "127.0.0.1", "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError("vila-ros serve exited: " + proc.stdout.read().decode(errors="replace")[-2000:])
            try:
                if httpx.get(base + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vila-ros serve did not answer /health within {startup_s:g} s")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
