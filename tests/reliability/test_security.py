"""Security defaults: loopback by default, a visible warning otherwise, gradio auth that never leaks, no telemetry.

The whole test suite runs under the network guard of ``tests/conftest.py``: a connection (or a name lookup)
beyond this machine fails and fails the run. The tests here check the guard itself, then that the client, with
no telemetry switches set at all, reaches nothing but the server it was given.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_client
from hostile import HostileGateway

from blender_movie_director.backend.wan2gp import (
    ClientSettings,
    JobFailedError,
    Wan2GPClient,
    Wan2GPConnectionError,
)

pytestmark = pytest.mark.timeout(90)

SECRET = "s3cret-Pa55-7Q"  # never to be seen in a log line, an error, a repr or the console


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The emulator behind gradio's own login (``launch(auth=...)``), as ``python wgp.py --auth`` would be."""
    from wan2gp_emulator._app import build_app
    from wan2gp_emulator._wangp import WanGP

    out = tmp_path_factory.mktemp("auth-emulator")
    engine = WanGP("v12", output_dir=out, step_seconds=0.05, missing_weights=False, crash_after_steps=None)
    demo, _ = build_app(engine)
    demo.queue(default_concurrency_limit=1)
    with socket.socket() as probe:  # a port of its own: WanGP itself may well be on 7860 on this machine
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                auth=("director", SECRET),
                allowed_paths=[str(out)], show_error=False)
    yield demo.local_url
    engine.stopping.set()
    demo.close()


