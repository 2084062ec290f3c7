"""A fork server for ``python -m billhive ...`` child processes in tests.

Importing billhive takes ~2 s of CPU (starlette, SQLAlchemy, alembic, fpdf, stripe, ...), and the
process-level tests (crash, restart, disk-full, heavy reads) start a server two or three times each:
on this 2-core machine that import was a large part of the suite's run time. The zygote is one
child process per test worker that imports ``billhive.cli`` once and then forks, per request, a
child that runs ``billhive.cli.main(argv)`` exactly as ``python -m billhive`` does: its own process
(its own pid, killed by SIGKILL like any other), its own environment, working directory and output,
and its exit status (negative: the signal that ended it, as ``subprocess.Popen`` reports it).

Nothing is imported but billhive's modules, and the zygote holds no threads, connections or event
loops when it forks; billhive reads its configuration (``Config.from_env``, the failpoints) at run
time, not at import, so a child configured by its environment behaves as a fresh process would.

Protocol (``Zygote`` below): a SOCK_SEQPACKET socket pair; each request is one JSON message
(argv, env, cwd) carrying three file descriptors: the child's standard output and error, and one
end of a new socket pair of the request's own, on which the zygote answers ``{"pid": n}`` and,
once the child has exited and been reaped, ``{"status": n}``. When the test worker goes away (the
control socket closes) the zygote kills its children and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from billhive.cli import main as billhive_main  # the point of the zygote: imported once, before any fork

ROOT = Path(__file__).resolve().parents[2]


# ---- the zygote process --------------------------------------------------------------------------------

def _child(request: dict[str, Any], out: int, err: int) -> None:
    """In the forked child: become ``python -m billhive <argv>``; never returns (SystemExit)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.closerange(3, 1 << 16)  # nothing of the zygote's (sockets, pipes) stays open in the server
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [str(ROOT / "billhive" / "__main__.py"), *request["argv"]]
    raise SystemExit(billhive_main(request["argv"]))


def _serve(control: socket.socket) -> None:
    children: dict[int, socket.socket] = {}
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(control, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj is control:
                try:
                    msg, fds, _flags, _addr = socket.recv_fds(control, 1 << 20, 3)
                except InterruptedError:
                    continue
                if not msg:  # the test worker is gone
                    for pid in children:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    return
                channel = socket.socket(fileno=fds[0])
                pid = os.fork()
                if pid == 0:
                    _child(json.loads(msg), fds[1], fds[2])
                os.close(fds[1])
                os.close(fds[2])
                children[pid] = channel
                channel.send(json.dumps({"pid": pid}).encode())
            else:
                os.read(wake_r, 4096)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            channel = children.pop(pid)
            with contextlib.suppress(OSError):
                channel.send(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode())
            channel.close()


# ---- the test worker's side ----------------------------------------------------------------------------

class Forked:
    """A child of the zygote, with the part of ``subprocess.Popen``'s interface the tests use."""

    def __init__(self, channel: socket.socket, pid: int):
        self.channel = channel
        self.pid = pid
        self.returncode: int | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(pid)  # signals reach this process, never a reused pid
        except ProcessLookupError:  # already gone (and reaped): its status is on the channel
            self._pidfd = None

    def _status(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            self.channel.settimeout(timeout)
            try:
                msg = self.channel.recv(4096)
            except (TimeoutError, BlockingIOError):
                return None
            if not msg:
                raise RuntimeError(f"the zygote lost its child {self.pid}")
            self.returncode = json.loads(msg)["status"]
            self.channel.close()
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        return self.returncode

    def poll(self) -> int | None:
        return self._status(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._status(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"billhive (pid {self.pid})", timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None and self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """This test worker's zygote, started on first use."""

    _lock = threading.Lock()
    _instance: Zygote | None = None

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.zygote", str(theirs.fileno())],
                                     cwd=str(ROOT), env=env, pass_fds=(theirs.fileno(),),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        theirs.close()
        self.control = ours
        self.pid = os.getpid()

    @classmethod
    def get(cls) -> Zygote:
        with cls._lock:
            if cls._instance is None or cls._instance.pid != os.getpid() or cls._instance.proc.poll() is not None:
                cls._instance = cls()
            return cls._instance

    def spawn(self, argv: list[str], *, env: dict[str, str], cwd: str, stdout: int, stderr: int) -> Forked:
        """``python -m billhive *argv`` with this environment and working directory, its standard output
        and error on these file descriptors (a log file's, a pipe's, /dev/null's)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        request = json.dumps({"argv": argv, "env": env, "cwd": cwd}).encode()
        with self._lock:
            socket.send_fds(self.control, [request], [theirs.fileno(), stdout, stderr])
        theirs.close()
        ours.settimeout(60)
        msg = ours.recv(4096)
        if not msg:
            raise RuntimeError("the zygote did not fork (is it running?)")
        return Forked(ours, json.loads(msg)["pid"])


def run(argv: list[str], *, env: dict[str, str], cwd: str, timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run([python, "-m", "billhive", *argv], capture_output=True, text=True, ...)``, forked."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        child = Zygote.get().spawn(argv, env=env, cwd=cwd, stdout=out_w, stderr=err_w)
    finally:
        os.close(out_w)
        os.close(err_w)
    captured: dict[int, bytes] = {}

    def drain(fd: int) -> None:
        with open(fd, "rb") as f:
            captured[fd] = f.read()
    readers = [threading.Thread(target=drain, args=(fd,), daemon=True) for fd in (out_r, err_r)]
    for r in readers:
        r.start()
    try:
        code = child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(30)
        raise
    for r in readers:
        r.join(timeout)
    return subprocess.CompletedProcess(["billhive", *argv], code, captured[out_r].decode(), captured[err_r].decode())


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    _serve(control)


if __name__ == "__main__":
    main()
