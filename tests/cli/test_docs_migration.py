"""docs/MSCAPI.md section 7, "Migrating from CryptoAPI", run against the committed samples.

Every ``$ ...`` line of the section's code blocks runs in order in a scratch copy of
docs/samples/capi/ (made under Wine by tools/make_capi_samples.py; no Wine is needed here):
``keyblob`` lines in-process through ``keyblob.cli.main``, the few shell lines (``cmp``,
``head``, ``dd``, ``mkdir``) with bash. The exit status after each command must be the
``[exit N]`` the doc shows, and the lines it prints must be the doc's (compared as a multiset,
since standard output and standard error interleave differently here; key ids and dates are
masked). Then the key facts are checked on the files the walkthrough left behind, so neither
the doc nor the samples can rot unnoticed.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from keyblob import mscapi
from keyblob.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "MSCAPI.md"
SAMPLES = ROOT / "docs" / "samples" / "capi"
PASSPHRASE = "correct horse battery staple"

#: Setup lines of the doc that the fixture does itself (copy the samples, set the env).
SETUP = ("cp -r docs/samples/capi", "export ")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash, cmp, head, dd")


@dataclass
class Step:
    command: str
    expected_lines: list[str]
    expected_status: int | None
    lines: list[str]
    status: int
    out: str = ""  # standard output alone (keyblob commands)


def _section7() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## 7. Migrating from CryptoAPI")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _transcript() -> list[tuple[str, list[str], int | None]]:
    """(command, expected output lines, expected exit status or None) from the code blocks."""
    steps: list[tuple[str, list[str], int | None]] = []
    for block in re.findall(r"^```\n(.*?)^```$", _section7(), flags=re.S | re.M):
        current: tuple[str, list[str], list[int]] | None = None
        for line in block.splitlines():
            if line.startswith("$ "):
                if current:
                    steps.append((current[0], current[1], (current[2] or [None])[0]))
                current = (line[2:], [], [])
            elif current is not None:
                if m := re.fullmatch(r"\[exit (\d+)\]", line):
                    current[2].append(int(m.group(1)))
                else:
                    current[1].append(line)
        if current:
            steps.append((current[0], current[1], (current[2] or [None])[0]))
    return steps


MASKS = [
    (re.compile(r"\b(kx|sg)-[0-9a-f]{8}\b"), r"\1-ID"),
    (re.compile(r"key id( +)[0-9a-f]{8,32}\b"), r"key id\1ID"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"), "DATE"),
]


def _mask(line: str) -> str:
    for pattern, replacement in MASKS:
        line = pattern.sub(replacement, line)
    return line.rstrip()


def _run_keyblob(argv: list[str]) -> tuple[int, str, str]:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace")
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        status = main(argv)
    finally:
        sys.stdout, sys.stderr = saved
    texts = []
    for stream in (out, err):
        stream.flush()
        texts.append(stream.buffer.getvalue().decode("utf-8", errors="replace"))  # type: ignore[attr-defined]
    return status, texts[0], texts[1]


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Step]]:
    """Run section 7 once, in order, as a user would in ~/capi-demo."""
    home = tmp_path_factory.mktemp("user")
    work = home / "capi-demo"
    shutil.copytree(SAMPLES, work)
    env = {
        "HOME": str(home),
        "KEYBLOB_HOME": str(work / "home"),
        "KEYBLOB_PASSPHRASE": PASSPHRASE,
    }
    saved_env = {k: os.environ.get(k) for k in (*env, "KEYBLOB_STORE", "KEYBLOB_CONTAINER")}
    saved_cwd = os.getcwd()
    os.environ.update(env)
    os.environ.pop("KEYBLOB_STORE", None)
    os.environ.pop("KEYBLOB_CONTAINER", None)
    os.chdir(work)
    steps = []
    try:
        for command, expected, expected_status in _transcript():
            if command.startswith(SETUP):
                continue
            argv = shlex.split(command)
            if argv[0] == "keyblob":
                status, stdout, stderr = _run_keyblob(argv[1:])
            else:
                done = subprocess.run(
                    ["bash", "-c", command],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                    env={**os.environ, **env},
                )
                status, stdout, stderr = done.returncode, done.stdout, done.stderr
            lines = (stdout + stderr).splitlines()
            steps.append(Step(command, expected, expected_status, lines, status, stdout))
    finally:
        os.chdir(saved_cwd)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return work, steps


def test_samples_are_committed_and_small():
    names = {p.name for p in SAMPLES.iterdir()}
    for name in (
        "README.md",
        "exchange.privblob",
        "signer.pubblob",
        "signer.xml",
        "payroll.simpleblob",
        "payroll.sig",
        "salaries.csv",
        "salaries.csv.enc",
        "memo.txt",
        "memo.txt.enc",
        "notes-rc4.simpleblob",
        "notes-rc4.sig",
        "notes.txt",
        "notes.txt.enc",
        "exchange-1024.privblob",
        "archive-3des.simpleblob",
        "archive-3des.sig",
        "archive.txt",
        "archive.txt.enc",
        "substituted.simpleblob",
    ):
        assert name in names
    assert sum(p.stat().st_size for p in SAMPLES.iterdir()) < 20 * 1024
    assert "throwaway" in (SAMPLES / "README.md").read_text(encoding="utf-8")
    # The Windows files are what the doc says they are (structure only, no keyblob opinion).
    assert mscapi.describe((SAMPLES / "exchange.privblob").read_bytes())[0] == "PRIVATEKEYBLOB"
    priv = mscapi.PrivateKeyBlob.from_bytes((SAMPLES / "exchange.privblob").read_bytes())
    assert priv.alg_id is mscapi.AlgId.RSA_KEYX and priv.to_private_key().key_size == 2048
    old = mscapi.PrivateKeyBlob.from_bytes((SAMPLES / "exchange-1024.privblob").read_bytes())
    assert old.to_private_key().key_size == 1024
    signer = mscapi.PublicKeyBlob.from_bytes((SAMPLES / "signer.pubblob").read_bytes())
    assert signer.alg_id is mscapi.AlgId.RSA_SIGN
    for blob, alg in (
        ("payroll", mscapi.AlgId.AES_256),
        ("notes-rc4", mscapi.AlgId.RC4),
        ("archive-3des", mscapi.AlgId.TRIPLE_DES),
        ("substituted", mscapi.AlgId.AES_256),
    ):
        assert (
            mscapi.SimpleBlob.from_bytes((SAMPLES / f"{blob}.simpleblob").read_bytes()).alg_id
            is alg
        )


def test_the_doc_has_the_whole_walkthrough():
    commands = " ".join(c for c, _, _ in _transcript())
    for needle in (
        "keyblob init --suite rsa",
        "keyblob capi import-keypair exchange.privblob",
        "keyblob capi import-simpleblob payroll.simpleblob --name payroll --signature",
        "keyblob capi decrypt payroll -i",
        "keyblob show payroll",
        "keyblob capi export-public",
        "keyblob capi export-simpleblob payroll",
        "keyblob capi encrypt payroll",
        "keyblob capi convert exchange.privblob --to pem",
        "keyblob capi convert signer.pubblob --to pem",
        "keyblob capi convert signer.pubblob --to xml",
        "--info",
        "keyblob capi unwrap --private exchange.privblob payroll.simpleblob",
        "-i salaries.csv.enc -i memo.txt.enc -o plain",
        "--unsigned",
        "--legacy",
    ):
        assert needle in commands, needle
    assert len(_transcript()) >= 40


def test_every_command_exits_as_documented(walkthrough):
    _, steps = walkthrough
    wrong = [
        f"{s.command!r}: exit {s.status}, doc says {s.expected_status}\n  " + "\n  ".join(s.lines)
        for s in steps
        if s.expected_status is not None and s.status != s.expected_status
    ]
    assert not wrong, "\n".join(wrong)


def test_every_command_prints_what_the_doc_shows(walkthrough):
    _, steps = walkthrough
    wrong = []
    for s in steps:
        expected = sorted(_mask(line) for line in s.expected_lines)
        actual = sorted(_mask(line) for line in s.lines)
        if expected != actual:
            wrong.append(
                f"$ {s.command}\n--- doc\n{chr(10).join(expected)}\n--- now\n{chr(10).join(actual)}"
            )
    assert not wrong, "\n\n".join(wrong)


def _step(steps: list[Step], prefix: str) -> Step:
    return next(s for s in steps if s.command.startswith(prefix))


def test_into_a_home_gives_back_the_windows_plaintext(walkthrough):
    work, steps = walkthrough
    assert (work / "salaries.out.csv").read_bytes() == (SAMPLES / "salaries.csv").read_bytes()
    memo = _step(steps, "keyblob capi decrypt payroll -i memo.txt.enc")
    assert memo.out == (SAMPLES / "memo.txt").read_text(encoding="utf-8")
    notes = _step(steps, "keyblob capi decrypt notes -i notes.txt.enc")
    assert any("CALG_RC4 is a legacy CryptoAPI algorithm" in line for line in notes.lines)
    assert notes.out == (SAMPLES / "notes.txt").read_text(encoding="utf-8")
    show = _step(steps, "keyblob show payroll")
    imported = _step(steps, "keyblob capi import-keypair exchange.privblob")
    kx = re.search(r"kx-[0-9a-f]{8}", imported.lines[0])
    assert kx and f"recipients   {kx.group(0)} (this container)" in show.lines
    assert "algorithm    capi-aes-256" in show.lines


def test_the_way_back_is_what_cryptoapi_wrote(walkthrough):
    work, _ = walkthrough
    # Same key, zero IV: byte-identical to CryptEncrypt's output, for AES and RC4.
    assert (work / "memo-back.enc").read_bytes() == (SAMPLES / "memo.txt.enc").read_bytes()
    assert (work / "notes-back.enc").read_bytes() == (SAMPLES / "notes.txt.enc").read_bytes()
    # The exported SIMPLEBLOB is signed by the container and opens to the Windows key.
    blob = (work / "payroll-back.simpleblob").read_bytes()
    signer = mscapi.PublicKeyBlob.from_bytes((work / "keyblob-signer.pubblob").read_bytes())
    mscapi.verify_signature(signer.to_public_key(), (work / "payroll-back.sig").read_bytes(), blob)
    windows = mscapi.PrivateKeyBlob.from_bytes((SAMPLES / "exchange.privblob").read_bytes())
    back = mscapi.unwrap_simpleblob(blob, windows.to_private_key(), authenticated=True)
    original = mscapi.PlaintextKeyBlob.from_bytes((work / "payroll.plainblob").read_bytes())
    assert back.alg_id is original.alg_id and back.unsafe_raw_bytes() == original.key
    exchange = (work / "keyblob-exchange.pubblob").read_bytes()
    assert exchange == (work / "windows-exchange.pubblob").read_bytes()


def test_one_shot_outputs(walkthrough):
    work, steps = walkthrough
    for name in ("salaries.csv", "memo.txt"):
        assert (work / "plain" / name).read_bytes() == (SAMPLES / name).read_bytes()
        assert stat.S_IMODE((work / "plain" / name).stat().st_mode) == 0o600
    for secret in ("exchange.pem", "payroll.plainblob"):
        assert stat.S_IMODE((work / secret).stat().st_mode) == 0o600
    assert (work / "exchange.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert (work / "exchange-again.privblob").read_bytes() == (
        SAMPLES / "exchange.privblob"
    ).read_bytes()
    assert (work / "signer-out.xml").read_bytes() == (SAMPLES / "signer.xml").read_bytes()
    from_xml = (work / "signer-from-xml.pubblob").read_bytes()
    original = (SAMPLES / "signer.pubblob").read_bytes()
    assert [i for i in range(len(original)) if from_xml[i] != original[i]] == [5]
    plain = (work / "payroll.plainblob").read_bytes()
    assert len(plain) == 44 and mscapi.describe(plain)[0] == "PLAINTEXTKEYBLOB"
    key = _step(steps, "keyblob capi decrypt --key payroll.plainblob")
    assert key.out == (SAMPLES / "salaries.csv").read_text(encoding="utf-8")
    archive = _step(steps, "keyblob capi decrypt --private exchange-1024.privblob")
    assert archive.out == (SAMPLES / "archive.txt").read_text(encoding="utf-8")


def test_refusals_write_nothing(walkthrough):
    work, steps = walkthrough
    # Only the good file of the batch and the (undetectably) truncated RC4 file are there.
    assert sorted(p.name for p in (work / "out").iterdir()) == ["cut-notes.txt", "salaries.csv"]
    notes = (SAMPLES / "notes.txt").read_bytes()
    assert (work / "out" / "cut-notes.txt").read_bytes() == notes[:40]
    assert (work / "out" / "salaries.csv").read_bytes() == (SAMPLES / "salaries.csv").read_bytes()
    tampered = (work / "tampered.simpleblob").read_bytes()
    original = (SAMPLES / "payroll.simpleblob").read_bytes()
    assert len(tampered) == len(original) and tampered != original
    refused = [s for s in steps if s.status == 3]
    assert len(refused) >= 8
    for s in refused:
        assert any(line.startswith("keyblob: error: ") for line in s.lines), s.command
    unsigned = _step(
        steps, "keyblob capi unwrap --private exchange.privblob substituted.simpleblob --unsigned"
    )
    assert any(
        "is not signed: anyone who could write to the disk" in line for line in unsigned.lines
    )
