"""Build ``capi_peer.c`` with mingw-w64 and run it headless under Wine.

The peer is a real CryptoAPI (Wine's ``rsaenh`` behind ``advapi32``); see README.md here for
its command line and file formats. :func:`start` builds the ``.exe`` once per source hash and
creates the Wine prefix once, both in a cache folder (``$KEYBLOB_CAPI_CACHE``, else
``$XDG_CACHE_HOME/keyblob-capi``, else ``~/.cache/keyblob-capi``), then keeps one wineserver
alive for the session so that each call costs tens of milliseconds instead of half a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SOURCE = Path(__file__).with_name("capi_peer.c")
CC = "x86_64-w64-mingw32-gcc"
CFLAGS = ("-std=c11", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Wshadow", "-Wconversion")
CFLAGS += ("-Werror", "-s")
LIBS = ("-ladvapi32",)

#: Exit statuses of the peer (also in capi_peer.c and README.md).
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_BAD_SIGNATURE, EXIT_BAD_DECRYPT, EXIT_BAD_IMPORT = range(6)

#: Seconds for one peer call; prefix creation (first run, ~5 s) gets PREFIX_TIMEOUT.
CALL_TIMEOUT = 60.0
PREFIX_TIMEOUT = 300.0


class PeerUnavailableError(RuntimeError):
    """Wine or mingw-w64 is not installed: the caller decides between skip and failure."""


def cache_dir() -> Path:
    """The folder that holds built peers, the Wine prefix and a lock file."""
    if explicit := os.environ.get("KEYBLOB_CAPI_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "keyblob-capi"


def find_wine() -> list[str]:
    """The Wine loader: Debian's ``wine`` wrapper picks wine64 when wine32 is absent."""
    for name in ("wine", "wine64"):
        if path := shutil.which(name):
            return [path]
    if os.access("/usr/lib/wine/wine64", os.X_OK):
        return ["/usr/lib/wine/wine64"]
    raise PeerUnavailableError(
        "Wine is not installed (Debian: apt-get install wine wine64 gcc-mingw-w64-x86-64)"
    )


def find_wineserver() -> str | None:
    for candidate in ("wineserver", "/usr/lib/wine/wineserver64", "/usr/lib/wine/wineserver"):
        path = shutil.which(candidate) or (candidate if os.access(candidate, os.X_OK) else None)
        if path:
            return path
    return None


def find_compiler() -> str:
    if path := shutil.which(CC):
        return path
    raise PeerUnavailableError(
        f"{CC} is not installed (Debian: apt-get install gcc-mingw-w64-x86-64)"
    )


def wine_env(prefix: Path) -> dict[str, str]:
    """Headless, quiet Wine: own prefix, no debug channels, no Mono/Gecko/menu builder."""
    env = {k: v for k, v in os.environ.items() if k not in {"DISPLAY", "WAYLAND_DISPLAY"}}
    env.update(
        WINEPREFIX=str(prefix),
        WINEDEBUG="-all",
        WINEDLLOVERRIDES="mscoree,mshtml=;winemenubuilder.exe=d",
    )
    return env


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Serialise building and prefix creation between concurrent test sessions."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(folder: Path) -> Path:
    """Compile the peer unless this exact source and these flags were built before."""
    recipe = SOURCE.read_bytes() + "\0".join((CC, *CFLAGS, *LIBS)).encode()
    exe = folder / f"capi_peer-{hashlib.sha256(recipe).hexdigest()[:16]}.exe"
    if exe.exists():
        return exe
    compiler = find_compiler()
    partial = exe.with_suffix(f".{os.getpid()}.tmp")
    result = subprocess.run(
        [compiler, *CFLAGS, "-o", str(partial), str(SOURCE), *LIBS],
        capture_output=True,
        text=True,
        timeout=CALL_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"building the CryptoAPI peer failed:\n{result.stderr}")
    partial.replace(exe)
    return exe


@dataclass
class CapiPeer:
    """A built peer and the Wine prefix it runs in."""

    exe: Path
    prefix: Path
    wine: list[str]
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def run(
        self, *args: str | os.PathLike[str], timeout: float = CALL_TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``capi_peer.exe ARGS``; paths are passed as absolute Unix paths.

        Wine maps ``/`` to drive Z: and resolves a rooted path on it, so ``/tmp/x`` works
        as is. The exit status is the peer's own (see EXIT_*); nothing raises on nonzero.
        """
        argv = [os.fspath(Path(a).absolute()) if isinstance(a, Path) else str(a) for a in args]
        command = [*self.wine, str(self.exe), *argv]
        done = self._run_once(command, timeout)
        # The peer writes a line to stderr for every failure it reports (capi_peer.c
        # fail_code, usage_error). A nonzero exit with no output at all is Wine failing to
        # start the program (seen once in CI under load: exit 1, nothing printed), not an
        # answer from CryptoAPI, so that one case is run again, once.
        if done.returncode != EXIT_OK and not done.stdout and not done.stderr:
            done = self._run_once(command, timeout)
        return done

    def _run_once(self, command: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
        # Files, not pipes: Wine services started by a call (winedevice.exe, on the first
        # call of a prefix) outlive it and would hold a pipe open until the server exits.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            done = subprocess.run(
                command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                timeout=timeout,
                check=False,
            )
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(command, done.returncode, out.read(), err.read())

    def check(self, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[bytes]:
        """Like :meth:`run`, but a nonzero exit raises with the peer's stderr."""
        result = self.run(*args)
        if result.returncode != EXIT_OK:
            raise AssertionError(
                f"capi_peer {' '.join(map(str, args))} exited {result.returncode}: "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result

    def close(self) -> None:
        """Stop the wineserver of this prefix (and only this prefix)."""
        if server := find_wineserver():
            subprocess.run(
                [server, "-k"], env=self.env, capture_output=True, timeout=30, check=False
            )


def start(folder: Path | None = None) -> CapiPeer:
    """Build the peer, create or update the prefix, and start a session wineserver.

    Raises:
        PeerUnavailableError: Wine or mingw-w64 is missing.
        RuntimeError: the build failed, or the peer does not run under Wine.
    """
    folder = folder or cache_dir()
    wine = find_wine()
    timings: dict[str, float] = {}
    with _locked(folder):
        began = time.monotonic()
        exe = build(folder)
        timings["build"] = time.monotonic() - began
        prefix = folder / "prefix"
        peer = CapiPeer(exe=exe, prefix=prefix, wine=wine, env=wine_env(prefix), timings=timings)
        # Keep one server for the whole session: without it a call may have to start its own
        # (Debian's wrapper passes -p0), ~0.5 s instead of ~0.1 s. close() stops it; -p60 is
        # the safety net if the session dies: the server exits a minute after its last client.
        if server := find_wineserver():
            prefix.mkdir(parents=True, exist_ok=True)
            # The server detaches; it must not inherit our pipes or run() waits for it.
            subprocess.run(
                [server, "-p60"],
                env=peer.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
                check=False,
            )
        # The first call creates (or after a Wine upgrade, updates) the prefix.
        began = time.monotonic()
        smoke = peer.run("algs", timeout=PREFIX_TIMEOUT)
        timings["first_call"] = time.monotonic() - began
    if smoke.returncode != EXIT_OK or b"0x6610" not in smoke.stdout:
        peer.close()
        raise RuntimeError(
            f"the CryptoAPI peer does not run under {wine[0]} (exit {smoke.returncode}): "
            f"{smoke.stderr.decode(errors='replace').strip()[-2000:]}"
        )
    return peer
