"""The boundary in front of MONAI Label's endpoints: who may call, from where, what, and how much.

The radiologist's own browser runs on the loopback, so "loopback only" does not keep a web page
out: a page on ``http://evil.example`` can send requests to ``127.0.0.1:8000`` (CSRF), read the
answers if CORS allows it, and a DNS-rebinding page can make itself same-origin. The rules, in
the order :class:`RequestGuard` applies them (each refusal a 4xx whose message names the rule and
the option that changes it):

1. **Peer.** Only loopback peers (127.0.0.1, ::1) unless ``--conf allow_remote true``. The guard
   decides on the TCP peer, never on a header: a request carrying ``X-Forwarded-For``,
   ``Forwarded``, ``X-Real-IP`` or ``X-Forwarded-Host`` came through a proxy and counts as remote
   whatever address it names (uvicorn's ``FORWARDED_ALLOW_IPS`` cannot make a remote client
   look local).
2. **Host.** The ``Host`` header must name this server: ``127.0.0.1``, ``localhost``, ``[::1]``
   or a name in ``--conf allowed_hosts`` (DNS rebinding sends the attacker's name).
3. **Origin.** A request from a web page (an ``Origin`` header, or ``Sec-Fetch-Site`` cross-site /
   same-site) is refused unless its origin is in ``--conf cors_origins`` (empty by default: MedKit's
   clients, 3D Slicer and scripts, send no Origin) or is this server's own loopback origin.
   MONAI Label's CORS middleware, which answers any origin with credentials, is replaced by one
   that allows only that list.
4. **Endpoints.** MONAI Label endpoints MedKit does not use are off unless named in
   ``--conf enable_endpoints`` (:data:`OPTIONAL_ENDPOINTS`, each with its risk).
5. **Size.** A body above ``--conf max_upload_mb`` gets 413 from its ``Content-Length`` before
   it is read, or as soon as a streamed body passes the cap.
6. **Answers.** An error answer never carries a server path (each is replaced by its file name);
   an unexpected exception is one logged 500 that keeps the connection usable.

Log lines carry no upload file names (:class:`RedactUploadNames`) and no forged lines: CR / LF
in what a client sent are escaped (:class:`OneLineRecords`).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# group -> (path prefixes, methods or None for all, the risk it carries when on)
OPTIONAL_ENDPOINTS: dict[str, tuple[tuple[str, ...], frozenset[str] | None, str]] = {
    "sessions": (("/session",), None,
                 "uploads (and archives extracted) into server-side sessions; MedKit never uses them"),
    "model": (("/model",), None,
              "download and replace the served model weights (PUT /model/<name>): whoever reaches the port "
              "can swap the model that writes reports"),
    "logs": (("/logs",), None, "the server log and GPU information to any client"),
    "dataset": (("/datastore/dataset",), None, "every image and report of the datastore as one ZIP download"),
    "proxy": (("/proxy",), None, "a relay to the DICOMweb server with the server's credentials"),
    "ohif": (("/ohif",), None, "MONAI Label's bundled OHIF web viewer, served from this origin"),
}
PROXY_HEADERS = (b"x-forwarded-for", b"forwarded", b"x-real-ip", b"x-forwarded-host")
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass
class AccessPolicy:
    """The guard's settings, from the app's ``--conf`` options (:meth:`from_conf`)."""

    max_bytes: int = 1024 * 1024 * 1024  # largest request body
    allow_remote: bool = False  # answer non-loopback peers (only behind TLS and authentication)
    allowed_hosts: frozenset[str] = frozenset()  # Host names besides the loopback ones
    cors_origins: frozenset[str] = frozenset()  # web origins that may call (scheme://host[:port])
    enabled_endpoints: frozenset[str] = frozenset()  # OPTIONAL_ENDPOINTS groups switched on

    @classmethod
    def from_conf(cls, conf: dict) -> "AccessPolicy":
        from lib.params import parse_bool

        def items(key: str) -> frozenset[str]:
            return frozenset(v.strip() for v in str(conf.get(key, "")).split(",") if v.strip())

        max_mb = conf.get("max_upload_mb", "1024")
        try:
            max_mb = int(max_mb)
        except ValueError:
            raise ValueError(f"--conf max_upload_mb {max_mb!r}: must be an integer number of MiB") from None
        if max_mb < 1:
            raise ValueError(f"--conf max_upload_mb {max_mb}: must be at least 1")
        unknown = items("enable_endpoints") - set(OPTIONAL_ENDPOINTS)
        if unknown:
            raise ValueError(f"--conf enable_endpoints: unknown group(s) {sorted(unknown)}; "
                             f"available: {', '.join(OPTIONAL_ENDPOINTS)}")
        origins = items("cors_origins")
        bad = [o for o in origins if not re.match(r"^https?://[^/\s]+$", o)]
        if bad:
            raise ValueError(f"--conf cors_origins: {bad[0]!r} is not an origin (scheme://host[:port], no path)")
        allow_remote = parse_bool("--conf allow_remote", conf.get("allow_remote", "false"))
        hosts = frozenset(h.lower() for h in items("allowed_hosts"))
        if allow_remote and not hosts:
            raise ValueError("--conf allow_remote true needs --conf allowed_hosts NAME[,NAME...]: the host names "
                             "remote clients use for this server (checked against each request's Host header)")
        return cls(max_bytes=max_mb * 1024 * 1024, allow_remote=allow_remote, allowed_hosts=hosts,
                   cors_origins=origins, enabled_endpoints=items("enable_endpoints"))


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


def host_name(header: str) -> str:
    """``Host`` header value -> lower-case name without the port (``[::1]:8000`` -> ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


_PATH = re.compile(r"(?<![\w.])/(?:[\w.+@-]+/)+[\w.+@-]*")


def scrub_paths(text: str) -> str:
    """Replace every absolute path of this machine in ``text`` by its file name."""
    def name(m: re.Match) -> str:
        path = m.group(0).rstrip("/")
        return os.path.basename(path) if os.path.isdir(os.path.dirname(path)) else m.group(0)

    return _PATH.sub(name, text)


class RequestGuard:
    """ASGI middleware applying :class:`AccessPolicy` (module docstring) to every HTTP request."""

    def __init__(self, app, policy: AccessPolicy):
        self.app = app
        self.policy = policy

    async def _reply(self, send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    def refusal(self, scope, headers: dict) -> tuple[int, str] | None:
        """(status, message) when the request breaks a rule, else None."""
        p = self.policy
        client = (scope.get("client") or (None,))[0]
        via_proxy = [h.decode() for h in PROXY_HEADERS if h in headers]
        if not p.allow_remote and (via_proxy or not _is_loopback(client)):
            logger.warning("refused a request from a non-loopback client%s (remote access is off)",
                           f" (proxy header {via_proxy[0]})" if via_proxy else "")
            why = f"it came through a proxy ({via_proxy[0]} header)" if via_proxy else "the client is not on 127.0.0.1"
            return 403, (f"remote access is disabled ({why}): this server answers 127.0.0.1 only; start it with "
                         "--conf allow_remote true behind TLS and authentication")
        host = headers.get(b"host")
        if host is not None:
            name = host_name(host.decode("latin-1"))
            if name not in LOOPBACK_NAMES and name not in p.allowed_hosts:
                return 403, (f"Host {name[:80]!r} is not a name of this server (DNS rebinding?); allowed: "
                             f"{', '.join(sorted(LOOPBACK_NAMES | p.allowed_hosts))} (--conf allowed_hosts)")
        origin = headers.get(b"origin")
        fetch_site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
        if origin is not None or fetch_site in ("cross-site", "same-site"):
            text = origin.decode("latin-1") if origin is not None else f"a {fetch_site} page"
            port = (scope.get("server") or (None, None))[1]
            own = {f"{scheme}://{n}:{port}" for n in ("127.0.0.1", "localhost", "[::1]")
                   for scheme in ("http", "https")}
            if text not in p.cors_origins and text not in own:  # own: pages this server serves (/docs)
                return 403, (f"request from the web origin {text[:80]!r} refused: a web page may not call this "
                             "server unless its origin is in --conf cors_origins")
        path = scope.get("path", "")
        for group, (prefixes, methods, risk) in OPTIONAL_ENDPOINTS.items():
            if group in p.enabled_endpoints:
                continue
            if any(path == pre or path.startswith(pre + "/") for pre in prefixes) and \
                    (methods is None or scope.get("method") in methods):
                return 403, (f"endpoint {path[:80]} is disabled in MedKit; --conf enable_endpoints {group} turns it "
                             f"on (risk: {risk})")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        refused = self.refusal(scope, headers)
        if refused:
            return await self._reply(send, *refused)
        declared = headers.get(b"content-length")
        try:
            declared = int(declared) if declared is not None else None
        except ValueError:
            return await self._reply(send, 400, f"invalid Content-Length header {declared[:40]!r}")
        limit_mb = self.policy.max_bytes // (1024 * 1024)
        if declared is not None and declared > self.policy.max_bytes:
            return await self._reply(send, 413, f"upload of {declared} bytes exceeds the limit of {limit_mb} MiB "
                                                "(--conf max_upload_mb)")
        seen, too_large, started = 0, False, False
        held: dict = {}  # an error answer's start message, held until its body is scrubbed

        async def counted_receive():
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.policy.max_bytes:
                    too_large = True
                    raise _TooLarge()
            return message

        async def guarded_send(message):
            # a streamed body over the limit: whatever the endpoint answers (FastAPI turns the
            # aborted read into a 400 or 500), the client gets the 413 that names the problem
            nonlocal started
            if too_large:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._reply(send, 413, f"upload exceeds the limit of {limit_mb} MiB (--conf max_upload_mb)")
                return
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 400:
                    held["start"], held["body"] = message, b""
                    return
                return await send(message)
            if message["type"] == "http.response.body" and "start" in held:
                held["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return
                body = scrub_paths(held["body"].decode("utf-8", "replace")).encode()
                start = dict(held.pop("start"))
                start["headers"] = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"] + \
                    [(b"content-length", str(len(body)).encode())]
                await send(start)
                return await send({"type": "http.response.body", "body": body})
            return await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooLarge:
            if not started:
                await self._reply(send, 413, f"upload exceeds the limit of {limit_mb} MiB (--conf max_upload_mb)")
        except Exception:  # a bug, not the client's fault: logged once, answered, connection kept
            logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                body = json.dumps({"detail": "internal server error (logged on the server)"}).encode()
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})


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


class OneLineRecords(logging.Filter):
    """CR / LF inside a record's message or arguments (an id or param a client sent) are escaped,
    so a client cannot write a line of its own into the log; tracebacks stay multi-line."""

    @staticmethod
    def _escape(value):
        if isinstance(value, str) and ("\n" in value or "\r" in value):
            return value.replace("\r", "\\r").replace("\n", "\\n")
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._escape(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._escape(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self._escape(v) for k, v in record.args.items()}
        return True


def install_log_filters() -> None:
    for name in ("monailabel.endpoints.datastore", "monailabel.endpoints.infer"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, RedactUploadNames) for f in lg.filters):
            lg.addFilter(RedactUploadNames())
    # handler filters see every record that reaches them, whichever logger made it
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    for lg in loggers:
        for handler in getattr(lg, "handlers", []):
            if not any(isinstance(f, OneLineRecords) for f in handler.filters):
                handler.addFilter(OneLineRecords())
