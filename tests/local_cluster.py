"""A real multi-node Ray cluster on 127.0.0.1 for node-kill tests (issue 28): raylets started
with ``ray start`` under one temp dir (a head, worker nodes joined with ``ray start --address``),
commands submitted with ``ray job submit`` (their driver runs on the head), a node killed with
its raylet and every process under it, everything stopped by that temp dir.

Never ``ray stop``: it would kill every Ray process on the machine, other sessions' too."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).parent / "ray")
# The GCS declares a silent node dead after period x threshold: seconds here, not ~30 s.
FAST_HEALTH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
               "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalCluster:
    """Raylets started with ``ray start`` under one temp dir; stopped by that dir."""

    def __init__(self) -> None:
        self.temp = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # unix socket paths stay short
        self.port, self.dash = free_port(), free_port()
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", **FAST_HEALTH}
        self.nodes: list[int] = []  # node-manager ports of the worker nodes, in start order

    def _start(self, *args: str) -> None:
        subprocess.run([RAY, "start", "--node-ip-address", "127.0.0.1", f"--temp-dir={self.temp}",
                        "--dashboard-agent-listen-port", str(free_port()), *args],
                       env=self.env, check=True, timeout=180, capture_output=True)

    def start_head(self, cpus: int = 0) -> None:
        self._start("--head", "--port", str(self.port), "--num-cpus", str(cpus),
                    "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                    "--dashboard-port", str(self.dash))

    def add_node(self, cpus: int) -> int:
        """A worker node; returns its node-manager port (what names its raylet process)."""
        port = free_port()
        self._start("--address", f"127.0.0.1:{self.port}", "--num-cpus", str(cpus),
                    "--node-manager-port", str(port))
        self.nodes.append(port)
        return port

    def node_processes(self, port: int) -> list[psutil.Process]:
        """The raylet of one node and every process under it (agents, workers, actors)."""
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if self.temp in cmd and f"--node_manager_port={port}" in cmd:
                return [proc, *proc.children(recursive=True)]
        return []

    def node_of(self, pid: int) -> int:
        """The node-manager port of the worker node running process ``pid``."""
        for port in self.nodes:
            if pid in {p.pid for p in self.node_processes(port)}:
                return port
        raise AssertionError(f"process {pid} runs on none of the worker nodes {self.nodes}")

    def kill_node(self, port: int) -> int:
        """SIGKILL a node's raylet and every process under it; returns how many."""
        procs = self.node_processes(port)
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=30)
        return len(procs)

    def submit(self, *command: str) -> subprocess.Popen:
        """``ray job submit -- COMMAND``: its driver runs on the head; output in ``stdout``."""
        cmd = [RAY, "job", "submit", "--address", f"http://127.0.0.1:{self.dash}", "--", *command]
        return subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    def stop(self) -> None:
        kill_processes_under(self.temp)
        shutil.rmtree(self.temp, ignore_errors=True)


def kill_processes_under(marker: str) -> None:
    """Kill every process whose command line names ``marker`` (a cluster's temp dir), with its
    children: `ray stop` would kill every Ray process on the machine, the test session's own too."""
    victims = set()
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(proc.info["cmdline"] or []):
                victims |= {proc, *proc.children(recursive=True)}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for proc in victims:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(victims), timeout=30)


def wait_for(what: str, done: Callable[[], object], proc: subprocess.Popen,
             timeout: float = 240.0) -> None:
    """Poll ``done`` until true; fails naming ``what`` when ``proc`` ends first or time is up."""
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            raise AssertionError(f"the job ended before {what}: {proc.stdout.read()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def finish(proc: subprocess.Popen) -> str:
    """The output of a submitted job that must exit 0."""
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    return out
