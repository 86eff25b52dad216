"""The command line with a container whose keys are in a PKCS#11 token (issue 14), against
SoftHSM2: the whole procedure (generated and adopted keys, the PIN from KEYBLOB_PIN and from
--pin-file), keys shared with a software container both ways, the one-line errors with
nothing changed (home, store and token), the private keys as a tool outside keyblob sees
them, and where a module path may come from.

Most commands run in-process on the shared test token (``softhsm_token``); what must change
the token under keyblob (re-initialising it) or watch what the process loads runs keyblob as
a subprocess on a throwaway token of the test's own (its own SOFTHSM2_CONF).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyblob.cli import main
from support import SoftHSMToken, skip_or_fail

PASS = "soft container passphrase"  # the software containers' passphrase
TAG = "clitest"  # in the label of every object a test makes in the shared token itself


class Shell:
    """Runs ``keyblob`` in-process against one home, as test_cli.py's Shell does; the token's
    PIN is in KEYBLOB_PIN, a software container's passphrase in KEYBLOB_PASSPHRASE."""

    def __init__(
        self,
        home: Path,
        token: SoftHSMToken,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ):
        self.home = home
        self.token = token
        self.capsys = capsys
        monkeypatch.setenv("KEYBLOB_PIN", token.pin)
        monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)

    def __call__(
        self, *argv: str | os.PathLike[str], home: Path | None = None
    ) -> tuple[int, str, str]:
        self.capsys.readouterr()
        status = main(["--home", str(home or self.home), *map(str, argv)])
        out, err = self.capsys.readouterr()
        return status, out, err

    def init(self, *extra: str, home: Path | None = None) -> tuple[int, str, str]:
        """keyblob init --provider pkcs11 on the test token."""
        return self(
            "init",
            "--provider",
            "pkcs11",
            "--module",
            self.token.module,
            "--token",
            self.token.label,
            *extra,
            home=home,
        )

    def record(self, home: Path | None = None) -> dict:
        return json.loads((home or self.home).joinpath(CONTAINER_JSON).read_text())


CONTAINER_JSON = Path("containers", "default", "container.json")


@pytest.fixture
def kb(tmp_path, softhsm_token, capsys, monkeypatch) -> Iterator[Shell]:
    """A Shell on ``tmp_path/home``; every object the test left in the shared token (keys of
    the containers it made, pairs it made to adopt) is destroyed afterwards."""
    before = token_objects(softhsm_token)
    yield Shell(tmp_path / "home", softhsm_token, capsys, monkeypatch)
    for kind, label, _ in token_objects(softhsm_token) - before:
        pkcs11_tool(softhsm_token, "--delete-object", "--type", kind, "--label", label)


# -- the token from outside keyblob: pkcs11-tool (OpenSC) -------------------------------------


