"""Start-up: ``import keyblob`` loads nothing, and building the CLI's parser (what
``keyblob --help`` does) or parsing a command's arguments executes none of the library's
modules (not even its value types and formats), nor ``cryptography``, nor the standard
modules only a command uses (issue 15: a command imports only what it uses).  Checked in a
fresh interpreter, by what it loaded, never by time."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

import keyblob

# Modules that --help must not execute: the crypto, the stores, the pool, the agent client.
HEAVY = (
    "cryptography.hazmat.bindings._rust",
    "keyblob.blobs",
    "keyblob.files",
    "keyblob.stream",
    "keyblob.pool",
    "keyblob.publickeys",
    "keyblob.mscapi",
    "keyblob.providers.software",
    "keyblob.providers.suites",
    "keyblob.providers.homestate",
    "keyblob.storage.sqlite",
    "keyblob.agent.client",
    "keyblob.agent.protocol",
    "socket",
    "sqlite3",
    "multiprocessing",
    "concurrent.futures",
    "subprocess",
    "traceback",
)

# The probe imports nothing before the code it runs (sys is always loaded).
LOADED = """
import sys
{code}
print(repr(sorted(
    name for name, module in sys.modules.items()
    if module is not None
)))
"""


def _executed(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", LOADED.format(code=code)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return set(ast.literal_eval(out))


def test_import_keyblob_loads_no_submodule():
    loaded = _executed("import keyblob")
    assert not {m for m in loaded if m.startswith("keyblob.")}


# The parser's boundary: of keyblob, only the CLI's own modules and the error classes (its
# exit statuses); no library package at all, and nothing from cryptography.
PARSER_MAY_LOAD = ("keyblob", "keyblob.errors")
NOT_FOR_THE_PARSER = ("keyblob.", "cryptography")

# Standard modules the library and the commands use, which the parser need not load (each
# compared with what a bare ``import argparse`` loads in the same interpreter, as site and
# argparse itself may bring some of them along on another installation).
STDLIB_FOR_COMMANDS = (
    "dataclasses",
    "inspect",
    "hashlib",
    "hmac",
    "secrets",
    "random",
    "json",
    "pathlib",
    "urllib.parse",
    "ipaddress",
    "datetime",
    "getpass",
    "threading",
)

BUILD = "from keyblob.cli import build_parser\nbuild_parser().format_help()"


def _beyond_the_parser(loaded: set[str]) -> set[str]:
    return {
        m
        for m in loaded
        if m.startswith(NOT_FOR_THE_PARSER)
        and m not in PARSER_MAY_LOAD
        and not m.startswith("keyblob.cli")
    }


def test_building_the_parser_executes_no_heavy_module():
    loaded = _executed(BUILD)
    assert "keyblob.cli.main" in loaded  # the probe sees what it should
    assert not loaded & set(HEAVY)


def test_building_the_parser_executes_no_library_module():
    loaded = _executed(BUILD)
    assert {"keyblob.cli.keys", "keyblob.cli.trust", "keyblob.errors"} <= loaded
    assert _beyond_the_parser(loaded) == set()


def test_building_the_parser_loads_no_standard_module_only_commands_use():
    baseline = _executed("import argparse\nargparse.ArgumentParser().format_help()")
    loaded = _executed(BUILD)
    assert (loaded - baseline) & set(STDLIB_FOR_COMMANDS) == set()


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["init", "--suite", "rsa", "--bits", "3072"],
        ["new", "k", "--algorithm", "chacha20-poly1305"],
        ["pubkey", "--format", "pem"],
        ["trust", "list"],
        ["capi", "export-simpleblob", "k", "--to", "p.blob", "-o", "o", "--signature-out", "s"],
        ["agent", "status"],
    ],
)
def test_parsing_a_commands_arguments_executes_no_library_module(argv):
    loaded = _executed(f"from keyblob.cli import build_parser\nbuild_parser().parse_args({argv!r})")
    assert _beyond_the_parser(loaded) == set()


def test_the_parsers_literal_choices_are_the_librarys():
    from keyblob.cli import keys as key_commands
    from keyblob.keys import Algorithm, Suite

    assert tuple(a.label for a in Algorithm) == key_commands.ALGORITHMS
    assert set(key_commands._KEY_TYPES) <= {s.label for s in Suite}


def test_a_probe_sees_a_library_module_loaded():
    # The boundary tests would pass on an empty probe: a command that runs does load one.
    loaded = _executed(BUILD + "\nfrom keyblob.cli import names\nnames.checked_name('k')")
    assert "keyblob.keys" in _beyond_the_parser(loaded)


def test_a_lazy_module_is_loaded_by_its_first_use():
    loaded = _executed(
        "import keyblob.cli\nfrom keyblob.cli import keys\nkeys.suites.verify\n"
        "import keyblob.providers.suites as s\nassert keys.suites.verify is s.verify"
    )
    assert {"keyblob.providers.suites", "cryptography.hazmat.bindings._rust"} <= loaded


@pytest.mark.parametrize("name", keyblob.__all__)
def test_every_public_name_resolves(name):
    value = getattr(keyblob, name)
    assert getattr(value, "__name__", name) == name


def test_the_public_names_are_the_documented_ones():
    namespace: dict[str, object] = {}
    exec("from keyblob import *", namespace)  # the star import is the test
    assert set(namespace) - {"__builtins__"} == set(keyblob.__all__)
    assert set(keyblob.__all__) <= set(dir(keyblob))


def test_an_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        keyblob.nonesuch  # noqa: B018