def _everything_said(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> str:
    out, err = capsys.readouterr()
    return "\n".join(r.getMessage() for r in caplog.records) + out + err


def test_the_default_server_is_this_machine(tmp_path):
    client = Wan2GPClient(output_dir=tmp_path)
    assert client.settings.url == "http://127.0.0.1:7860"
    assert client.security_warnings == []


@pytest.mark.parametrize(("url", "auth", "words"), [
    ("http://192.0.2.10:7860", None, ["not encrypted", "anyone who reaches it"]),
    ("http://gpu-box.lan:7860", ("director", SECRET), ["not encrypted", "user name and password"]),
    ("http://director:pw@127.0.0.1:7860", None, ["contains a user name or password"]),
])
def test_a_server_beyond_this_machine_gets_a_visible_warning(url, auth, words, tmp_path, caplog, network_guard):
    client = Wan2GPClient(url, output_dir=tmp_path, auth=auth)
    text = " ".join(client.security_warnings)
    assert all(w in text for w in words), text
    assert "pw@" not in client.server_address and SECRET not in text
    with caplog.at_level(logging.WARNING, logger="blender_movie_director"):
        with pytest.raises(Wan2GPConnectionError):
            client.settings.retries = client.settings.retries.model_copy(update={"attempts": 1})
            client.connect()  # the guard refuses the connection; the warning was logged before it
    assert any(words[0] in r.getMessage() for r in caplog.records)
    network_guard.blocked.clear()  # we reached out on purpose


def test_the_warning_about_a_server_is_given_once_per_process(tmp_path, caplog, network_guard):
    url = "http://192.0.2.77:7860"
    with caplog.at_level(logging.WARNING, logger="blender_movie_director"):
        for _ in range(3):  # as a CLI command, a pool or Blender does: several clients, several connects
            client = Wan2GPClient(url, output_dir=tmp_path)
            client.settings.retries = client.settings.retries.model_copy(update={"attempts": 1})
            with pytest.raises(Wan2GPConnectionError):
                client.connect()
    warned = [r for r in caplog.records if "not encrypted" in r.getMessage()]
    assert len(warned) == 1 and "192.0.2.77" in warned[0].getMessage()
    network_guard.blocked.clear()


def test_https_beyond_this_machine_is_not_warned_about_encryption(tmp_path):
    client = Wan2GPClient("https://wangp.studio.example", output_dir=tmp_path, auth=("director", SECRET))
    assert not any("not encrypted" in w for w in client.security_warnings)


def test_the_guard_refuses_and_records_any_connection_beyond_loopback(network_guard):
    with pytest.raises(OSError, match="beyond this machine"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    with pytest.raises(OSError, match="beyond this machine"):
        socket.getaddrinfo("huggingface.co", 443)
    assert len(network_guard.blocked) == 2
    network_guard.blocked.clear()


def test_auth_from_the_environment_works_and_the_password_is_never_shown(auth_server, tmp_path, monkeypatch, caplog,
                                                                         capsys, network_guard):
    for name in ("HF_HUB_DISABLE_TELEMETRY", "GRADIO_ANALYTICS_ENABLED", "DO_NOT_TRACK"):
        monkeypatch.delenv(name, raising=False)  # the client itself must not phone home, switches or not
    monkeypatch.setenv("WAN2GP_URL", auth_server)
    monkeypatch.setenv("WAN2GP_USERNAME", "director")
    monkeypatch.setenv("WAN2GP_PASSWORD", SECRET)
    monkeypatch.setenv("WAN2GP_OUTPUT_DIR", str(tmp_path))
    with caplog.at_level(logging.DEBUG):
        with Wan2GPClient() as client:
            result = client.generate(prompt="behind a login", frames=5, steps=1)
            shown = [repr(client.settings), str(client.settings), repr(result), result.model_dump_json(),
                     str(client.get_server_status())]
    assert result.video_path.exists()
    assert SECRET not in "\n".join(shown) + _everything_said(caplog, capsys)
    assert not network_guard.blocked  # nothing but the server: no telemetry, no Hugging Face


def test_a_wrong_password_is_refused_clearly_without_showing_it(auth_server, tmp_path, caplog, capsys):
    wrong = "wr0ng-" + SECRET
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(Wan2GPConnectionError, match="refused the user name or password") as caught:
            make_client(auth_server, tmp_path, auth=("director", wrong)).connect()
    assert wrong not in str(caught.value) + repr(caught.value) + _everything_said(caplog, capsys)


def test_a_missing_password_says_what_to_do(auth_server, tmp_path):
    with pytest.raises(Wan2GPConnectionError, match="WAN2GP_USERNAME"):
        make_client(auth_server, tmp_path).connect()


def test_a_server_that_echoes_the_password_has_it_redacted(auth_server, tmp_path, caplog, capsys):
    gateway = HostileGateway(auth_server)
    gateway.start()
    try:
        gateway.rewrite_sse = _echo_password_in_errors
        with caplog.at_level(logging.DEBUG):
            with make_client(gateway.url, tmp_path, auth=("director", SECRET)) as client:
                with pytest.raises(JobFailedError) as caught:
                    client.generate(prompt="[[fail]] an error that repeats what it was sent", frames=5, steps=1)
        assert "***" in str(caught.value)
        assert SECRET not in str(caught.value) + repr(caught.value) + _everything_said(caplog, capsys)
    finally:
        gateway.stop()


def _echo_password_in_errors(line: bytes) -> bytes:
    """The server's error messages come back with the password in them (a careless server or proxy)."""
    if b'"process_completed"' in line and b'"success":false' in line.replace(b": ", b":"):
        return line.replace(b"[[fail]]", f"login director:{SECRET} failed; [[fail]]".encode())
    return line


def test_settings_never_show_the_password(monkeypatch, tmp_path: Path):
    settings = ClientSettings(url="http://127.0.0.1:7860", username="director", password=SECRET, output_dir=tmp_path)
    assert SECRET not in repr(settings) + str(settings) + settings.model_dump_json()


@pytest.fixture
def self_signed_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An https server on loopback whose certificate nobody signed (as a studio's own WanGP behind TLS may have).
    It answers every GET with a small JSON; yields its URL and the certificate's file."""
    import datetime
    import ipaddress
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = b'{"app_id": "not-wangp"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert_file
    finally:
        server.shutdown()
        server.server_close()


def test_an_https_server_is_checked_against_the_trusted_certificates_and_only_those(self_signed_server, tmp_path,
                                                                                    monkeypatch):
    """Every client of the project shares one certificate check (``_urls.tls_context``, built once for speed):
    it must still refuse a certificate nobody signed, through each way in, and trust one that
    ``SSL_CERT_FILE`` names, as httpx's own default does."""
    from blender_movie_director.backend._urls import tls_context
    from blender_movie_director.backend.health import check_health

    url, cert_file = self_signed_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    tls_context.cache_clear()
    try:
        report = check_health(url, timeout=5)
        assert not report.reachable and "CERTIFICATE_VERIFY_FAILED" in (report.error or ""), report
        for address in (url, url + "/mcp"):  # the web UI's transport and the MCP one
            with pytest.raises(Wan2GPConnectionError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
                Wan2GPClient(address, output_dir=tmp_path, timeouts={"connect": 5, "call": 5}).connect()

        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # the studio trusts its own certificate
        tls_context.cache_clear()
        report = check_health(url, timeout=5)
        assert report.reachable and report.kind != "wangp", report
    finally:
        tls_context.cache_clear()  # the next test builds it again from the real environment