def pkcs11_tool(
    token: SoftHSMToken, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``pkcs11-tool`` logged in to ``token`` (skips where OpenSC is missing, fails in CI)."""
    if shutil.which("pkcs11-tool") is None:
        skip_or_fail("pkcs11-tool is not installed: apt-get install opensc")
    run = subprocess.run(
        [
            *("pkcs11-tool", "--module", token.module, "--token-label", token.label),
            *("--login", "--pin", token.pin, *args),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if check and run.returncode != 0:
        raise AssertionError(f"pkcs11-tool {' '.join(args)}: {run.stderr.strip()}")
    return run


_KINDS = {
    "Private Key Object": "privkey",
    "Public Key Object": "pubkey",
    "Secret Key Object": "secrkey",
    "Data object": "data",
    "Certificate Object": "cert",
}


def listed_objects(token: SoftHSMToken, env: dict[str, str] | None = None) -> list[dict[str, str]]:
    """The objects ``pkcs11-tool --list-objects`` prints: each a dict of its indented fields
    (label, ID, Usage, Access…) and ``kind`` (privkey, pubkey, secrkey…)."""
    objects: list[dict[str, str]] = []
    for line in pkcs11_tool(token, "--list-objects", env=env).stdout.splitlines():
        head = next((k for k in _KINDS if line.startswith(k)), None)
        if head is not None:
            objects.append({"kind": _KINDS[head]})
        elif objects and line.startswith("  ") and ":" in line:
            field, _, value = line.strip().partition(":")
            objects[-1][field] = value.strip()
    return objects


def token_objects(
    token: SoftHSMToken, env: dict[str, str] | None = None
) -> set[tuple[str, str, str]]:
    """(kind, label, id) of every object in the token."""
    return {(o["kind"], o.get("label", ""), o.get("ID", "")) for o in listed_objects(token, env)}


def access(token: SoftHSMToken, kind: str, label: str) -> set[str]:
    """The words pkcs11-tool prints as an object's ``Access:`` (``sensitive``,
    ``extractable``, ``never extractable``…: it prints each CKA_ flag that is true)."""
    (found,) = [o for o in listed_objects(token) if (o["kind"], o.get("label")) == (kind, label)]
    return {word.strip() for word in found.get("Access", "").split(",")}


def files(*folders: Path) -> dict[Path, tuple[int, bytes]]:
    """Every file under ``folders``, with its mode and bytes."""
    return {
        p: (p.stat().st_mode, p.read_bytes())
        for folder in folders
        if folder.exists()
        for p in folder.rglob("*")
        if p.is_file()
    }


# -- 1. the whole procedure -------------------------------------------------------------------


def test_procedure_with_generated_keys_and_keyblob_pin(kb, tmp_path):
    status, out, _ = kb.init("--label", "Payroll HSM")
    assert status == 0
    assert out.startswith(
        f'created container "default" (suite p256, keys made in PKCS#11 token '
        f"{kb.token.label!r}) in "
    )
    assert "kx-" in out and "sg-" in out and "label          Payroll HSM" in out
    record = kb.record()
    assert record["format"] == "keyblob-pkcs11-container/v1"
    assert record["pkcs11"]["module"] == os.path.abspath(kb.token.module)
    assert record["pkcs11"]["token"] == kb.token.label
    labels = {record[role]["label"] for role in ("exchange", "signature", "state")}
    assert labels <= {o[1] for o in token_objects(kb.token)}  # the keys are in the token

    status, out, _ = kb("new", "payroll")
    assert status == 0 and out.startswith("payroll  generation 1  aes-256-gcm  key id ")
    status, out, _ = kb("show", "payroll", "--json")
    doc = json.loads(out)
    assert (doc["name"], doc["generation"]) == ("payroll", 1)
    blob = tmp_path / "payroll.kb"
    assert kb("export", "payroll", "-o", blob)[0] == 0
    status, out, _ = kb("verify", blob, "--json")
    assert status == 0 and json.loads(out)["valid"] is True
    status, out, _ = kb("--store", tmp_path / "other", "import", blob)
    assert status == 0 and out.startswith("imported payroll generation 1")
    status, out, _ = kb("rotate", "payroll")
    assert status == 0 and out.startswith("payroll  generation 2")
    status, out, _ = kb("list", "--json")
    assert [(k["name"], k["generation"]) for k in json.loads(out)["keys"]] == [("payroll", 2)]

    plain, sealed, opened = tmp_path / "plain", tmp_path / "sealed", tmp_path / "opened"
    plain.write_bytes(secrets.token_bytes(5000))
    assert kb("encrypt", "payroll", "-i", plain, "-o", sealed, "--quiet")[0] == 0
    assert kb("decrypt", sealed, "-o", opened, "--quiet")[0] == 0
    assert opened.read_bytes() == plain.read_bytes()

    status, _, err = kb("pubkey", "-o", tmp_path / "me.pub")
    assert status == 0 and "wrote the public keys of 'Payroll HSM'" in err
    status, out, _ = kb("inspect", tmp_path / "me.pub")
    assert status == 0 and "p256" in out
    assert kb("label")[1] == "Payroll HSM\n"
    assert kb("label", "set", "Payroll HSM 2")[0] == 0
    assert kb("label")[1] == "Payroll HSM 2\n"
    status, out, _ = kb("trust", "list")
    assert status == 0 and "this container (always trusted)" in out


def test_procedure_with_pin_file(kb, tmp_path, monkeypatch):
    assert kb.init()[0] == 0
    monkeypatch.delenv("KEYBLOB_PIN")
    pin_file = tmp_path / "pin"
    pin_file.write_text(kb.token.pin + "\n")
    pin_file.chmod(0o600)
    status, out, err = kb("--pin-file", pin_file, "new", "payroll")
    assert (status, err) == (0, "") and out.startswith("payroll  generation 1")
    assert kb("--pin-file", pin_file, "rotate", "payroll")[0] == 0
    status, out, _ = kb("list", "--pin-file", pin_file)  # after the command, too
    assert status == 0 and "payroll" in out
    monkeypatch.setenv("KEYBLOB_PIN", "not-the-pin")  # the file wins over the environment
    assert kb("--pin-file", pin_file, "show", "payroll")[0] == 0
    pin_file.write_text("not-the-pin\n")
    status, _, err = kb("--pin-file", pin_file, "show", "payroll")
    assert status == 5 and f"wrong PIN for PKCS#11 token {kb.token.label!r}" in err


def test_init_adopts_pairs_made_beforehand(kb, tmp_path):
    """Pairs made in the token by another tool (pkcs11-tool) become the container's keys:
    container.json records their labels and ids, and the public keys are the token's."""
    pairs = {}
    for role, usage in (("exchange", "--usage-derive"), ("signature", "--usage-sign")):
        label = f"{TAG}/{secrets.token_hex(4)}/{role}"
        key_id = secrets.token_hex(16)
        pkcs11_tool(
            kb.token,
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            usage,
            "--sensitive",
            "--label",
            label,
            "--id",
            key_id,
        )
        pairs[role] = (label, key_id)
    status, out, _ = kb.init(
        "--key-label",
        f"exchange={pairs['exchange'][0]}",
        "--key-label",
        f"signature={pairs['signature'][0]}",
    )
    assert status == 0 and "keys adopted from PKCS#11 token" in out
    record = kb.record()
    points = {o["label"]: o["EC_POINT"] for o in listed_objects(kb.token) if "EC_POINT" in o}
    for role, (label, key_id) in pairs.items():
        assert (record[role]["label"], record[role]["id"]) == (label, key_id)
        public = bytes.fromhex(points[label])
        assert public[:2] == b"\x04\x41"  # CKA_EC_POINT: a DER OCTET STRING of the point
        assert record[role]["public"] == base64.b64encode(public[2:]).decode()
    assert kb("new", "payroll")[0] == 0
    blob = tmp_path / "payroll.kb"
    assert kb("export", "payroll", "-o", blob)[0] == 0
    status, out, _ = kb("verify", blob)
    assert status == 0 and "unwraps for this container" in out
    assert kb("rotate", "payroll")[0] == 0


