"""Webhooks: signing status updates, and delivering them in order with retries."""

import base64
import logging
import queue
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_log = logging.getLogger(f"trackscribe.{__name__}")

_TRIES = 5
_BACKOFF = 0.2
_TIMEOUT = 5.0


class Signer:
    """Signs webhook bodies (``rtk-signature``: RSA PKCS#1 v1.5 over SHA-256, base64).

    The key is the one in ``key_file``, or one made on first use: a 2048-bit key costs a
    noticeable fraction of a second, which an emulator that sends no webhook need not pay.
    """

    def __init__(self, key_file: Path | None) -> None:
        self._key = load_key(key_file) if key_file else None
        self._lock = threading.Lock()

    @property
    def public_key_pem(self) -> str:
        """The PEM public key that verifies the signatures."""
        public = self._private_key().public_key()
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode("ascii")

    def sign(self, body: bytes) -> str:
        signature = self._private_key().sign(body, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode("ascii")

    def _private_key(self) -> rsa.RSAPrivateKey:
        with self._lock:
            if self._key is None:
                self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            return self._key


class Webhooks:
    """Delivers status updates in order from one thread, retrying as the real sender does.

    5xx answers and connection errors are retried (same ``rtk-uuid``) with a doubling
    backoff; 2xx is delivered; any other answer (redirects included) is given up on. Sent with
    urllib, directly (no proxies): HTTP client libraries log whole URLs, and a webhook URL
    often carries a secret in its query.
    """

    def __init__(self, url: str, sign: Callable[[bytes], str], webhook_id: str) -> None:
        self._url = url
        self._where = _shown(url)
        self._sign = sign
        self._webhook_id = webhook_id
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtk-emulator-webhooks", daemon=True)

    def put(self, body: bytes) -> None:
        self._queue.put((str(uuid.uuid4()), body))

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Give what is queued one try each, then stop."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        for delivery_id, body in iter(self._queue.get, None):
            self._deliver(delivery_id, body)

    def _deliver(self, delivery_id: str, body: bytes) -> None:
        headers = {
            "Content-Type": "application/json",
            "rtk-signature": self._sign(body),
            "rtk-uuid": delivery_id,
            "rtk-webhook-id": self._webhook_id,
        }
        delay = _BACKOFF
        for attempt in range(1, _TRIES + 1):
            try:
                status = _post(self._url, body, headers)
            except OSError as exc:  # refused, reset, timed out, unreachable
                outcome = type(exc).__name__
            else:
                if 200 <= status < 300:
                    _log.debug("webhook %s delivered to %s", delivery_id, self._where)
                    return
                if status < 500:
                    _log.warning("webhook %s refused by %s: %d", delivery_id, self._where, status)
                    return
                outcome = f"HTTP {status}"
            if attempt == _TRIES or self._stopping.wait(delay):
                _log.warning(
                    "webhook %s to %s failed after %d tries: %s",
                    delivery_id,
                    self._where,
                    attempt,
                    outcome,
                )
                return
            delay *= 2


def _shown(url: str) -> str:
    """Where ``url`` points, as a log line may show it: without its query or its user and
    password, either of which may be the webhook's secret."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=host, query="", fragment="").geturl()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST and return the answer's status; raises OSError when no answer came."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=_TIMEOUT) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def load_key(path: Path) -> rsa.RSAPrivateKey:
    """The RSA private key in the PEM file ``path``. A file that is not one is the user's
    mistake: a :class:`ConfigError` (a ValueError) naming the file and why, which the command
    line answers as bad input, not as an error of its own."""
    # Imported here: only a given key file needs them.
    from cryptography.exceptions import UnsupportedAlgorithm

    from ..config import ConfigError

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"webhook key {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(
            f"webhook key {path}: not an unencrypted PEM private key (-----BEGIN PRIVATE KEY-----)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"webhook key {path}: not an RSA private key")
    return key
