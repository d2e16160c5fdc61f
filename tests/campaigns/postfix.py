"""A private Debian Postfix on loopback for the transport tests: its own configuration,
queue and data directories under a temporary directory, ``smtpd`` listening on
127.0.0.1 only, relaying every accepted message to an aiosmtpd sink (so a test reads the
bytes Postfix delivered), and a ``check_recipient_access`` map that greylists (450) or
refuses (550) chosen recipients. Postfix's master runs as root and drops to the
``postfix`` user, as Debian's package sets it up; ``scripts/system-deps.sh`` installs it.

Ports: ``POSTFIX_TEST_PORT`` / ``POSTFIX_SINK_PORT`` if set (a shared machine hands out
ports), else free ones."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.campaigns.peers import SmtpSink, free_port, wait_until

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-test.localdomain
mydomain = localdomain
myorigin = localdomain
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port}
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_timeout = 300s
smtpd_recipient_restrictions = check_recipient_access texthash:{root}/etc/access, permit_mynetworks, reject
maillog_file = /dev/stdout
"""


def available() -> str:
    """Why Postfix cannot run here, or "" if it can."""
    if shutil.which("postfix") is None:
        return "Debian's postfix is not installed (scripts/system-deps.sh installs it)"
    if os.geteuid() != 0:
        return "Postfix's master must start as root"
    return ""


class Postfix:
    def __init__(self, access: dict[str, str]) -> None:
        self.port = int(os.environ.get("POSTFIX_TEST_PORT") or free_port())
        self.sink = SmtpSink()
        sink_port = os.environ.get("POSTFIX_SINK_PORT")
        if sink_port:  # SmtpSink picks a free port; move it to the one we were given
            from aiosmtpd.controller import Controller

            self.sink.port = int(sink_port)
            self.sink.controller = Controller(self.sink, hostname="127.0.0.1", port=self.sink.port)
        self.root = Path(tempfile.mkdtemp(prefix="campaigns-postfix-"))
        self.root.chmod(0o755)
        for name in ("etc", "queue", "data"):
            (self.root / name).mkdir()
        shutil.chown(self.root / "data", user="postfix")
        (self.root / "etc" / "main.cf").write_text(MAIN_CF.format(root=self.root, sink_port=self.sink.port))
        (self.root / "etc" / "master.cf").write_text(MASTER_CF.format(port=self.port))
        (self.root / "etc" / "access").write_text("".join(f"{addr} {reply}\n" for addr, reply in access.items()))
        self.log_path = self.root / "maillog"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Postfix:
        self.sink.start()
        self.process = subprocess.Popen(
            ["postfix", "-c", str(self.root / "etc"), "start-fg"],
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._listening, timeout=30, interval=0.1, message=f"postfix on {self.port} ({self.log_path})")
        return self

    def _listening(self) -> bool:
        import socket

        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"postfix exited: {self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                return sock.recv(64).startswith(b"220")
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            subprocess.run(["postfix", "-c", str(self.root / "etc"), "stop"], capture_output=True, timeout=30)
        if self.process is not None:
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=10)
        self.sink.stop()
        shutil.rmtree(self.root, ignore_errors=True)