# -- 2. sharing keys with a software container ------------------------------------------------


def test_sharing_keys_both_ways_with_a_software_container(kb, tmp_path):
    soft = tmp_path / "soft"
    token_pub, soft_pub = tmp_path / "token.pub", tmp_path / "soft.pub"
    assert kb.init("--label", "token side")[0] == 0
    assert kb("init", "--suite", "p256", home=soft)[0] == 0
    assert kb("pubkey", "-o", token_pub)[0] == 0
    assert kb("pubkey", "-o", soft_pub, home=soft)[0] == 0
    assert kb("trust", "add", soft_pub)[0] == 0
    assert kb("trust", "add", token_pub, home=soft)[0] == 0
    status, out, _ = kb("trust", "list", home=soft)
    assert status == 0 and "token side" in out
    plain = tmp_path / "plain"
    plain.write_bytes(b"shared between a token and a software container\n")

    def share(sender: Path, receiver: Path, receiver_pub: Path, name: str) -> None:
        """``sender`` makes key ``name`` for ``receiver`` too (new, then rotate), hands
        the blob and data over; ``receiver`` imports both generations and decrypts."""
        for command in ("new", "rotate"):
            assert kb(command, name, "--to", receiver_pub, home=sender)[0] == 0
            blob = tmp_path / f"{name}-{command}.kb"
            assert kb("export", name, "-o", blob, home=sender)[0] == 0
            sealed = tmp_path / f"{name}-{command}.sealed"
            assert kb("encrypt", name, "-i", plain, "-o", sealed, "--quiet", home=sender)[0] == 0
            status, out, _ = kb("import", blob, home=receiver)
            assert status == 0 and out.startswith(f"imported {name} generation ")
            opened = tmp_path / f"{name}-{command}.opened"
            assert kb("decrypt", sealed, "-o", opened, "--quiet", home=receiver)[0] == 0
            assert opened.read_bytes() == plain.read_bytes()

    share(kb.home, soft, soft_pub, "to-software")
    share(soft, kb.home, token_pub, "to-token")
    status, out, _ = kb("list", "--json")
    gens = {k["name"]: k["generation"] for k in json.loads(out)["keys"]}
    assert gens == {"to-software": 2, "to-token": 2}


