"""What the emulator answers: replies in each of the three envelopes clients meet.

RealtimeKit answers in its own envelope, the Cloudflare API gateway in front of it answers
authentication failures and rate limits in another, and the object store behind pre-signed
URLs answers in S3's XML. A client must cope with all three, so the emulator speaks each.
"""

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode(), headers=headers)


def rtk_error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """An error in RealtimeKit's own envelope."""
    payload = {"success": False, "error": {"code": status, "message": message}}
    return json_reply(status, payload, headers)


def gateway_error(
    status: int, code: int, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> Reply:
    """An error in Cloudflare's API gateway envelope (auth and rate limits come in this one)."""
    payload = {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }
    return json_reply(status, payload, headers)


def s3_error(
    status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> Reply:
    """An error as the object store behind pre-signed URLs answers: S3-style XML."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return Reply(status, body.encode(), "application/xml", headers)
