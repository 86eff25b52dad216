"""Start-up: ``import keyblob`` loads nothing, and building the CLI's parser (what
``keyblob --help`` does) executes neither the library's crypto and storage modules nor
``cryptography`` (issue 15: a command imports only what it uses).  Checked in a fresh
interpreter, by what it loaded, never by time."""

from __future__ import annotations

import json
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

LOADED = """
import json, sys
{code}
print(json.dumps(sorted(
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
    return set(json.loads(out))


def test_import_keyblob_loads_no_submodule():
    loaded = _executed("import keyblob")
    assert not {m for m in loaded if m.startswith("keyblob.")}


def test_building_the_parser_executes_no_heavy_module():
    loaded = _executed("from keyblob.cli import build_parser\nbuild_parser().format_help()")
    assert "keyblob.cli.main" in loaded  # the probe sees what it should
    assert not loaded & set(HEAVY)


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
