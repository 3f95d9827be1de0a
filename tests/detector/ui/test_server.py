"""The HTTP server: API, security headers, CSRF, Host check, token auth, refusal outside loopback."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from detector.ui.config import UIConfig
from detector.ui.server import CSP, UIServer

TOKEN = "s3cret-token-for-tests-0123456789"


def _req(url, data=None, headers=None, method=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def server(alert_store):
    with UIServer(UIConfig(alerts=alert_store.db, archive=alert_store.archive, port=0)) as s:
        yield s


def _csrf(server) -> str:
    return server.app.csrf


def _first_id(alert_store) -> str:
    return alert_store.found["flows"][0]["finding_info"]["uid"]


def test_pages_carry_strict_security_headers(server):
    for path in ("/", "/alert?id=x", "/static/app.css", "/api/alerts", "/api/stamp"):
        status, h, _ = _req(server.url.rstrip("/") + path)
        assert status == 200, path
        assert h["Content-Security-Policy"] == CSP and "unsafe-inline" not in CSP
        assert h["X-Content-Type-Options"] == "nosniff" and h["X-Frame-Options"] == "DENY"


def test_api_returns_valid_json_with_escaped_markup(server, alert_store):
    status, _, body = _req(server.url + "api/alerts?q=window.__xss")
    assert status == 200 and b"<" not in body and b">" not in body  # markup escaped as \u003c even in JSON
    items = json.loads(body)["items"]
    assert items and items[0]["src"].startswith("<script>")
    status, _, body = _req(server.url + f"api/alert?id={items[0]['id']}")
    detail = json.loads(body)
    assert status == 200 and detail["context"]["source"] == "archive"
    assert detail["context"]["graph"]["nodes"] and b"<" not in body


def test_alert_detail_from_the_archive(server, alert_store):
    a = next(a for a in alert_store.found["flows"] if a["unmapped"]["technique"] == "T1046")
    d = json.loads(_req(server.url + f"api/alert?id={a['finding_info']['uid']}")[2])
    ctx = d["context"]
    in_alert = [f for f in ctx["flows"] if f["in_alert"]]
    assert len(in_alert) == a["unmapped"]["count"]  # every record the alert folded in, from the archive
    src = a["src_endpoint"]["ip"]
    assert {n["id"] for n in ctx["graph"]["nodes"]} >= {src, "10.0.0.100"}
    assert len(ctx["timeline"]) >= 2 and any(t["alert_id"] == a["finding_info"]["uid"] for t in ctx["timeline"])
    tech = d["techniques"][0]
    assert tech["id"] == "T1046" and tech["name"] == "Network Service Discovery" and "Discovery" in tech["tactics"]


def test_triage_needs_the_csrf_token_and_json(server, alert_store):
    url = server.url + f"api/triage?id={_first_id(alert_store)}"
    body = json.dumps({"action": "ack"}).encode()
    assert _req(url, body, {"Content-Type": "application/json"})[0] == 403
    assert _req(url, body, {"Content-Type": "application/json", "X-CSRF-Token": "wrong"})[0] == 403
    assert _req(url, body, {"Content-Type": "text/plain", "X-CSRF-Token": _csrf(server)})[0] == 415
    assert _req(url, body, {"Content-Type": "application/json", "X-CSRF-Token": _csrf(server),
                            "Origin": "http://evil.example"})[0] == 403
    assert server.app.triage.revision() == 0
    status, _, out = _req(url, body, {"Content-Type": "application/json", "X-CSRF-Token": _csrf(server)})
    assert status == 200 and json.loads(out)["triage"]["status"] == "acknowledged"
    bad = _req(url, b'{"action": "close", "verdict": "true_positive"}',
               {"Content-Type": "application/json", "X-CSRF-Token": _csrf(server)})
    assert bad[0] == 400 and b"reason" in bad[2]
    assert _req(server.url + "api/triage?id=nope", body, {"Content-Type": "application/json",
                                                          "X-CSRF-Token": _csrf(server)})[0] == 404


def test_foreign_host_header_is_refused(server):
    """DNS rebinding: a page on another name resolving to 127.0.0.1 gets nothing."""
    status, _, _ = _req(server.url + "api/alerts", headers={"Host": "attacker.example:80"})
    assert status == 421


def test_unknown_paths_and_traversal(server):
    assert _req(server.url + "static/../server.py")[0] == 404
    assert _req(server.url + "static/%2e%2e/server.py")[0] == 404
    assert _req(server.url + "api/alert?id=nope")[0] == 404
    assert _req(server.url + "api/alerts?sort=evil")[0] == 400


def test_token_required_when_configured(alert_store):
    with UIServer(UIConfig(alerts=alert_store.db, port=0, token=TOKEN)) as s:
        assert _req(s.url + "api/alerts")[0] == 401
        assert _req(s.url + "api/alerts", headers={"Authorization": "Bearer wrong-token-000000000"})[0] == 401
        assert _req(s.url + "api/alerts", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        page = opener.open(s.url, timeout=10)  # a page: sent to the sign-in form
        assert page.url.endswith("/login") and b'name="token"' in page.read()
        with pytest.raises(urllib.error.HTTPError):
            opener.open(s.url + "login", data=b"token=nope", timeout=10)
        status, headers, _ = _req(s.url + f"login?token={TOKEN}")  # a token in the URL is not a sign-in
        assert status == 200 and "Set-Cookie" not in headers
        r = opener.open(s.url + "login", data=f"token={TOKEN}".encode(), timeout=10)
        assert r.status == 200 and r.url == s.url  # signed in, redirected to the queue
        assert opener.open(s.url + "api/alerts", timeout=10).status == 200  # the session cookie


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::"])
def test_refuses_to_serve_outside_loopback_without_a_token(alert_store, host):
    with pytest.raises(ValueError, match="without an access token"):
        UIConfig(alerts=alert_store.db, host=host, port=0)
    UIConfig(alerts=alert_store.db, host=host, port=0, token=TOKEN)  # with one it is allowed


def test_config_checks(alert_store, tmp_path):
    with pytest.raises(ValueError, match="alert store not found"):
        UIConfig(alerts=tmp_path / "none.db")
    with pytest.raises(ValueError, match="at least 16"):
        UIConfig(alerts=alert_store.db, token="short")
    with pytest.raises(ValueError, match="both"):
        UIConfig(alerts=alert_store.db, tls_cert=alert_store.db)


def test_fraud_finding_detail(server, alert_store):
    tx = alert_store.found["tx"][0]
    d = json.loads(_req(server.url + f"api/alert?id={tx['finding_info']['uid']}")[2])
    s = d["summary"]
    assert s["kind"] == "transaction" and s["src"] == "4711" and s["dst"] in {"T0", "T1"}
    assert s["amount"] == tx["evidences"][0]["data"]["amount"]
    ctx = d["context"]  # the archive holds flows: the card's detail comes from the finding itself
    assert ctx["source"] == "findings" and ctx["flows"][0]["amount"] == s["amount"]
    assert {n["id"] for n in ctx["graph"]["nodes"]} >= {"4711", s["dst"]}
    assert any(t["alert_id"] == tx["finding_info"]["uid"] for t in d["context"]["timeline"])


def test_incident_keyed_by_destination_follows_the_destination(server, alert_store):
    inc = next(a for a in alert_store.found["flows"] if a["unmapped"].get("group_by") == "dst")
    d = json.loads(_req(server.url + f"api/alert?id={inc['finding_info']['uid']}")[2])
    assert d["summary"]["entity"] == "10.0.0.100"
    t = {x["window_start"]: x for x in d["context"]["timeline"]}[inc["unmapped"]["window"]["start"]]
    assert t["records"] == 4 + 5 + 6 + 7 + 8 and t["alert_id"] == inc["finding_info"]["uid"]  # every record to it
    # an ongoing finding: every window it spans is marked as its own
    mine = [x for x in d["context"]["timeline"] if x["alert_id"] == inc["finding_info"]["uid"]]
    assert len(mine) == inc["unmapped"]["windows"] > 1


def test_tls(alert_store, tmp_path):
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    with UIServer(UIConfig(alerts=alert_store.db, port=0, tls_cert=cert, tls_key=key)) as s:
        assert s.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        with urllib.request.urlopen(s.url + "api/stamp", context=ctx, timeout=10) as r:
            assert r.status == 200 and r.headers["Strict-Transport-Security"]
