"""Where the RealtimeKit account settings come from: flags, then environment, then a file.

The config file is TOML (``--config FILE``, else ``$TRACKSCRIBE_CONFIG``, else
``$XDG_CONFIG_HOME/trackscribe/config.toml``, by default ``~/.config/…``, when it exists)::

    [realtimekit]
    account_id = "…"
    app_id = "…"
    api_token = "…"                # better kept in CLOUDFLARE_API_TOKEN
    base_url = "https://api.cloudflare.com/client/v4"
    webhook_public_key = "/path/to/realtimekit-webhooks.pem"

A path the file gives is relative to the file's folder, wherever trackscribe runs from.
"""

import functools
import logging
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr

from models import RetryPolicy, decode_text
from stages.record import DEFAULT_BASE_URL, RealtimeKitClient

log = logging.getLogger(f"trackscribe.{__name__}")

__all__ = ["ENVIRONMENT", "ApiSettings", "ConfigError"]

ENVIRONMENT = {
    "api_token": "CLOUDFLARE_API_TOKEN",
    "account_id": "CLOUDFLARE_ACCOUNT_ID",
    "app_id": "REALTIMEKIT_APP_ID",
    "base_url": "REALTIMEKIT_BASE_URL",
    "webhook_public_key": "REALTIMEKIT_WEBHOOK_PUBLIC_KEY",
}
_FLAGS = {
    "api_token": "--api-token",
    "account_id": "--account-id",
    "app_id": "--app-id",
    "base_url": "--base-url",
    "webhook_public_key": "--public-key",
}


class ConfigError(ValueError):
    """A setting is missing or unreadable; the message says where it can be given."""


class ApiSettings(BaseModel):
    """The account, app and credentials to call RealtimeKit with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = DEFAULT_BASE_URL
    api_token: SecretStr | None = None
    account_id: str | None = None
    app_id: str | None = None
    webhook_public_key: str | None = None

    @classmethod
    def resolve(
        cls,
        flags: Mapping[str, str | None] | None = None,
        *,
        config_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> "ApiSettings":
        """Each setting from the first of: a flag, the environment, the config file."""
        environ = os.environ if environ is None else environ
        from_file = _read_config(config_file, environ)
        values: dict[str, str] = {}
        for key, variable in ENVIRONMENT.items():
            value = (flags or {}).get(key) or environ.get(variable) or from_file.get(key)
            if value:
                values[key] = str(value)
        return cls.model_validate(values)

    def client(
        self, *, retry: RetryPolicy | None = None, timeout: float | None = None
    ) -> RealtimeKitClient:
        """A client for these settings (trying as hard as ``retry`` says and waiting up to
        ``timeout`` seconds for an answer, by default as the client does); says which settings
        are missing and how to give them. A short look (one try, a few seconds) is for a
        question whose answer only refines what is done anyway."""
        token = self._token()
        assert self.account_id and self.app_id
        try:
            made = functools.partial(
                RealtimeKitClient,
                account_id=self.account_id,
                app_id=self.app_id,
                token=token,
                base_url=self.base_url,
                retry=retry,
            )
            return made() if timeout is None else made(timeout=timeout)
        except ValueError as exc:  # a base URL that cannot be one
            raise ConfigError(str(exc)) from None

    def check(self) -> None:
        """Raise the :class:`ConfigError` :meth:`client` would, before any work is begun."""
        self._token()

    def _token(self) -> str:
        missing = [
            f"{key} ({_FLAGS[key]}, ${ENVIRONMENT[key]} or {key} in the config file)"
            for key in ("account_id", "app_id", "api_token")
            if not getattr(self, key)
        ]
        if missing:
            raise ConfigError("RealtimeKit settings missing: " + ", ".join(missing))
        assert self.api_token
        # Read from a file with Windows line ends, a token keeps its "\r"; sent as it is, it
        # would be refused by httpx, in an error and a debug log that show it whole.
        token = self.api_token.get_secret_value().strip()
        if not token:
            raise ConfigError("api_token: given, but blank")
        if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
            raise ConfigError(
                "api_token: holds a space, a control or a non-ASCII character, which no "
                "RealtimeKit token has (a line break or a character copied along with it?)"
            )
        return token

    def public_key_pem(self) -> bytes:
        """The webhook public key: PEM text given directly, or the path of a PEM file."""
        value = self.webhook_public_key
        if not value:
            raise ConfigError(
                "no webhook public key: give --public-key FILE, "
                f"${ENVIRONMENT['webhook_public_key']} or webhook_public_key in the config file "
                "(from RealtimeKit's webhooks.json)"
            )
        if _is_pem(value):
            return value.encode()
        try:
            return Path(value).expanduser().read_bytes()
        except OSError as exc:
            raise ConfigError(f"webhook public key {value}: {exc.strerror or exc}") from None


def _read_config(path: Path | None, environ: Mapping[str, str]) -> dict[str, object]:
    explicit = path or (
        Path(environ["TRACKSCRIBE_CONFIG"]) if environ.get("TRACKSCRIBE_CONFIG") else None
    )
    config_home = environ.get("XDG_CONFIG_HOME") or Path(environ.get("HOME", "~")) / ".config"
    candidate = explicit or Path(config_home).expanduser() / "trackscribe" / "config.toml"
    if not candidate.exists():
        if explicit:
            raise ConfigError(f"{candidate}: no such config file")
        return {}
    try:
        data = tomllib.loads(decode_text(candidate.read_bytes()))
    except (OSError, ValueError, RecursionError) as exc:  # not UTF-8, not TOML, too deep
        raise ConfigError(f"{candidate}: cannot read config: {exc}") from None
    # Settings outside [realtimekit] (a misspelt section, keys above it) are refused, not
    # ignored: the settings would then be said to be missing, though they are in the file.
    others = sorted(set(data) - {"realtimekit"})
    if others:
        raise ConfigError(
            f"{candidate}: unknown table(s) or setting(s) {', '.join(others)}: trackscribe's "
            "settings go in [realtimekit]"
        )
    section = data.get("realtimekit", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{candidate}: [realtimekit] must be a table")
    unknown = sorted(set(section) - set(ENVIRONMENT))
    if unknown:
        raise ConfigError(f"{candidate}: unknown setting(s) in [realtimekit]: {', '.join(unknown)}")
    not_text = sorted(key for key, value in section.items() if not isinstance(value, str))
    if not_text:
        raise ConfigError(
            f"{candidate}: [realtimekit] {', '.join(not_text)}: must be text, in quotes"
        )
    key = section.get("webhook_public_key")
    if key and not _is_pem(key):
        # The file's path, not the current folder's: a receiver started by a service manager
        # (its folder "/") looked for the key file there, and did not start.
        section["webhook_public_key"] = str(candidate.absolute().parent / Path(key).expanduser())
    if section.get("api_token") and stat.S_IMODE(candidate.stat().st_mode) & 0o077:
        log.warning(
            "%s holds the API token and can be read by other accounts here (chmod 600 it)",
            candidate,
        )
    return section


def _is_pem(value: str) -> bool:
    """Whether a webhook public key is given as PEM text rather than as a file's path."""
    return value.lstrip().startswith("-----BEGIN")
