"""Messages (issue 12 items 3 and 6): hints that work, CLI words in CLI errors, "did you
mean", a missing store folder, a file where a name is expected, CryptoAPI blobs given to
verify/import, help for every option, every --format in the README, labelled PEM blocks."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from keyblob import blobs
from keyblob.cli import build_parser, main
from keyblob.errors import UsageError
from keyblob.keys import Algorithm
from keyblob.providers.software import Home
from keyblob.storage import open_store

PASS = "s3cret passphrase"
ROOT = Path(__file__).resolve().parents[2]


class Shell:
    def __init__(self, capsys: pytest.CaptureFixture[str], home: Path) -> None:
        self.capsys = capsys
        self.home = home

    def __call__(self, *argv: str, home: Path | None = None) -> tuple[int, str, str]:
        self.capsys.readouterr()
        status = main(["--home", str(home or self.home), *[str(a) for a in argv]])
        out, err = self.capsys.readouterr()
        return status, out, err


@pytest.fixture
def kb(capsys, monkeypatch, tmp_path) -> Shell:
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    monkeypatch.delenv("KEYBLOB_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    return Shell(capsys, tmp_path / "home")


def _no_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any unlock now fails with "no passphrase" (exit 2): what fails otherwise was found
    before the unlock."""
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")


# Item 3, first bullet ------------------------------------------------------------------


def test_not_a_recipient_says_what_helps_and_that_rotating_does_not(kb, tmp_path):
    alice, bob, shared = tmp_path / "alice", tmp_path / "bob", tmp_path / "shared"
    kb("init", home=alice)
    kb("init", home=bob)
    kb("pubkey", "-o", tmp_path / "alice.pub", home=alice)
    assert kb("trust", "add", tmp_path / "alice.pub", home=bob)[0] == 0
    assert kb("--store", shared, "new", "payroll", home=alice)[0] == 0
    (tmp_path / "in.txt").write_text("salaries")
    status, _, err = kb(
        "--store", shared, "encrypt", "payroll", "-i", "in.txt", "-o", "out.kb", home=bob
    )
    assert status == 3 and "not wrapped for this container" in err
    # Before: "ask its owner to wrap it for you: keyblob rotate payroll --to YOUR.pub",
    # which makes a new generation that never opens what this one encrypted.
    assert "--to YOUR.pub" not in err
    assert "ask a holder of the key to share it with you (keyblob share NAME" in err
    assert "makes a new key that opens only data encrypted after it, never this file" in err
    assert not (tmp_path / "out.kb").exists()


# Item 3, third bullet ------------------------------------------------------------------


def test_trust_add_of_the_own_key_is_already_trusted(kb, tmp_path):
    kb("init")
    own = tmp_path / "own.pub"
    kb("pubkey", "-o", own)
    status, out, err = kb("trust", "add", own)
    assert (status, err) == (0, "")
    assert out.startswith("already trusted: this is this container's own key, sg-")
    rows = json.loads(kb("trust", "list", "--json")[1])
    assert [r["own"] for r in rows] == [True]  # no stray entry
    # trust remove of the own key keeps its explanation.
    status, _, err = kb("trust", "remove", rows[0]["fingerprint"])
    assert status == 2 and "own signature key: it is always trusted" in err


def test_trust_add_of_the_own_key_with_another_exchange_key_is_refused(kb, tmp_path):
    kb("init")
    other = tmp_path / "other"
    kb("init", home=other)
    own, theirs = tmp_path / "own.pub", tmp_path / "theirs.pub"
    kb("pubkey", "-o", own)
    kb("pubkey", "-o", theirs, home=other)
    from keyblob.format import PublicKeyFile, armor, dearmor
    from keyblob.format.armor import PUBLIC_KEY

    mine = PublicKeyFile.from_bytes(dearmor(own.read_bytes(), PUBLIC_KEY))
    them = PublicKeyFile.from_bytes(dearmor(theirs.read_bytes(), PUBLIC_KEY))
    swapped = tmp_path / "swapped.pub"
    swapped.write_bytes(
        armor(
            PublicKeyFile(mine.suite, mine.label, them.exchange, mine.signature).to_bytes(),
            PUBLIC_KEY,
        )
    )
    status, out, err = kb("trust", "add", swapped)
    assert status == 3 and "known here with another exchange key" in err
    assert "already trusted" not in out