def test_a_token_container_refuses_a_software_x25519_peer(kb, tmp_path):
    """Keys are shared within a suite: the token runs p256, an x25519 peer is refused in one
    line (and a software p256 container is the way, as above)."""
    assert kb.init()[0] == 0
    assert kb("init", home=tmp_path / "x")[0] == 0
    assert kb("pubkey", "-o", tmp_path / "x.pub", home=tmp_path / "x")[0] == 0
    status, _, err = kb("new", "k", "--to", tmp_path / "x.pub")
    assert status == 2 and "uses suite x25519; this container uses p256" in err
    assert not (kb.home / "blobs" / "k").exists()


# -- 3. errors: one line, the documented status, nothing changed ------------------------------


@pytest.fixture
def made(kb) -> Shell:
    """A token container with one key, payroll."""
    assert kb.init()[0] == 0
    assert kb("new", "payroll")[0] == 0
    return kb


def refused(kb: Shell, status: int, message: str, *argv: str | os.PathLike[str]) -> None:
    """``keyblob argv`` ends with ``status`` and the one error line ``keyblob: error:
    message``, and changes nothing: not the home (which holds the store) and not the
    token's objects."""
    home, objects = files(kb.home), token_objects(kb.token)
    got, out, err = kb(*argv)
    assert (got, out) == (status, "")
    assert err.splitlines()[0] == f"keyblob: error: {message}"
    assert files(kb.home) == home
    assert token_objects(kb.token) == objects


def test_wrong_pin_exit_5_nothing_changed(made, monkeypatch):
    monkeypatch.setenv("KEYBLOB_PIN", "0000-not-the-pin")
    for argv in (("rotate", "payroll"), ("new", "other"), ("list",)):
        refused(made, 5, f"wrong PIN for PKCS#11 token {made.token.label!r}", *argv)


def test_empty_pin_exit_2_nothing_changed(made, monkeypatch, tmp_path):
    monkeypatch.setenv("KEYBLOB_PIN", "")
    refused(made, 2, "the PIN is empty (an empty KEYBLOB_PIN or --pin-file)", "rotate", "payroll")
    monkeypatch.delenv("KEYBLOB_PIN")
    empty = tmp_path / "empty-pin"
    empty.write_text("\n")
    empty.chmod(0o600)
    message = "the PIN is empty (an empty KEYBLOB_PIN or --pin-file)"
    refused(made, 2, message, "--pin-file", empty, "rotate", "payroll")


def test_no_pin_and_no_terminal_exit_2_nothing_changed(made, monkeypatch):
    monkeypatch.delenv("KEYBLOB_PIN")
    assert not sys.stdin.isatty()
    message = (
        f"no PIN for PKCS#11 token {made.token.label!r}: set KEYBLOB_PIN, use --pin-file, or "
        "run in a terminal"
    )
    refused(made, 2, message, "rotate", "payroll")


