"""Sign compliance bundles, and check whose key signed one.

``SHA256SUMS`` in a bundle finds a member damaged since it was made, but not one changed on
purpose: whoever alters the transcript can write the sums again, and a bundle made again,
whole, from an altered transcript is consistent in itself. A signature is what a reviewer can
hold a bundle to: ``SHA256SUMS.sig`` is the Ed25519 signature of the exact bytes of
``SHA256SUMS``, which name every other member's SHA-256, so it vouches for all of them.

Ed25519 because its signatures are deterministic (the same transcript and key still make
the same bundle, byte for byte) and because every OpenSSL since 3.0 checks one with no
trackscribe: ``openssl pkeyutl -verify -pubin -inkey KEY.pub.pem -rawin -in SHA256SUMS
-sigfile SHA256SUMS.sig``. Keys are read as PEM (``openssl genpkey -algorithm ed25519``) or
OpenSSH (``ssh-keygen -t ed25519``) files; a key is named by its fingerprint, the SHA-256 of
its public key as DER (``openssl pkey -pubin -in KEY.pub.pem -outform DER | sha256sum``).
"""

import hashlib
import logging
import os
import re
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
    load_ssh_private_key,
    load_ssh_public_key,
)

from models import read_regular_file
from stages.export import SigningKeyError, keep_signed  # the exports' own checks too

__all__ = ["SIGNATURE_BYTES", "PublicKey", "SigningKey", "SigningKeyError", "keep_signed"]

log = logging.getLogger(f"trackscribe.{__name__}")

SIGNATURE_BYTES = 64
"""The length of every Ed25519 signature: anything else is none, whoever's key is asked."""
_MAX_KEY_BYTES = 64 * 1024  # a key file is a few hundred bytes; this is no key file
_NOT_ED25519 = "not an Ed25519 key, the only kind trackscribe signs with"


class SigningKey:
    """An Ed25519 private key, read from ``path``, that signs bundles.

    Read once, here, and kept: a run signs with the key it began with, whatever becomes of
    the file meanwhile (a transcript of an hour's meeting is not lost to a key file moved).
    Pickled as its path and fingerprint, never its bytes: a batch's worker processes (or a
    Dask cluster's, which must see the same path, as they see the output folder) read it
    themselves, when a meeting first needs it (:meth:`check`), so that a key file gone or
    holding another key by then fails those meetings, naming it, and not the workers.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).absolute()  # the same file wherever a worker's folder is
        self._key: Ed25519PrivateKey | None = _read_private_key(self.path)
        self.fingerprint = _fingerprint(self._key.public_key())
        if stat.S_IMODE(self.path.stat().st_mode) & 0o077:
            log.warning(
                "%s: the signing key can be read by other accounts here (chmod 600 it)", self.path
            )

    def check(self) -> None:
        """Read the key, if this copy has not yet: :class:`SigningKeyError` if it cannot be
        used, or is no longer the key this one was made from."""
        self._loaded()

    def sign(self, data: bytes) -> bytes:
        """The Ed25519 signature of ``data`` (64 bytes)."""
        return self._loaded().sign(data)

    def _loaded(self) -> Ed25519PrivateKey:
        if self._key is None:
            key = _read_private_key(self.path)
            found = _fingerprint(key.public_key())
            if found != self.fingerprint:
                raise SigningKeyError(
                    f"{self.path}: holds another key ({found}) than when the run began "
                    f"({self.fingerprint})"
                )
            self._key = key
        return self._key

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return _unread, (str(self.path), self.fingerprint)

    def __repr__(self) -> str:
        return f"SigningKey({str(self.path)!r}, fingerprint={self.fingerprint!r})"


class PublicKey:
    """An Ed25519 public key, read from ``path``: whose signature a reviewer accepts."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._key = _public_key(_read_key_file(self.path), self.path)
        self.fingerprint = _fingerprint(self._key)

    def signed(self, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``data``."""
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"PublicKey({str(self.path)!r}, fingerprint={self.fingerprint!r})"


def _fingerprint(key: Ed25519PublicKey) -> str:
    """``sha256:`` and the hex SHA-256 of the key as DER, as ``openssl ... | sha256sum``
    computes it."""
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return f"sha256:{hashlib.sha256(der).hexdigest()}"


def _unread(path: str, fingerprint: str) -> SigningKey:
    """A key that a worker process has been sent, read only when it is first used."""
    key = object.__new__(SigningKey)
    key.path, key.fingerprint, key._key = Path(path), fingerprint, None
    return key


def _read_private_key(path: Path) -> Ed25519PrivateKey:
    return _private_key(_read_key_file(path), path)


def _read_key_file(path: Path) -> bytes:
    try:
        return read_regular_file(path, _MAX_KEY_BYTES)
    except FileNotFoundError:
        if path.is_symlink():
            target = os.readlink(path)
            raise SigningKeyError(f"{path}: a link to {target}, which is not there") from None
        raise SigningKeyError(f"{path}: no such key file") from None
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read the key file: {exc.strerror}") from None


def _private_key(data: bytes, path: Path) -> Ed25519PrivateKey:
    loader = load_ssh_private_key if b"OPENSSH PRIVATE KEY" in data else load_pem_private_key
    try:
        key = loader(data, password=None)
    except TypeError:  # what cryptography raises for a key that needs a passphrase
        raise SigningKeyError(
            f"{path}: the key is encrypted; trackscribe signs unattended, so give it an "
            "unencrypted key that only this account can read"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        if b"PRIVATE KEY" not in data and (
            b"PUBLIC KEY" in data or data.lstrip().startswith(b"ssh-")
        ):
            raise SigningKeyError(
                f"{path}: a public key; signing needs the private key it was made from"
            ) from None
        raise SigningKeyError(
            f"{path}: not a private key in PEM or OpenSSH form (make one with: openssl genpkey "
            "-algorithm ed25519 -out KEY.pem)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: {_NOT_ED25519}")
    return key


def _public_key(data: bytes, path: Path) -> Ed25519PublicKey:
    if b"PRIVATE KEY" in data:
        raise SigningKeyError(
            f"{path}: a private key; give its public key (openssl pkey -in KEY.pem -pubout), "
            "which is all checking needs and all a reviewer should hold"
        )
    if _keys_in(data) > 1:
        raise SigningKeyError(
            f"{path}: holds more than one key; give the one key a bundle must be signed with"
        )
    try:
        if b"-----BEGIN" in data:
            key = load_pem_public_key(data)
        else:
            key = load_ssh_public_key(data.strip())
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{path}: not a public key in PEM or OpenSSH form") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: {_NOT_ED25519}")
    return key


def _keys_in(data: bytes) -> int:
    """How many keys a public key file holds: its PEM blocks, and its lines of OpenSSH's form
    (an ``authorized_keys`` file's, whatever their options). Text around a PEM block is
    allowed; a key in OpenSSH's form beside it is another key."""
    blocks = data.count(b"-----BEGIN")
    outside = re.sub(rb"-----BEGIN.*?-----END[^\n]*", b"", data, flags=re.DOTALL)
    lines = [line.strip() for line in outside.splitlines()]
    lines = [line for line in lines if line and not line.startswith(b"#")]
    if blocks:
        lines = [line for line in lines if b" AAAA" in line or line.startswith(b"AAAA")]
    return blocks + len(lines)