# Item 6: library wording ---------------------------------------------------------------


def test_a_legacy_algorithm_names_the_cli_option_only(kb):
    kb("init")
    status, _, err = kb("new", "old", "--algorithm", "capi-rc4")
    assert status == 2 and "new keys need --legacy" in err
    assert "=True" not in err and "library" not in err


def test_storing_over_an_existing_name_says_the_cli_words(tmp_path):
    container = Home(tmp_path / "home").create("default", PASS.encode())
    store = open_store(str(tmp_path / "store"))
    blobs.store_key(container, store, "k", b"k" * 16, algorithm=Algorithm.CAPI_AES_128)
    with pytest.raises(UsageError) as e:
        blobs.store_key(container, store, "k", b"j" * 16, algorithm=Algorithm.CAPI_AES_128)
    text = " ".join((str(e.value), *e.value.hints))
    assert "rotate_existing" not in text and "=True" not in text
    assert "--rotate" in text and "--name" in text


# Item 6: did you mean ------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("show", "payrol"),
        ("export", "payrol", "-o", "x.kb"),
        ("export", "payrol", "-o", "x.kb", "--generation", "1"),
        ("rotate", "payrol"),
        ("encrypt", "payrol", "-i", "in.txt", "-o", "out.kb"),
    ],
)
def test_a_name_not_found_suggests_the_closest(kb, tmp_path, argv):
    kb("init")
    kb("new", "payroll")
    kb("new", "backups")
    (tmp_path / "in.txt").write_text("x")
    status, _, err = kb(*argv)
    assert status == 4 and ("no key named payrol in " in err or "no blob payrol " in err)
    assert err.count("keyblob: hint:") == 1
    assert "keyblob: hint: did you mean payroll?" in err


def test_no_suggestion_when_nothing_is_close(kb):
    kb("init")
    kb("new", "payroll")
    status, _, err = kb("show", "zzz")
    assert status == 4 and "hint" not in err


# Item 6: a missing store folder --------------------------------------------------------


def test_a_missing_store_folder_says_it_does_not_exist(kb, tmp_path, monkeypatch):
    kb("init")
    kb("new", "payroll")
    _no_passphrase(monkeypatch)  # said before the unlock: no passphrase needed
    missing = tmp_path / "typo"
    for argv in (
        ("list",),
        ("show", "payroll"),
        ("export", "payroll", "-o", "x.kb"),
        ("rotate", "payroll"),
        ("encrypt", "payroll", "-o", "out.kb"),
    ):
        status, _, err = kb("--store", missing, *argv)
        assert status == 4, argv
        assert f"store folder {missing} does not exist" in err
        assert "--store may name the wrong folder" in err
    monkeypatch.setenv("KEYBLOB_STORE", str(missing))
    status, _, err = kb("show", "payroll")
    assert status == 4 and "KEYBLOB_STORE may name the wrong folder" in err
    assert not missing.exists()  # nothing was created by a read


def test_the_default_store_before_the_first_key_has_no_keys(kb):
    kb("init")
    status, _, err = kb("list")
    assert status == 0 and "no keys in" in err


# Item 6: a file where a name is expected -----------------------------------------------


def test_a_file_given_as_name_says_so(kb, tmp_path, monkeypatch):
    kb("init")
    kb("new", "payroll")
    assert kb("export", "payroll", "-o", "payroll.kb")[0] == 0
    status, _, err = kb("show", "payroll.kb")
    assert status == 2
    assert "payroll.kb is a file; NAME is a key name (keyblob list shows them)" in err
    assert "to read a blob file use keyblob verify, inspect or import" in err
    status, _, err = kb("encrypt", "payroll.kb", "-o", "out.kb")
    assert status == 2 and "payroll.kb is a file" in err and "give it with -i FILE" in err
    # A path that cannot be a name is found before any passphrase is asked.
    _no_passphrase(monkeypatch)
    status, _, err = kb("encrypt", "./payroll.kb", "-o", "out.kb")
    assert status == 2 and "./payroll.kb is a file; NAME is a key name" in err
    status, _, err = kb("show", "./payroll.kb")
    assert status == 2 and "to read a blob file use keyblob verify" in err
    assert not (tmp_path / "out.kb").exists()