def test_init_on_a_missing_token_or_module_exit_4_nothing_made(kb, tmp_path):
    before = token_objects(kb.token)
    status, out, err = kb(
        "init", "--provider", "pkcs11", "--module", kb.token.module, "--token", "no-such-token"
    )
    assert (status, out) == (4, "")
    assert err == "keyblob: error: no PKCS#11 token labelled 'no-such-token'\n"
    missing = tmp_path / "no" / "libpkcs11.so"
    status, out, err = kb(
        "init", "--provider", "pkcs11", "--module", missing, "--token", kb.token.label
    )
    assert (status, out) == (4, "")
    assert err == f"keyblob: error: no PKCS#11 module at {missing}\n"
    assert files(kb.home) == {}
    assert token_objects(kb.token) == before


def edit_record(kb: Shell, change) -> None:
    path = kb.home / CONTAINER_JSON
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def test_container_naming_a_missing_token_or_module_exit_4(made, tmp_path):
    edit_record(made, lambda d: d["pkcs11"].update(token="gone-token"))
    refused(made, 4, "no PKCS#11 token labelled 'gone-token'", "rotate", "payroll")
    missing = str(tmp_path / "gone" / "libpkcs11.so")
    edit_record(made, lambda d: d["pkcs11"].update(token=made.token.label, module=missing))
    refused(made, 4, f"no PKCS#11 module at {missing}", "rotate", "payroll")


@pytest.mark.parametrize(
    ("role", "kind", "what"),
    [
        ("exchange", "privkey", "private key"),
        ("signature", "privkey", "private key"),
        ("signature", "pubkey", "public key"),
        ("state", "secrkey", "state key"),
    ],
)
def test_a_key_deleted_from_the_token_exit_4(made, role, kind, what):
    label = made.record()[role]["label"]
    pkcs11_tool(made.token, "--delete-object", "--type", kind, "--label", label)
    message = f"PKCS#11 token {made.token.label!r} holds no {what} labelled {label!r}"
    refused(made, 4, message, "rotate", "payroll")
    refused(made, 4, message, "show", "payroll")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: d["pkcs11"].update(module="libsofthsm2.so"), id="relative-module"),
        pytest.param(lambda d: d["pkcs11"].update(module="./lib/softhsm.so"), id="dot-module"),
        pytest.param(lambda d: d.pop("state"), id="no-state"),
        pytest.param(lambda d: d["pkcs11"].pop("serial"), id="no-serial"),
        pytest.param(lambda d: d["pkcs11"].pop("module"), id="no-module"),
        pytest.param(lambda d: d["exchange"].pop("id"), id="no-exchange-id"),
        pytest.param(lambda d: d["signature"].pop("public"), id="no-signature-public"),
    ],
)
def test_a_damaged_container_json_exit_3(made, damage):
    edit_record(made, damage)
    message = "container 'default': not a valid keyblob-pkcs11-container/v1 file"
    refused(made, 3, message, "rotate", "payroll")
    refused(made, 3, message, "pubkey", "-o", made.home.parent / "x.pub")


def test_init_records_an_absolute_module_path(kb, monkeypatch):
    """A module given by a relative path is recorded as the absolute path it named."""
    module = Path(kb.token.module)
    monkeypatch.chdir(module.parent)
    assert kb.init("--module", module.name)[0] == 0  # the later --module wins
    assert kb.record()["pkcs11"]["module"] == str(module)  # absolute, as given (not resolved)


# -- throwaway tokens of the test's own, keyblob as a subprocess ------------------------------


