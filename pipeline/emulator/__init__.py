"""A local stand-in for Cloudflare RealtimeKit's recording API, served over real HTTP.

Why it exists: the demo and the tests must run with no account and no network, and a client's
hard paths (rate limits, 5xx, dropped or corrupted downloads, expired URLs, webhooks) must be
reproducible on demand. So the emulator is a real HTTP server on loopback that speaks the
documented endpoints (``realtimekit-api.md``), backed by a meeting folder (``manifest.json`` in
``trackscribe.manifest/1`` plus its track files), and moves each recording through its statuses
on the clock, as the service does::

    with Emulator(meeting_dir, EmulatorOptions(token="t")) as emulator:
        httpx.post(f"{emulator.base_url}/accounts/a/realtime/kit/b/recordings/track", ...)

Choices made where the API's documents say nothing (kept deliberate, so clients see one
behaviour):

- One meeting per emulator (the manifest's). ``session_id`` is one id for all its recordings.
- The meeting's session is live for every start: no participant joins or leaves but as the
  manifest's tracks say, so the documented refusal of a start without a live session is not
  emulated.
- A recording's files are the tracks of the users asked for (all users without ``user_ids``),
  in manifest order; a user with two tracks (a rejoin) has two files. A user asked for who has
  no track is accepted and gets no file, as someone asked for who never joins while it records
  (the service cannot refuse a user who may join later); a recording of no one who has a
  track lists no files. Only the first layer of
  ``layers`` is used: it names the layer and gives the file-name prefix. ``outputs`` and
  storage configs are accepted and ignored: files are always served from the emulator.
- ``max_seconds`` of recorded time (pauses left out; 86,400 when not given, as documented)
  ends the recording like a stop call (stop reason ``API_CALL``); the session ends
  ``record_seconds`` after the recording started, paused or not, and the recording with it
  (``ALL_PEERS_LEFT``).
- ``stop`` before the recording started ends it ``ERRORED``: nothing was recorded.
- ``download_url`` in shape ``"string"`` carries only the first file (as the generated SDKs
  type it): a client that needs every file must use shape ``"layers"``.
- Download URLs name the host (and port) the client's request named in its ``Host`` header,
  so that a client on another machine can follow them; without a usable one, the address
  bound (its loopback address for a wildcard bind, as in :attr:`Emulator.base_url`). Webhooks
  have no request to follow: theirs name that address. The signature does not cover the host.
- Download URLs are signed afresh on every read. ``X-Amz-Expires`` holds the expiry as Unix
  seconds (not S3's duration), which is what the signature covers. List filter ``expired``
  asks whether the URLs issued last for a recording are past their expiry.
- ``POST /recordings`` (composite recording) is answered 501 in RealtimeKit's envelope: not
  emulated. Any method an endpoint does not take (HEAD and OPTIONS too) is answered 405 in
  that envelope, with ``Allow``; a HEAD answer carries the headers only, as HTTP requires.
  Pre-signed URLs take GET and HEAD (headers only); others are answered 405 in S3's XML.
- List filter ``search`` matches part of the meeting's id or title (the API reference's
  meaning; the title is the meeting folder's name, as webhooks give it) or of a recording's
  id, ignoring case.
- ``paging.end_offset`` is the offset of the last item returned (``start_offset - 1`` for an
  empty page); the list is sorted by ``invoked_time``, newest first unless ``sort_order=ASC``.

Faults (:data:`FAULTS`), armed by ``EmulatorOptions.faults`` or :meth:`Emulator.inject`; each
arming is a count that one occurrence uses up, and no fault ever changes a file on disk:

- ``rate_limit``: an authorised API request is answered 429 (gateway envelope, code 971,
  ``retry-after: 1``). ``server_error``: an authorised API request is answered 503
  (RealtimeKit envelope). Rate limits are checked first; a 401 uses up neither.
  ``lost_reply``: a start (POST) or an action (PUT) takes effect, and is answered 502 all the
  same, as when a gateway loses the service's answer. ``slow_reply``: one takes effect, and its
  answer is held back ``EmulatorOptions.slow_reply_seconds``: a client that waits less gives
  up on a call that took effect.
- ``cut``: a file download sends its headers (full Content-Length) and half its body, then
  the connection is closed. ``corrupt``: a download sends the right length and headers with
  one byte in every 64 KiB inverted. Both count only downloads actually served (not 403/416,
  not HEAD) and may hit the same download.
- ``expired_url``: a recording rendered with download URLs for a client (GET one, list
  entries) gets URLs that expired a minute ago. Webhooks never use it up.
"""

from ._service import FAULTS, Emulator, EmulatorOptions

__all__ = ["FAULTS", "Emulator", "EmulatorOptions"]
