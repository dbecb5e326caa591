"""A real OpenSSH server for the batch tests: ``sshd`` with its SFTP subsystem on a free loopback port.

Throwaway host and user keys live under the test's tmp_path; the test logs in as the current user with the user
key, and lands in its own directory (``root``). Nothing here is a stub: paramiko talks to OpenSSH as it would to a
contractor's server. If ``sshd`` is missing the tests fail loudly (SshdMissing); scripts/test.sh installs it.

A server started for password login instead admits only the system user ``casebridge-sftp``, created on first use
and given a fresh random password each time, locked again when the server stops. sshd checks that password against
the system's own account database, as a contractor's server would; both steps need root (PasswordLoginNeedsRoot).
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

#: The system account a password-login server admits.
PASSWORD_USER = "casebridge-sftp"
SSHD_CANDIDATES = (shutil.which("sshd"), "/usr/sbin/sshd")
CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication {keys}
PasswordAuthentication {passwords}
KbdInteractiveAuthentication no
AuthorizedKeysFile {authorized_keys}
AllowUsers {user}
Subsystem sftp internal-sftp -d {root}
ForceCommand internal-sftp -d {root}
LogLevel ERROR
"""


class SshdMissing(RuntimeError):
    """No sshd on this machine: a test needing it fails (never skips)."""


def find_sshd() -> str:
    for candidate in SSHD_CANDIDATES:
        if candidate and Path(candidate).is_file():
            return candidate
    raise SshdMissing("OpenSSH's sshd is not installed: run the suite with scripts/test.sh, or "
                      "`apt-get install -y openssh-server`")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def keygen(path: Path, comment: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path


@dataclass
class SftpServer:
    """A running sshd: where it listens, the directory the user lands in, and the files a client needs."""

    host: str
    port: int
    user: str
    root: Path
    user_key: Path
    host_key: Path
    known_hosts: Path
    process: subprocess.Popen[bytes]
    #: Set when the server admits a password login (and no key) for ``user``.
    password: str | None = field(default=None, repr=False)

    def sessions(self) -> list[int]:
        """Process ids of the sshd children serving connections (all descendants of the listener)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return found

    @contextmanager
    def login(self) -> Iterator[paramiko.SFTPClient]:
        """An SFTP session of our own, as a contractor's system or a plain script would open one: the host key
        checked against ``known_hosts``, and the user key (or, on a password-login server, the password) alone."""
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        credentials = ({"password": self.password} if self.password is not None
                       else {"key_filename": str(self.user_key)})
        client.connect(self.host, port=self.port, username=self.user, look_for_keys=False, allow_agent=False,
                       **credentials)
        sftp = client.open_sftp()
        try:
            yield sftp
        finally:
            sftp.close()
            client.close()

    def cut_connections(self) -> int:
        """Kill every connection's sshd process, as a network failure or server crash would."""
        killed = 0
        for pid in self.sessions():
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        return killed

    def stop(self) -> None:
        self.cut_connections()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.password is not None:
            subprocess.run(["usermod", "--lock", self.user], check=True, capture_output=True)
            shutil.rmtree(self.root, ignore_errors=True)


class PasswordLoginNeedsRoot(RuntimeError):
    """Only root can give the account a password, and only an sshd run as root can check it."""


def password_user_root() -> tuple[str, Path]:
    """A fresh password for ``PASSWORD_USER`` (created if missing), and an empty directory it owns to land in
    (outside the test's tmp_path, which other users cannot enter)."""
    if os.geteuid() != 0:
        raise PasswordLoginNeedsRoot("a password-login SFTP server needs root: it gives the system account "
                                     f"{PASSWORD_USER} a password, and sshd must run as root to check it")
    if subprocess.run(["id", "-u", PASSWORD_USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PASSWORD_USER],
                       check=True, capture_output=True)
    password = secrets.token_urlsafe(18)
    subprocess.run(["chpasswd"], input=f"{PASSWORD_USER}:{password}\n", text=True, check=True, capture_output=True)
    root = Path(tempfile.mkdtemp(prefix="casebridge-sftp-"))
    shutil.chown(root, PASSWORD_USER)
    return password, root


def start_sftp_server(base: Path, password_login: bool = False) -> SftpServer:
    sshd = find_sshd()
    base.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory, when root
    host_key = keygen(base / "host_ed25519", "casebridge-test-host")
    user_key = keygen(base / "user_ed25519", "casebridge-test-user")
    authorized = base / "authorized_keys"
    authorized.write_text(Path(f"{user_key}.pub").read_text())
    password: str | None = None
    if password_login:
        user = PASSWORD_USER
        password, root = password_user_root()
    else:
        user = getpass.getuser()
        root = base / "home"
        root.mkdir()
    port = free_port()
    config = base / "sshd_config"
    config.write_text(CONFIG.format(port=port, host_key=host_key, authorized_keys=authorized, user=user, root=root,
                                    keys="no" if password_login else "yes",
                                    passwords="yes" if password_login else "no"))
    process = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {Path(f'{host_key}.pub').read_text().split(' #')[0]}")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            if password_login:
                shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"sshd exited at start: {output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                if probe.recv(4).startswith(b"SSH-"):
                    break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        if password_login:
            shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError("sshd did not start listening")
    return SftpServer("127.0.0.1", port, user, root, user_key, host_key, known_hosts, process, password)


@contextmanager
def sftp_server(base: Path, password_login: bool = False) -> Iterator[SftpServer]:
    server = start_sftp_server(base, password_login)
    try:
        yield server
    finally:
        server.stop()