class OwnToken:
    """A SoftHSM2 token store of the test's own in ``folder``, one token labelled ``label``,
    and keyblob run as a subprocess against it and ``home``."""

    def __init__(self, folder: Path, module: str):
        self.folder = folder
        self.label = "own-token"
        self.pin = secrets.token_hex(6)
        self.so_pin = secrets.token_hex(6)
        self.module = module
        (folder / "tokens").mkdir(parents=True)
        (folder / "softhsm2.conf").write_text(
            f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\n"
            "log.level = ERROR\n"
        )
        self.env = {
            **os.environ,
            "SOFTHSM2_CONF": str(folder / "softhsm2.conf"),
            "KEYBLOB_HOME": str(folder / "home"),
            "KEYBLOB_PIN": self.pin,
        }
        self.env.pop("KEYBLOB_PASSPHRASE", None)
        self.init_token("--free")
        self.as_token = SoftHSMToken(module, self.label, self.pin, self.so_pin)

    @property
    def home(self) -> Path:
        return self.folder / "home"

    def init_token(self, *where: str) -> None:
        """softhsm2-util --init-token (``--free``: a new token; ``--token LABEL``: again)."""
        subprocess.run(
            [
                *("softhsm2-util", "--init-token", *where, "--label", self.label),
                *("--pin", self.pin, "--so-pin", self.so_pin),
            ],
            env=self.env,
            check=True,
            capture_output=True,
        )

    def kb(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "keyblob", *argv],
            capture_output=True,
            text=True,
            env=env or self.env,
            check=False,
        )

    def objects(self) -> set[tuple[str, str, str]]:
        return token_objects(self.as_token, self.env)


@pytest.fixture
def own_token(tmp_path, softhsm_token) -> OwnToken:
    if shutil.which("softhsm2-util") is None:
        skip_or_fail("softhsm2-util is not installed: apt-get install softhsm2")
    own = OwnToken(tmp_path / "own-token", softhsm_token.module)
    init = own.kb("init", "--provider", "pkcs11", "--module", own.module, "--token", own.label)
    assert init.returncode == 0, init.stderr
    assert own.kb("new", "payroll").returncode == 0
    return own


@pytest.mark.parametrize("how", ["in-place", "deleted-and-made-again"])
def test_token_reinitialised_between_commands_exit_4(own_token, how):
    own = own_token
    record = json.loads((own.home / CONTAINER_JSON).read_text())
    if how == "in-place":  # the same token, its serial kept, its objects gone
        own.init_token("--token", own.label)
        message = (
            f"PKCS#11 token {own.label!r} holds no public key labelled "
            f"{record['exchange']['label']!r}"
        )
    else:  # a new token under the same label: another serial
        subprocess.run(
            ["softhsm2-util", "--delete-token", "--token", own.label],
            env=own.env,
            check=True,
            capture_output=True,
        )
        own.init_token("--free")
        message = (
            f"PKCS#11 token {own.label!r} is not the one container 'default' was made on (serial "
        )
    home, objects = files(own.home), own.objects()
    for argv in (("rotate", "payroll"), ("new", "other"), ("list",)):
        run = own.kb(*argv)
        assert (run.returncode, run.stdout) == (4, "")
        assert run.stderr.splitlines()[0].startswith(f"keyblob: error: {message}")
        assert "re-initialised" in run.stderr
        assert files(own.home) == home
        assert own.objects() == objects


