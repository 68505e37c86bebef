"""A real Redis Cluster of three masters, started from `redis-server` for the test session.

Each node is a `redis-server --cluster-enabled yes` on a free port in its own temp dir. The
slots are split in three with CLUSTER ADDSLOTS and the nodes introduced with CLUSTER MEET
(what `redis-cli --cluster create` does, without needing redis-cli). Used as the third storage
backend and by the subprocess tests with `REDIS_CLUSTER=true`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.redis_server import RedisUnavailable, free_port

SLOTS = 16384
BUS_OFFSET = 10000  # a node also listens on port + 10000 (the cluster bus)


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    while True:
        port = free_port()
        if port + BUS_OFFSET > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + BUS_OFFSET))
            except OSError:
                continue
        return port


class RedisClusterServers:
    def __init__(self, binary: str, masters: int = 3) -> None:
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="tjb-cluster-"))
        self.ports = [cluster_port() for _ in range(masters)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """Any node will do; this is the first one."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def node_url(self, index: int) -> str:
        return f"redis://127.0.0.1:{self.ports[index]}/0"

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        for port in self.ports:
            node_dir = self.dir / str(port)
            node_dir.mkdir()
            self.procs.append(
                subprocess.Popen(
                    [
                        self.binary,
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "5000",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(node_dir),
                        "--loglevel",
                        "warning",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        clients = [redis.Redis(port=p) for p in self.ports]
        try:
            for client, proc in zip(clients, self.procs, strict=True):
                _wait(lambda c=client: c.ping(), proc, "a cluster node did not start")
            share = SLOTS // len(clients)
            for i, client in enumerate(clients):
                last = SLOTS if i == len(clients) - 1 else (i + 1) * share
                client.execute_command("CLUSTER", "ADDSLOTS", *range(i * share, last))  # type: ignore[no-untyped-call]
            for port in self.ports[1:]:
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)  # type: ignore[no-untyped-call]
            for client, proc in zip(clients, self.procs, strict=True):
                _wait(
                    lambda c=client: (
                        c.execute_command("CLUSTER", "INFO").decode().startswith("cluster_state:ok")
                    ),
                    proc,
                    "the cluster did not come up",
                    within=30,
                )
            # Every node must know every other one, or a client may be redirected to a node
            # that has not heard of the slot's owner yet.
            for client, proc in zip(clients, self.procs, strict=True):
                _wait(
                    lambda c=client: (
                        len(c.execute_command("CLUSTER", "NODES").splitlines()) == len(clients)
                    ),
                    proc,
                    "the nodes did not meet",
                    within=30,
                )
        finally:
            for client in clients:
                client.close()

    def flush(self) -> None:
        for port in self.ports:
            client = redis.Redis(port=port)
            client.flushall()
            client.close()

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait(
    ready: object, proc: subprocess.Popen[bytes], message: str, *, within: float = 10.0
) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if callable(ready) and ready():
                return
        except redis.ConnectionError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RedisUnavailable(message)
        time.sleep(0.05)
