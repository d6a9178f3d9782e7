"""The embedded server as `make run` starts it: settings from an empty environment, SQLite, in-process tasks."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Everything tests/settings.py or a developer's shell may have set; the embedded server runs without any of it.
CONFIGURATION = (
    "DJANGO_SETTINGS_MODULE",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "SECRET_KEY",
    "DEBUG",
    "OIDC_RSA_PRIVATE_KEY",
    "COUNTERSIGN_ISSUER",
    "COUNTERSIGN_PUBLIC_URL",
    "LOG_LEVEL",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[str, dict, Path]]:
    env = _embedded_env(tmp_path)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--no-input", "-v", "0"], env=env, cwd=ROOT, check=True)
    demo = subprocess.run(
        [*manage, "bootstrap_demo", "--json"], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    )
    port = _free_port()
    log = tmp_path / "server.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield base, json.loads(demo.stdout), log
    finally:
        server.terminate()
        server.wait(timeout=10)


def _post(url: str, form: dict[str, str], client_id: str, secret: str) -> tuple[int, dict]:
    credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    request = urllib.request.Request(
        url, data=urllib.parse.urlencode(form).encode(), headers={"Authorization": f"Basic {credentials}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_embedded_server_logs_no_warnings(embedded: tuple[str, dict, Path]) -> None:
    base, demo, log = embedded
    agent = demo["agent"]
    for message in ("Order 4711", "Order 4712"):
        status, body = _post(
            f"{base}/oauth/bc-authorize/",
            {"scope": "openid profile", "login_hint": "demo", "binding_message": message},
            agent["client_id"],
            agent["client_secret"],
        )
        assert status == 200, body
        status, body = _post(
            f"{base}/oauth/token/",
            {"grant_type": "urn:openid:params:grant-type:ciba", "auth_req_id": body["auth_req_id"]},
            agent["client_id"],
            agent["client_secret"],
        )
        assert (status, body["error"]) == (400, "authorization_pending")
    output = log.read_text()
    # The prompts ran in-process: the console channel printed both.
    assert output.count("Approval prompt for demo") == 2, output
    assert "No hostname was supplied" not in output
    assert [line for line in output.splitlines() if " WARNING " in line or " ERROR " in line] == []


def _embedded_env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURATION and not k.startswith("PYTEST")}
    env["COUNTERSIGN_VAR_DIR"] = str(var_dir)
    return env


def _can_sign_in(env: dict[str, str], username: str, password: str) -> bool:
    check = (
        "from django.contrib.auth import authenticate; "
        f"user = authenticate(username={username!r}, password={password!r}); "
        "print(bool(user and user.is_superuser and user.is_staff))"
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "--no-imports", "-c", check],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() == "True"


def test_make_admin_creates_the_first_admin_without_questions(tmp_path: Path) -> None:
    env = _embedded_env(tmp_path)
    env.pop("DJANGO_SUPERUSER_PASSWORD", None)
    made = subprocess.run(
        ["make", "-s", "admin"], env=env, cwd=ROOT, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    password = made.stdout.rsplit("password: ", 1)[1].strip()
    assert len(password) >= 16
    assert _can_sign_in(env, "admin", password)

    # Again: the admin exists, and make says so instead of replacing it.
    again = subprocess.run(["make", "-s", "admin"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode != 0
    assert "already taken" in again.stderr
    assert _can_sign_in(env, "admin", password)


def test_make_admin_takes_the_password_from_the_environment(tmp_path: Path) -> None:
    env = {**_embedded_env(tmp_path), "DJANGO_SUPERUSER_PASSWORD": "correct horse battery staple"}
    made = subprocess.run(
        ["make", "-s", "admin", "ADMIN_USERNAME=ops", "ADMIN_EMAIL=ops@example.com"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    assert "password:" not in made.stdout  # the caller chose it; it is never echoed
    assert _can_sign_in(env, "ops", "correct horse battery staple")
