"""A Git repository on loopback, served over smart HTTP by git's own ``git http-backend``
(CGI) behind a small threaded HTTP server: Flux's Git client speaks only the smart
protocol, and no web server is installed here to host the CGI."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from inference_devkit.controlplane.kubectl import to_yaml
from inference_devkit.loopback import free_port

GIT = shutil.which("git") or "git"
# Commits made by the tests, whoever runs them: no global git configuration is needed.
AUTHOR = {"GIT_AUTHOR_NAME": "gitops-test", "GIT_AUTHOR_EMAIL": "gitops@test.invalid",
          "GIT_COMMITTER_NAME": "gitops-test", "GIT_COMMITTER_EMAIL": "gitops@test.invalid"}
_CHUNK = 64 * 1024


def git(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([GIT, *args], cwd=cwd, capture_output=True, text=True,
                            env=env, check=False, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result.stdout


class _CGIHandler(BaseHTTPRequestHandler):
    """One request → one ``git http-backend`` process, its CGI response translated."""

    server: _GitHTTPServer
    protocol_version = "HTTP/1.0"  # one request per connection: no length bookkeeping

    def do_GET(self) -> None:
        self._backend()

    def do_POST(self) -> None:
        self._backend()

    def _backend(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        env = {
            "PATH": self.server.path_env,
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": urllib.parse.unquote(url.path),
            "QUERY_STRING": url.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": self.headers.get("Content-Length", ""),
            "REMOTE_ADDR": self.client_address[0],
            "SERVER_PROTOCOL": self.request_version,
            # Pushes are refused unless the CGI sees an authenticated user.
            "REMOTE_USER": "gitops-test",
            "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        backend = subprocess.Popen([GIT, "http-backend"], env=env, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert backend.stdin is not None and backend.stdout is not None
        # Stream the body in: a push can be larger than we want to hold, and the backend
        # reads while it writes (a full pipe both ways would deadlock only if we buffered).
        writer = threading.Thread(target=self._copy_body, args=(backend.stdin,), daemon=True)
        writer.start()
        status, headers = self._cgi_headers(backend.stdout)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        shutil.copyfileobj(backend.stdout, self.wfile, _CHUNK)
        writer.join(timeout=60)
        backend.wait(timeout=60)

    def _copy_body(self, stdin: Any) -> None:
        remaining = int(self.headers.get("Content-Length") or 0)
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        try:
            if chunked:
                # git sends large pushes chunked; the CGI wants the plain bytes.
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    stdin.write(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
            while remaining > 0:
                data = self.rfile.read(min(remaining, _CHUNK))
                if not data:
                    break
                stdin.write(data)
                remaining -= len(data)
        finally:
            stdin.close()

    @staticmethod
    def _cgi_headers(stdout: Any) -> tuple[int, list[tuple[str, str]]]:
        status, headers = 200, []
        while line := stdout.readline().decode("latin-1").rstrip("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            else:
                headers.append((name, value.strip()))
        return status, headers

    def log_message(self, *args: Any) -> None:
        """Quiet: a failed fetch shows in the GitRepository's status, where users look."""


class _GitHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, port: int, path_env: str) -> None:
        super().__init__(("127.0.0.1", port), _CGIHandler)
        self.root = root
        self.path_env = path_env


class GitServer:
    """A bare repository ``<root>/<name>.git`` on ``http://127.0.0.1:<port>/``, and a work
    clone beside it that the tests commit to and push from, as a user would."""

    def __init__(self, root: Path, name: str = "platform", branch: str = "main") -> None:
        self.root = root / "served"
        self.bare = self.root / f"{name}.git"
        self.work = root / "work"
        self.branch = branch
        self.port = free_port()
        self._server: _GitHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.bare.name}"

    def start(self) -> GitServer:
        self.root.mkdir(parents=True, exist_ok=True)
        git("init", "--bare", f"--initial-branch={self.branch}", str(self.bare), cwd=self.root)
        git("config", "http.receivepack", "true", cwd=self.bare)
        self._server = _GitHTTPServer(self.root, self.port, os.environ.get("PATH", "/usr/bin:/bin"))
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         name="git-http").start()
        # The work clone goes through the HTTP server too: every push tests the server.
        git("clone", self.url, str(self.work), cwd=self.root)
        git("checkout", "-b", self.branch, cwd=self.work)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def commit(self, files: dict[str, str | None], message: str) -> str:
        """Write (or, for None, delete) files in the work clone, commit and push; the new
        commit's SHA."""
        for relative, content in files.items():
            path = self.work / relative
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
        env = {**os.environ, **AUTHOR}
        git("add", "--all", ".", cwd=self.work, env=env)
        git("commit", "--allow-empty", "-m", message, cwd=self.work, env=env)
        git("push", "origin", f"HEAD:{self.branch}", cwd=self.work, env=env)
        return git("rev-parse", "HEAD", cwd=self.work).strip()

    def write_folder(self, folder: str, files: dict[str, list[dict[str, Any]] | None],
                     message: str = "update") -> str:
        """Write manifests (or, for None, delete files) in one folder, in one commit; its
        SHA."""
        return self.commit({f"{folder}/{name}": None if docs is None else to_yaml(list(docs))
                            for name, docs in files.items()}, message)