def test_an_invalid_name_that_is_no_file_stays_an_invalid_name(kb):
    kb("init")
    status, _, err = kb("show", "./nothing-here")
    assert status == 2 and "invalid name" in err


# Item 6: a CryptoAPI blob given to verify or import ------------------------------------


def test_verify_and_import_of_a_cryptoapi_blob_point_to_capi(kb, tmp_path, monkeypatch):
    kb("init")
    # A SIMPLEBLOB: BLOBHEADER (bType 1, version 2, CALG_AES_128), ALG_ID CALG_RSA_KEYX.
    simple = tmp_path / "key.simpleblob"
    simple.write_bytes(bytes.fromhex("0102000010660000") + bytes.fromhex("00a40000") + b"w" * 256)
    _no_passphrase(monkeypatch)  # told before the unlock
    for command in ("verify", "import"):
        status, _, err = kb(command, simple)
        assert status == 3, command
        assert f"{simple} is a CryptoAPI SIMPLEBLOB, not a keyblob key blob" in err
        assert "keyblob capi import-simpleblob" in err
    status, out, _ = kb("verify", simple, "--json")
    doc = json.loads(out)
    assert status == 3 and doc["valid"] is False and "CryptoAPI SIMPLEBLOB" in doc["reason"]


def test_import_of_a_cryptoapi_public_key_blob_points_to_trust_add(kb, tmp_path):
    rsa = tmp_path / "rsa"
    kb("init", "--suite", "rsa", "--bits", "2048", home=rsa)
    pub = tmp_path / "rsa.pubblob"
    assert kb("pubkey", "--format", "msblob", "-o", pub, home=rsa)[0] == 0
    status, _, err = kb("import", pub, home=rsa)
    assert status == 3 and "CryptoAPI PUBLICKEYBLOB" in err and "keyblob trust add" in err


# Item 6: help for every option ---------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sp in action.choices.items():
                yield (*path, name), sp
                yield from _subcommands(sp, (*path, name))


_MY_COMMANDS = {
    "init", "new", "rotate", "list", "show", "export", "import", "verify", "inspect",
    "pubkey", "encrypt", "decrypt", "trust",
}  # fmt: skip


def test_every_option_of_the_key_data_and_trust_commands_has_help():
    missing = [
        (" ".join(path), action.option_strings or action.dest)
        for path, sp in _subcommands(build_parser())
        if path[0] in _MY_COMMANDS
        for action in sp._actions
        if action.help is None and not isinstance(action, argparse._SubParsersAction)
    ]
    assert missing == []


def test_init_help_describes_every_option(capsys):
    assert main(["init", "--help"]) == 0
    out = capsys.readouterr().out
    for option, words in (
        ("--suite", "Ed25519"),
        ("--bits", "RSA key size"),
        ("--label", "what people call the container"),
        ("--container", "container name"),
    ):
        assert option in out and words in out


# Item 6: the README lists every --format ------------------------------------------------


def test_the_readme_lists_every_format_value_of_every_command():
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    checked = 0
    for path, sp in _subcommands(build_parser()):
        for action in sp._actions:
            formats = {"--format", "--to"} & set(action.option_strings)
            if not formats or not action.choices:
                continue
            option = formats.pop()
            row = [r for r in rows if r.startswith(f"| `{' '.join(path)} ")]
            assert row, path
            listed = re.search(re.escape(option) + r" ([a-z0-9\\|]+)", row[0])
            assert listed, (path, option)
            assert set(listed.group(1).split("\\|")) == set(action.choices), path
            checked += 1
    assert checked >= 2  # pubkey --format, capi convert --to


