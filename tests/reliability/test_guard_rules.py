"""The request guard's rules (monailabel_app/lib/security.py) decided on ASGI scopes, including the
configurations the shared test server does not run: remote access allowed, allowed host names."""

from __future__ import annotations

import sys

import pytest

from tests.monailabel.conftest import APP

sys.path.insert(0, str(APP))  # the app's own `lib` package, as MONAI Label loads it
from lib.security import AccessPolicy, RequestGuard, host_name, scrub_paths  # noqa: E402


def scope(client="127.0.0.1", host="127.0.0.1:8000", path="/info/", method="GET", **headers):
    hdrs = [(b"host", host.encode())] if host else []
    hdrs += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "client": (client, 5555), "server": ("127.0.0.1", 8000), "path": path,
            "method": method, "headers": hdrs}


def refusal(policy: AccessPolicy, s: dict):
    return RequestGuard(None, policy).refusal(s, {k.lower(): v for k, v in s["headers"]})


def test_policy_from_conf_checks_its_options():
    assert AccessPolicy.from_conf({}).allow_remote is False
    with pytest.raises(ValueError, match="allowed_hosts"):
        AccessPolicy.from_conf({"allow_remote": "true"})
    with pytest.raises(ValueError, match="not an origin"):
        AccessPolicy.from_conf({"cors_origins": "https://viewer.example/path"})
    with pytest.raises(ValueError, match="unknown group"):
        AccessPolicy.from_conf({"enable_endpoints": "sessions,everything"})
    with pytest.raises(ValueError, match="max_upload_mb"):
        AccessPolicy.from_conf({"max_upload_mb": "lots"})


def test_loopback_defaults():
    p = AccessPolicy.from_conf({})
    assert refusal(p, scope()) is None
    assert refusal(p, scope(host="localhost:8000")) is None and refusal(p, scope(client="::1", host="[::1]:8000")) is None
    assert refusal(p, scope(client="10.1.2.3"))[0] == 403
    assert refusal(p, scope(host="evil.example"))[0] == 403
    assert refusal(p, scope(x_forwarded_for="127.0.0.1"))[0] == 403
    assert refusal(p, scope(origin="http://127.0.0.1:8000")) is None  # this server's own page (/docs)
    assert refusal(p, scope(origin="http://127.0.0.1:9999"))[0] == 403
    assert refusal(p, scope(sec_fetch_site="same-origin")) is None
    assert refusal(p, scope(sec_fetch_site="same-site"))[0] == 403
    assert refusal(p, scope(path="/logs/"))[0] == 403 and refusal(p, scope(path="/logsx")) is None
    assert refusal(p, scope(host=None)) is None  # HTTP/1.0 without Host: not a browser


def test_remote_behind_tls_with_allowed_hosts():
    p = AccessPolicy.from_conf({"allow_remote": "true", "allowed_hosts": "medkit.hospital.example",
                                "cors_origins": "https://viewer.hospital.example", "enable_endpoints": "logs"})
    remote = {"client": "10.1.2.3", "host": "medkit.hospital.example"}
    assert refusal(p, scope(**remote)) is None
    assert refusal(p, scope(**remote, x_forwarded_for="10.9.9.9")) is None  # a proxy is fine when remote is on
    assert refusal(p, scope(client="10.1.2.3", host="other.example"))[0] == 403
    assert refusal(p, scope(**remote, origin="https://viewer.hospital.example")) is None
    assert refusal(p, scope(**remote, origin="https://evil.example"))[0] == 403
    assert refusal(p, scope(**remote, path="/logs/")) is None and refusal(p, scope(**remote, path="/session/"))


def test_host_names_and_path_scrubbing(tmp_path):
    assert host_name("[::1]:8000") == "::1" and host_name("LocalHost:1") == "localhost" and host_name("::1") == "::1"
    f = tmp_path / "study.png"
    text = f"{f}: not a readable image; see /infer/medkit_cxr and CR/DX"
    assert scrub_paths(text) == "study.png: not a readable image; see /infer/medkit_cxr and CR/DX"
