"""tools/pg-test-cluster, the throwaway PostgreSQL server .ci/run gives the store tests: the
URL it prints works and can create databases, but is not a superuser's; a connection needs
the password; fsync is on; ``stop`` removes everything, and touches no folder it did not make.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from support import skip_or_fail

TOOL = Path(__file__).resolve().parents[2] / "tools" / "pg-test-cluster"


def _cluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TOOL), *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def cluster_url() -> Iterator[tuple[str, Path]]:
    if not (shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb")):
        skip_or_fail("PostgreSQL's server (initdb) is not installed: Debian's postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        skip_or_fail("psycopg is not installed: pip install 'keyblob[postgres]'")
    # Not under pytest's tmp_path: as root the server runs as another user, who must be
    # able to reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="keyblob-pg-test."))
    started = _cluster("start", str(folder))
    try:
        assert started.returncode == 0, started.stderr
        yield started.stdout.strip(), folder
    finally:
        stopped = _cluster("stop", str(folder))
        assert stopped.returncode == 0, stopped.stderr
        assert not folder.exists()


def test_the_url_creates_databases_with_a_password_only(cluster_url: tuple[str, Path]) -> None:
    import psycopg

    url, folder = cluster_url
    parts = urlsplit(url)
    assert parts.scheme == "postgresql" and parts.hostname == "127.0.0.1"
    assert parts.username == "keyblob" and len(parts.password or "") == 32
    with psycopg.connect(url, autocommit=True) as db:
        assert db.execute("SHOW fsync").fetchone() == ("on",)
        assert db.execute(
            "SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (False, True)
        db.execute('CREATE DATABASE "made_here"')
        db.execute('DROP DATABASE "made_here" WITH (FORCE)')
    # The server and its socket live in the folder, private to the server's user.
    assert (folder / "data" / "PG_VERSION").is_file()
    assert os.stat(folder).st_mode & 0o077 == 0
    no_password = urlunsplit(parts._replace(netloc=f"keyblob@127.0.0.1:{parts.port}"))
    wrong = urlunsplit(parts._replace(netloc=f"keyblob:wrong@127.0.0.1:{parts.port}"))
    for refused in (no_password, wrong):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(refused, connect_timeout=10, passfile=os.devnull).close()


def test_stop_leaves_other_folders_alone(tmp_path: Path) -> None:
    (tmp_path / "keep").write_text("mine")
    result = _cluster("stop", str(tmp_path))
    assert result.returncode == 1 and "not touching it" in result.stderr
    assert (tmp_path / "keep").read_text() == "mine"
    assert _cluster("stop", str(tmp_path / "absent")).returncode == 0