# Item 6: PEM output of two keys labels each block --------------------------------------


def _blocks(pem: str) -> list[tuple[str, str]]:
    """(the text line before a block, the text from that line to the block's END)."""
    lines = pem.splitlines(keepends=True)
    out = []
    for i, line in enumerate(lines):
        if line.startswith("-----BEGIN "):
            end = next(j for j in range(i, len(lines)) if lines[j].startswith("-----END "))
            out.append((lines[i - 1].strip(), "".join(lines[i - 1 : end + 1])))
    return out


def test_pem_output_of_a_pq_container_is_refused_in_one_line(kb):
    kb("init", "--suite", "pq")
    status, out, err = kb("pubkey", "--format", "pem")
    assert status == 2 and out == ""
    assert err.splitlines() == [
        "keyblob: error: pq public keys have no PEM form (no standard encodes the pair)"
    ]


@pytest.mark.parametrize("suite", ["x25519", "rsa", "p256"])
def test_pem_output_labels_each_block(kb, suite):
    argv = ("init", "--suite", suite) + (("--bits", "2048") if suite == "rsa" else ())
    kb(*argv)
    status, pem, _ = kb("pubkey", "--format", "pem")
    assert status == 0
    blocks = _blocks(pem)
    assert [label.split()[:2] for label, _ in blocks] == [
        ["exchange", "key"],
        ["signature", "key"],
    ]
    fp = json.loads(kb("trust", "list", "--json")[1])[0]["fingerprint"]
    grouped = " ".join(fp[i : i + 4] for i in range(0, len(fp), 4))
    for label, text in blocks:
        assert grouped in label and "of 'default'" in label
        load_pem_public_key(text.encode())  # the label line is text before BEGIN
    assert pem.startswith("exchange key kx-")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_reads_each_labelled_pem_block(kb, tmp_path):
    kb("init")
    _, pem, _ = kb("pubkey", "--format", "pem")
    kinds = []
    for i, (_, text) in enumerate(_blocks(pem)):
        path = tmp_path / f"block{i}.pem"
        path.write_text(text)
        done = subprocess.run(
            ["openssl", "pkey", "-pubin", "-in", str(path), "-noout", "-text"],
            capture_output=True,
            text=True,
            check=True,
        )
        kinds.append(done.stdout.split()[0])
    assert kinds == ["X25519", "ED25519"]
    # The whole output too: openssl reads its first block, the exchange key.
    whole = tmp_path / "both.pem"
    whole.write_text(pem)
    done = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(whole), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("X25519")


def test_decrypt_with_a_missing_store_folder_says_it_does_not_exist(kb, tmp_path):
    kb("init")
    kb("new", "payroll")
    (tmp_path / "in.txt").write_text("salaries")
    assert kb("encrypt", "payroll", "-i", "in.txt", "-o", "ct.kb")[0] == 0
    status, _, err = kb("--store", tmp_path / "typo", "decrypt", "-i", "ct.kb", "-o", "out")
    assert status == 4 and "does not exist" in err and "--store may name" in err
    assert not (tmp_path / "out").exists()


# trust remove of something that is not a signer id -------------------------------------


def test_trust_remove_of_a_label_or_unknown_id_points_to_trust_list(kb):
    kb("init")
    status, _, err = kb("trust", "remove", "alice")
    assert status == 2 and "'alice' is not a signer id" in err
    assert "keyblob: hint: keyblob trust list shows each trusted signer's id" in err
    status, _, err = kb("trust", "remove", "0123456789")
    assert status == 4 and "no trusted signer" in err and "keyblob trust list shows" in err


def test_verify_of_a_cryptoapi_blob_keyblob_does_not_read_says_so(kb, tmp_path):
    kb("init")
    opaque = tmp_path / "key.opaque"
    opaque.write_bytes(bytes.fromhex("0902000010660000") + b"o" * 32)  # OPAQUEKEYBLOB
    status, _, err = kb("verify", opaque)
    assert status == 3 and "is a CryptoAPI OPAQUEKEYBLOB, not a keyblob key blob" in err
    assert "this kind is not supported" in err