def loaded_libraries(own: OwnToken, *argv: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run keyblob with the dynamic loader reporting every file it loads (LD_DEBUG=files,
    to files of its own, so keyblob's standard error stays as it is)."""
    trace = own.folder / "ld-trace"
    for old in own.folder.glob("ld-trace.*"):
        old.unlink()
    run = own.kb(*argv, env={**own.env, "LD_DEBUG": "files", "LD_DEBUG_OUTPUT": str(trace)})
    return run, "".join(p.read_text(errors="replace") for p in own.folder.glob("ld-trace.*"))


def test_an_unsafe_container_json_is_refused_before_the_module_loads(own_token):
    own = own_token
    path = own.home / CONTAINER_JSON
    if sys.platform != "linux":
        pytest.skip("LD_DEBUG is glibc's")
    run, loaded = loaded_libraries(own, "show", "payroll")
    assert run.returncode == 0 and own.module in loaded  # the trace sees the module load
    path.chmod(0o644)
    home = files(own.home)
    run, loaded = loaded_libraries(own, "show", "payroll")
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr.splitlines()[0] == (
        f"keyblob: error: container file {path} can be read or written by others (mode 644): "
        f"run chmod 600 {path}"
    )
    assert loaded and own.module not in loaded
    assert files(own.home) == home


# -- 4. the private keys stay in the token ----------------------------------------------------

#: Run outside keyblob, with python-pkcs11 alone: for each (class, label), try to read the
#: key's value and to wrap it (C_WrapKey, CKM_AES_KEY_WRAP_PAD, under a session AES key),
#: and print what the token answered.
EXPORT_PROBE = """
import sys, pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import PKCS11Error
module, token, pin, *wanted = sys.argv[1:]
classes = {"privkey": ObjectClass.PRIVATE_KEY, "secrkey": ObjectClass.SECRET_KEY}
with pkcs11.lib(module).get_token(token_label=token).open(user_pin=pin, rw=True) as s:
    wrapper = s.generate_key(KeyType.AES, 256, store=False, capabilities=MechanismFlag.WRAP)
    for kind, label in zip(wanted[::2], wanted[1::2]):
        (key,) = s.get_objects({Attribute.CLASS: classes[kind], Attribute.LABEL: label})
        answers = []
        try:
            answers.append("value %d bytes" % len(key[Attribute.VALUE]))
        except PKCS11Error as e:
            answers.append("value " + type(e).__name__)
        try:
            wrapped = wrapper.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
            answers.append("wrapped %d bytes" % len(wrapped))
        except PKCS11Error as e:
            answers.append("wrap " + type(e).__name__)
        print(label + ": " + ", ".join(answers))
"""


def export_attempts(token: SoftHSMToken, *keys: tuple[str, str]) -> dict[str, str]:
    run = subprocess.run(
        [sys.executable, "-c", EXPORT_PROBE, token.module, token.label, token.pin]
        + [part for key in keys for part in key],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(line.split(": ", 1) for line in run.stdout.splitlines())


def test_the_private_keys_cannot_leave_the_token(kb, tmp_path):
    assert kb.init()[0] == 0
    record = kb.record()
    keys = [
        ("privkey", record["exchange"]["label"]),
        ("privkey", record["signature"]["label"]),
        ("secrkey", record["state"]["label"]),
    ]
    # Controls, made by pkcs11-tool in the same token: what an extractable key looks like.
    loose_secret, loose_pair = (
        f"{TAG}/{secrets.token_hex(4)}/loose",
        f"{TAG}/{secrets.token_hex(4)}/loose-ec",
    )
    pkcs11_tool(
        kb.token, "--keygen", "--key-type", "GENERIC:32", "--extractable", "--label", loose_secret
    )
    pkcs11_tool(
        kb.token,
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--usage-derive",
        "--extractable",
        "--label",
        loose_pair,
        "--id",
        secrets.token_hex(16),
    )
    assert "extractable" in access(kb.token, "secrkey", loose_secret)
    assert "extractable" in access(kb.token, "privkey", loose_pair)

    # 1. The attributes, as pkcs11-tool reads them from the token.
    for kind, label in keys:
        words = access(kb.token, kind, label)
        assert "sensitive" in words, (label, words)  # CKA_SENSITIVE true
        assert "extractable" not in words, (label, words)  # CKA_EXTRACTABLE false
        assert "never extractable" in words and "always sensitive" in words, (label, words)

    # 2. pkcs11-tool cannot read the state key's value (it does read an extractable one).
    for label, readable in ((loose_secret, True), (record["state"]["label"], False)):
        out = tmp_path / "read-object"
        run = pkcs11_tool(
            kb.token,
            "--read-object",
            "--type",
            "secrkey",
            "--label",
            label,
            "-o",
            str(out),
            check=False,
        )
        assert (run.returncode == 0) is readable, run.stderr
        if readable:
            assert len(out.read_bytes()) == 32
            out.unlink()
        else:
            assert "CKR_ATTRIBUTE_SENSITIVE" in run.stderr and not out.exists()

    # 3. Neither reading a value nor wrapping a key under another gets any of them out
    # (pkcs11-tool 0.23 reads no private key and wraps only secret keys: python-pkcs11 asks).
    answers = export_attempts(kb.token, *keys, ("secrkey", loose_secret), ("privkey", loose_pair))
    assert answers[loose_secret] == "value 32 bytes, wrapped 40 bytes"
    assert answers[loose_pair].endswith("wrapped 80 bytes")  # extractable: it leaves
    for _, label in keys:
        assert answers[label] == "value AttributeSensitive, wrap KeyUnextractable", label


def test_each_command_logs_out_of_the_token(made, softhsm_token):
    """A command's login ends with it (PKCS#11 logs in a process, not a session): in a
    process that runs keyblob again (a service, these tests), nothing stays logged in."""
    for argv in (("show", "payroll"), ("rotate", "payroll"), ("list",)):
        assert made(*argv)[0] == 0
        # A login of the test's own: CKR_USER_ALREADY_LOGGED_IN if keyblob's were still on.
        softhsm_token.token().open(user_pin=softhsm_token.pin).close()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("init", "--module", "/m.so"), "--module applies to --provider pkcs11 only"),
        (("init", "--key-label", "exchange=x"), "--key-label applies to --provider pkcs11 only"),
        (("init", "--provider", "pkcs11", "--token", "t"), "--provider pkcs11 needs --module PATH"),
        (("--bits", "3072"), "--bits applies to the rsa suite only"),
        (("--suite", "x25519"), "use --suite p256"),
        (("--key-label", "exchange=only-one"), "adopting keys needs both pairs"),
    ],
)
def test_init_usage_errors_exit_2_before_the_pin(kb, monkeypatch, argv, message):
    monkeypatch.delenv("KEYBLOB_PIN")  # refused before a PIN is needed
    before = token_objects(kb.token)
    if argv[0] != "init":
        status, out, err = kb.init(*argv)
    else:
        status, out, err = kb(*argv)
    assert (status, out) == (2, "") and message in err.splitlines()[0]
    assert files(kb.home) == {}
    assert token_objects(kb.token) == before


