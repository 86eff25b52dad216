"""Fixtures shared by the command-line tests."""

from __future__ import annotations

import os

import pytest

from keyblob.cli import main


@pytest.fixture
def kb(request, tmp_path, monkeypatch, capsys):
    """``kb(*argv) -> (status, stdout, stderr)``: ``keyblob`` run in-process on a fresh home
    under ``tmp_path``, with the passphrase the test module names as ``PASS``.  A module may
    define its own ``kb``, which then takes the place of this one."""
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", request.module.PASS)
    monkeypatch.setenv("KEYBLOB_HOME", str(tmp_path / "home"))

    def run(*argv: str | os.PathLike[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run
