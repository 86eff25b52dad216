"""The command line talks to a Provider: what only the software container can do (CryptoAPI
operations on its own RSA keys) is refused by name for any other provider."""

import pytest

from keyblob.cli.capi import windows_keys
from keyblob.errors import ProviderError
from keyblob.keys import Suite
from keyblob.providers.software import Home
from support import FAST_KDF


class TokenLike:
    """A provider that is not the software container (as a token or agent would be)."""

    name = "token"


def test_capi_key_operations_refuse_another_provider_by_name():
    with pytest.raises(ProviderError, match=r"container 'token' cannot unwrap a SIMPLEBLOB"):
        windows_keys(TokenLike(), "unwrap a SIMPLEBLOB")  # type: ignore[arg-type]


def test_capi_key_operations_take_the_software_container(tmp_path):
    home = Home(tmp_path / "home")
    container = home.create("default", b"pw", Suite.X25519, kdf=FAST_KDF)
    assert windows_keys(container, "sign a SIMPLEBLOB") is container