def test_keys_rotate_rewrap_forget_old_in_the_token(kb, tmp_path):
    """Issue 16: the new pairs are generated in the token; rewrap unwraps with the old
    exchange key there; forget-old destroys the old objects; old data keeps opening."""
    assert kb.init()[0] == 0
    assert kb("new", "payroll")[0] == 0
    plain, sealed, opened = tmp_path / "plain", tmp_path / "sealed", tmp_path / "opened"
    plain.write_bytes(b"payroll data")
    assert kb("encrypt", "payroll", "-i", plain, "-o", sealed, "--quiet")[0] == 0
    before = kb.record()
    status, _, err = kb("keys", "rotate")
    assert status == 0, err
    record = kb.record()
    old = {e["label"] for e in record["previous"]}
    assert old == {before["exchange"]["label"], before["signature"]["label"]}
    new_labels = {record["exchange"]["label"], record["signature"]["label"]}
    objects = {o[1] for o in token_objects(kb.token)}
    assert old <= objects and new_labels <= objects and not old & new_labels
    assert kb("decrypt", sealed, "-o", opened, "--quiet")[0] == 0  # the old key, in the token
    assert kb("keys", "forget-old")[0] == 1  # payroll still needs them
    status, out, err = kb("rewrap", "--all", "--json")
    assert status == 0 and json.loads(out)["rewrapped"] == 1, err
    assert kb("keys", "forget-old")[0] == 0
    assert "previous" not in kb.record()
    assert not old & {o[1] for o in token_objects(kb.token)}  # destroyed in the token
    opened.unlink()
    assert kb("decrypt", sealed, "-o", opened, "--quiet")[0] == 0
    assert opened.read_bytes() == plain.read_bytes()
