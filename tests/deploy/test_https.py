"""deploy/Caddyfile for real, on loopback: Caddy gets a certificate on demand from pebble
(Let's Encrypt's ACME test server) for a tracking host mailbeacon vouches for, and
none for any other name; opens and clicks over HTTPS are recorded with the client's
address, which Caddy passes in X-Forwarded-For.

Needs Debian's `caddy` and `pebble` (.ci/run installs them): skipped without them,
failed under CI.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import Service, SmtpRelay, free_port

CADDYFILE = Path(__file__).parents[2] / "deploy" / "Caddyfile"
TRACKING_HOST = "email.example.com"
CLIENT = "127.0.0.2"  # the test's own address, not Caddy's: X-Forwarded-For must carry it


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    found = {name: shutil.which(name) for name in ("caddy", "pebble")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        reason = f"needs Debian's {' and '.join(missing)} (apt-get install caddy pebble)"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(reason)
        pytest.skip(reason)
    return {name: str(path) for name, path in found.items()}


def _write_ca_and_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA, and a certificate it signed for 127.0.0.1, for pebble's own ACME
    listener (Debian's pebble ships none): (CA, certificate, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailbeacon test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "pebble-cert.pem", folder / "pebble-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@dataclass
class Pebble:
    directory: str  # the ACME directory URL
    ca: Path  # what its listener's certificate is signed by
    root: str  # PEM of the root its certificates chain to


@dataclass
class Caddy:
    https_port: int
    http_port: int
    log: Path


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def _until(check: Callable[[], Any], what: str, process: subprocess.Popen[bytes],
                 log: Path) -> Any:
    for _ in range(300):
        if process.poll() is not None:
            raise AssertionError(f"{what} exited: {log.read_text(errors='replace')}")
        try:
            return await check()
        except (httpx.HTTPError, OSError):
            await asyncio.sleep(0.05)
    raise AssertionError(f"{what} did not start: {log.read_text(errors='replace')}")


@pytest.fixture
async def pebble(tools: dict[str, str], tmp_path: Path) -> AsyncIterator[Pebble]:
    folder = tmp_path / "pebble"
    folder.mkdir()
    ca, cert, key = _write_ca_and_cert(folder)
    port, management = free_port(), free_port()
    config = folder / "pebble-config.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{port}",
        "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(cert), "privateKey": str(key),
        # Never used: with PEBBLE_VA_ALWAYS_VALID no challenge is checked, so no DNS.
        "httpPort": free_port(), "tlsPort": free_port(),
        "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    log = folder / "pebble.log"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PEBBLE_VA_ALWAYS_VALID": "1",
           "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    with log.open("wb") as out:
        process = subprocess.Popen([tools["pebble"], "-config", str(config)], cwd=folder,
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(ca)),
                                     trust_env=False) as client:
            async def ready() -> str:
                (await client.get(f"https://127.0.0.1:{port}/dir")).raise_for_status()
                r = await client.get(f"https://127.0.0.1:{management}/roots/0")
                r.raise_for_status()
                return r.text

            root = await _until(ready, "pebble", process, log)
        yield Pebble(f"https://127.0.0.1:{port}/dir", ca, root)
    finally:
        _stop(process)


@pytest.fixture
def https_port() -> int:
    """Caddy's HTTPS port, in the tracking URL."""
    return free_port()


@pytest.fixture
async def https_service(service_factory: Callable[..., Any], smtp_relay: SmtpRelay,
                        tools: dict[str, str], https_port: int) -> AsyncIterator[Service]:
    async with service_factory(relay=smtp_relay.url,
                               public_url=f"https://mb.example.com:{https_port}") as svc:
        await svc.start_http()
        await svc.add_domain("example.com",
                             tracking_url=f"https://{TRACKING_HOST}:{https_port}",
                             web_scheme="https")
        yield svc


def caddyfile(pebble: Pebble) -> str:
    """deploy/Caddyfile as shipped, plus what a test needs in its global options: trust
    pebble, bind to loopback only, keep out of the system's trust store."""
    text = CADDYFILE.read_text()
    extra = (f"\tacme_ca_root {pebble.ca}\n\tdefault_bind 127.0.0.1\n"
             "\tskip_install_trust\n")
    assert "\n{\n" in text, "the global options block must open on a line of its own"
    return text.replace("\n{\n", "\n{\n" + extra, 1)


