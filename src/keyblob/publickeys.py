"""Recipe: a container's public key file (FORMAT.md 3) and the label it carries.

Making one (:func:`make`) signs the container's label with its signature key through the
provider, so a token or an agent can stand behind it; reading one (:func:`read`) is the one
place the reading order of FORMAT.md 3 lives: dearmor, parse, check both keys, then verify
the label signature of a version 2 file.  The container's own label lives in its
authenticated state (FORMAT.md 5.2): :func:`label_of`, :func:`set_label`.  The copy kept in
the home for ``keyblob pubkey`` (FORMAT.md 5) is checked by :func:`read_own`.
"""

from __future__ import annotations

from dataclasses import replace

from keyblob.errors import VerificationError
from keyblob.format.armor import PUBLIC_KEY, dearmor, is_armored
from keyblob.format.pubkey import PublicKeyFile, label_message
from keyblob.keys import Suite, label_from_text
from keyblob.providers import suites
from keyblob.providers.base import Provider

LABEL_NOT_SIGNED = (
    "public key file {label!r}: its label is not signed by its signature key; "
    "the file was changed after its owner made it"
)

NOT_OWN = "the public key file kept in the home does not hold this container's signed keys"


def label_of(provider: Provider) -> str:
    """The container's label: the one set with :func:`set_label` (or at creation), else
    its name (FORMAT.md 5.2).

    Raises:
        VerificationError: the state was edited outside keyblob.
    """
    label = provider.state().label
    return provider.name if label is None else label


def set_label(provider: Provider, text: str) -> str:
    """Give the container the label ``text`` (NFC-normalized, FORMAT.md 1.5), kept in its
    authenticated state; public key files made from now on carry it.  Returns the label.

    Raises:
        UsageError: ``text`` is not a valid label.
        VerificationError: the state was edited outside keyblob.
        ProviderError: the state could not be written.
    """
    label = label_from_text(text)
    provider.update_state(lambda state: replace(state, label=label))
    return label


def make(provider: Provider) -> PublicKeyFile:
    """The container's public key file, version 2: its two public keys and its label,
    signed by its signature key (FORMAT.md 3.2).  ``to_bytes()`` gives the binary file;
    armor it with ``keyblob.format.armor(…, PUBLIC_KEY)``.

    Raises:
        VerificationError: the state was edited outside keyblob.
        ProviderError: the provider could not sign.
    """
    label = label_of(provider)
    exchange, signature = provider.exchange_public, provider.signature_public
    signed = provider.sign(label_message(provider.suite, label, exchange, signature))
    return PublicKeyFile(provider.suite, label, exchange, signature, signed)


def read(data: bytes) -> PublicKeyFile:
    """A public key file someone handed over, binary or armored, checked (FORMAT.md 3):
    parsed, both keys usable keys of the suite, and for version 2 the label signed by the
    file's own signature key.  A version 1 file's label is its container name, which
    nothing vouches for (``label_signed`` is False).

    Raises:
        FormatError: not a well-formed public key file, or a key that is not a key of its
            suite.
        UnsupportedError: a later version, or a suite not implemented.
        VerificationError: the label signature does not verify (the label, a key or the
            suite was changed after the file was made, or another key signed it).
    """
    if is_armored(data):
        data = dearmor(data, PUBLIC_KEY)
    pub = PublicKeyFile.from_bytes(data)  # reading steps 1-3
    suites.check_public_keys(pub.suite, pub.exchange, pub.signature)  # step 4
    if pub.label_signature is not None:  # step 5
        try:
            suites.verify(
                suites.load_signature_public(pub.suite, pub.signature),
                pub.label_signature,
                pub.label_message(),
            )
        except VerificationError:
            raise VerificationError(
                LABEL_NOT_SIGNED.format(label=pub.label),
                hints=(
                    "ask its owner for the file again, and compare its fingerprint with "
                    "them before you trust it",
                ),
            ) from None
    return pub


def read_own(data: bytes, suite: Suite, exchange: bytes, signature: bytes) -> PublicKeyFile:
    """A container's own public key file, as kept in its home (FORMAT.md 5): every check of
    :func:`read`, a version 2 file (its label signed), and the suite and both keys equal to
    the container's.

    Raises:
        FormatError: not a well-formed public key file.
        UnsupportedError: a later version, or a suite not implemented.
        VerificationError: the label signature does not verify, the label is not signed, or
            the file holds other keys than the container's.
    """
    pub = read(data)
    if not pub.label_signed or (pub.suite, pub.exchange, pub.signature) != (
        suite,
        exchange,
        signature,
    ):
        raise VerificationError(NOT_OWN)
    return pub
