"""Request guards in front of MONAI Label's endpoints: who may connect, and how much they may send.

- Loopback only by default: a request from another host gets 403 unless the app runs with
  ``--conf allow_remote true`` (do that only behind TLS and MONAI Label's authentication; see
  the app README). This holds even when the server is started with MONAI Label's default
  ``--host 0.0.0.0``, so a forgotten ``--host`` does not expose studies and reports.
- Upload size: a request body above ``--conf max_upload_mb`` (default 1024) gets 413, from its
  declared ``Content-Length`` before anything is read, or as soon as a streamed body passes it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re

logger = logging.getLogger(__name__)


class _TooLarge(Exception):  # noqa: N818 (control flow, not an error shown to anyone)
    pass


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host == "localhost"
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 when the server listens on "::"
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


class RequestGuard:
    """ASGI middleware: loopback-only unless ``allow_remote``; request bodies capped at ``max_bytes``."""

    def __init__(self, app, max_bytes: int, allow_remote: bool):
        self.app = app
        self.max_bytes = max_bytes
        self.allow_remote = allow_remote

    async def _reply(self, send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        client = (scope.get("client") or (None,))[0]
        if not self.allow_remote and not _is_loopback(client):
            logger.warning("refused a request from a non-loopback client (remote access is off)")
            return await self._reply(send, 403, "remote access is disabled: this server answers 127.0.0.1 only; "
                                                "start it with --conf allow_remote true behind TLS and authentication")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            declared = int(declared) if declared is not None else None
        except ValueError:
            return await self._reply(send, 400, f"invalid Content-Length header {declared[:40]!r}")
        limit_mb = self.max_bytes // (1024 * 1024)
        if declared is not None and declared > self.max_bytes:
            return await self._reply(send, 413, f"upload of {declared} bytes exceeds the limit of {limit_mb} MiB "
                                                "(--conf max_upload_mb)")
        seen, too_large, replied = 0, False, False

        async def counted_receive():
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_large = True
                    raise _TooLarge()
            return message

        async def guarded_send(message):
            # a streamed body over the limit: whatever the endpoint answers (FastAPI turns the
            # aborted read into a 400 or 500), the client gets the 413 that names the problem
            nonlocal replied
            if not too_large:
                return await send(message)
            if message["type"] == "http.response.start" and not replied:
                replied = True
                await self._reply(send, 413, f"upload exceeds the limit of {limit_mb} MiB (--conf max_upload_mb)")

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooLarge:
            if not replied:
                replied = True
                await self._reply(send, 413, f"upload exceeds the limit of {limit_mb} MiB (--conf max_upload_mb)")


class RedactUploadNames(logging.Filter):
    """MONAI Label logs an upload's ``UploadFile(filename='...', headers=...)``, the file name twice;
    file names often carry patient names (``DOE_JANE_chest.dcm``), so they are replaced by
    ``<redacted>`` before any handler sees them."""

    # filename='..' (UploadFile) and filename=".." / filename*=UTF-8''.. (its Content-Disposition header)
    PATTERN = re.compile(r"""(filename\*?=)(?:UTF-8''[^;'"\s]*|(['"])(?:(?!\2).)*\2)""", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "filename" in record.msg.lower():
            record.msg = self.PATTERN.sub(r"\1<redacted>", record.msg)
        return True


def install_log_redaction() -> None:
    for name in ("monailabel.endpoints.datastore", "monailabel.endpoints.infer"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, RedactUploadNames) for f in lg.filters):
            lg.addFilter(RedactUploadNames())