@pytest.fixture
async def caddy(tools: dict[str, str], pebble: Pebble, https_service: Service,
                https_port: int, tmp_path: Path) -> AsyncIterator[Caddy]:
    folder = tmp_path / "caddy"
    folder.mkdir()
    config = folder / "Caddyfile"
    config.write_text(caddyfile(pebble))
    http_port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           # Everything Caddy writes (certificates, autosaved config) stays in here.
           "HOME": str(folder), "XDG_DATA_HOME": str(folder / "data"),
           "XDG_CONFIG_HOME": str(folder / "config"),
           "MAILBEACON_UPSTREAM": f"127.0.0.1:{https_service.port}",
           "ACME_CA": pebble.directory, "CADDY_HTTP_PORT": str(http_port),
           "CADDY_HTTPS_PORT": str(https_port), "CADDY_ADMIN": f"127.0.0.1:{free_port()}"}
    log = folder / "caddy.log"
    with log.open("wb") as out:
        process = subprocess.Popen([tools["caddy"], "run", "--config", str(config),
                                    "--adapter", "caddyfile"], cwd=folder, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(trust_env=False) as client:
            async def ready() -> None:
                # /tls/ask is the mailbeacon's own business: Caddy answers it 404.
                r = await client.get(f"http://127.0.0.1:{http_port}/tls/ask?domain=x.test")
                assert r.status_code == 404 and not r.content, r.text
            await _until(ready, "caddy", process, log)
        yield Caddy(https_port, http_port, log)
    finally:
        _stop(process)


@pytest.fixture
def client(pebble: Pebble) -> Iterator[httpx.AsyncClient]:
    """An HTTPS client trusting pebble's root only, from 127.0.0.2 (a loopback address
    that is not Caddy's)."""
    context = ssl.create_default_context(cadata=pebble.root)
    transport = httpx.AsyncHTTPTransport(verify=context, local_address=CLIENT)
    yield httpx.AsyncClient(transport=transport, timeout=60, trust_env=False)


async def fetch(client: httpx.AsyncClient, caddy: Caddy, host: str, path: str,
                **headers: str) -> httpx.Response:
    """GET https://HOST:PORT/PATH, connected to 127.0.0.1 with HOST as SNI and Host."""
    return await client.get(f"https://127.0.0.1:{caddy.https_port}{path}",
                            headers={"host": f"{host}:{caddy.https_port}", **headers},
                            extensions={"sni_hostname": host})


async def test_tracking_over_https_through_caddy(
        caddy: Caddy, client: httpx.AsyncClient, https_service: Service,
        smtp_relay: SmtpRelay) -> None:
    await https_service.send("example.com", to="alice@example.org", subject="x",
                             html='<a href="https://shop.example.net/">x</a>')
    (received,) = await smtp_relay.wait_for(1)
    html = received.part("text/html")
    base = re.escape(f"https://{TRACKING_HOST}:{caddy.https_port}")
    click = re.findall(rf'href="{base}(/c/[a-z0-9]+)"', html)[0]
    (pixel,) = re.findall(rf'src="{base}(/o/[a-z0-9]+)"', html)

    r = await fetch(client, caddy, TRACKING_HOST, pixel)  # the certificate, on demand
    assert r.status_code == 200, caddy.log.read_text(errors="replace")
    assert r.headers["content-type"] == "image/gif"
    assert r.headers["strict-transport-security"] == "max-age=31536000"
    # A client's own X-Forwarded-For is not believed: Caddy names the peer.
    r = await fetch(client, caddy, TRACKING_HOST, click, **{"x-forwarded-for": "203.0.113.9"})
    assert r.status_code == 302
    assert r.headers["location"] == "https://shop.example.net/"
    assert r.headers["strict-transport-security"] == "max-age=31536000"

    (opened,) = await https_service.wait_events(1, "example.com", event="opened")
    (clicked,) = await https_service.wait_events(1, "example.com", event="clicked")
    assert opened["ip"] == clicked["ip"] == CLIENT
    # The API through the public host, on its own certificate.
    r = await fetch(client, caddy, "mb.example.com", "/v3/domains")
    assert r.status_code == 401


async def test_no_certificate_for_a_name_of_no_domain(
        caddy: Caddy, client: httpx.AsyncClient, https_service: Service,
        monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = https_service.app.hosts
    asked: list[tuple[str, bool]] = []
    real = hosts.may_certify

    async def spy(name: str) -> bool:
        answer = await real(name)
        asked.append((name, answer))
        return bool(answer)

    monkeypatch.setattr(hosts, "may_certify", spy)
    names = ("nobody.example.com", "example.com", f"x.{TRACKING_HOST}")
    for name in names:
        with pytest.raises(httpx.ConnectError):
            await fetch(client, caddy, name, "/o/x")
    assert {(name, False) for name in names} <= set(asked)  # Caddy asked; mailbeacon said no
    r = await fetch(client, caddy, TRACKING_HOST, "/o/x")  # the tracking host is served
    assert r.status_code == 200
    assert (TRACKING_HOST, True) in asked
    stored = caddy.log.parent / "data"
    assert list(stored.rglob(f"{TRACKING_HOST}.crt"))
    assert not list(stored.rglob("*nobody*"))  # nothing stored for the others
