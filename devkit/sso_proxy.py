"""A real nginx as the single sign-on proxy in front of an edge (Debian's nginx-light).

It asks for HTTP basic auth, passes the signed-in user in X-Forwarded-User and reaches the edge
from 127.0.0.2 (`proxy_bind`), so that the edge can tell it from direct clients on 127.0.0.1.
Locations: `/` (scopes: the gateway's defaults), `/readonly/` (x-openclaw-scopes:
operator.read), `/admin/` (operator.admin, operator.read, operator.write) and `/anonymous/`
(no sign-in, so no user). Every location overwrites the identity headers a client sends.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from pathlib import Path

import httpx

from devkit.processes import Process, free_port, wait_until

NGINX = Path("/usr/sbin/nginx")
PROXY_ADDRESS = "127.0.0.2"
_SCOPES = {
    "": None,
    "readonly/": "operator.read",
    "admin/": "operator.admin,operator.read,operator.write",
}


def hashed(password: str) -> str:
    """An htpasswd entry's password in nginx's {SSHA} scheme (salted SHA-1)."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _location(prefix: str, edge: str, scopes: str | None, signed_in: bool = True) -> str:
    sign_in = (
        'auth_basic "clawgate"; auth_basic_user_file htpasswd;' if signed_in else "auth_basic off;"
    )
    return f"""
        location /{prefix} {{
            {sign_in}
            proxy_pass http://{edge}/;
            proxy_bind {PROXY_ADDRESS};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-User $remote_user;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-OpenClaw-Scopes "{scopes or ""}";
            proxy_set_header Authorization "";
            proxy_read_timeout 300s;
        }}"""


def start_sso_proxy(tmp_path: Path, edge_port: int, users: dict[str, str]) -> tuple[Process, str]:
    """Starts nginx for `users` (name: password); returns it and its base URL."""
    if not NGINX.exists() and shutil.which("nginx") is None:
        raise FileNotFoundError("nginx is not installed (apt-get install -y nginx-light)")
    prefix = tmp_path / "nginx"
    for folder in ("logs", "temp"):
        (prefix / folder).mkdir(parents=True, exist_ok=True)
    (prefix / "htpasswd").write_text(
        "".join(f"{name}:{hashed(password)}\n" for name, password in users.items())
    )
    port = free_port()
    edge = f"127.0.0.1:{edge_port}"
    locations = "".join(_location(path, edge, scopes) for path, scopes in _SCOPES.items())
    locations += _location("anonymous/", edge, None, signed_in=False)
    temp = prefix / "temp"
    (prefix / "nginx.conf").write_text(
        f"""
daemon off;
# One process, as the test's own user: run as root, nginx's workers would become `nobody`,
# who cannot read the test's private folder.
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    client_max_body_size 32m;
    server {{
        listen 127.0.0.1:{port};
        {locations}
    }}
}}
"""
    )
    process = Process(
        [str(NGINX), "-c", str(prefix / "nginx.conf"), "-p", str(prefix)],
        prefix / "logs" / "stdout.log",
    ).start()
    base_url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(base_url), 10, "nginx", process)
    return process, base_url


def _answers(base_url: str) -> bool:
    try:
        httpx.get(f"{base_url}/anonymous/healthz", timeout=1)
    except httpx.HTTPError:
        return False
    return True
