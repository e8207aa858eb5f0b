#!/usr/bin/env python3
"""kv-web as an ops charm: a page that counts its visits in the related kv-store.

The kv interface, as this side (the requirer) sees it:
  relation.data[self.app]      (leader writes)  database = config `database`
  relation.data[self.unit]     (every unit)     client-address = our address
  relation.data[relation.app]  (we read)        username, password, database
  relation.data[unit]          (we read)        host, port of each kv-store unit
"""

import json
import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import ops

logger = logging.getLogger(__name__)

CREDENTIAL_KEYS = ("username", "password", "database")


class OpsKvWebCharm(ops.CharmBase):
    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        # Beside the charm dir, not in it (a refresh rewrites the charm files), and
        # named after the unit: several units can share one host.
        unit_slug = self.unit.name.replace("/", "-")
        self.state_dir = self.charm_dir.parent / f"workload-{unit_slug}"
        self.kv_conf = self.state_dir / "kv.json"  # what the server uses; absent = no kv-store
        self.kv_unit = self.state_dir / "kv-unit"  # the kv-store unit we talk to, kept while it stays
        self.pidfile = self.state_dir / "server.pid"
        self.portfile = self.state_dir / "port"
        self.addrfile = self.state_dir / "address"
        self.started = self.state_dir / "started"
        self.log = self.state_dir / "server.log"

        framework.observe(self.on.install, self._on_install)
        framework.observe(self.on.start, self._on_start)
        framework.observe(self.on.upgrade_charm, self._on_upgrade_charm)
        framework.observe(self.on.stop, self._on_stop)
        framework.observe(self.on.remove, self._on_remove)
        # Everything else converges on the relation data as it is now.
        for event in (
            self.on.config_changed,
            self.on.leader_elected,
            self.on.update_status,
            self.on.kv_relation_created,
            self.on.kv_relation_joined,
            self.on.kv_relation_changed,
            self.on.kv_relation_departed,
            self.on.kv_relation_broken,
        ):
            framework.observe(event, self._converge)

    # ---- events ---------------------------------------------------------------

    def _on_install(self, _: ops.InstallEvent):
        self._make_state_dir()
        self.unit.set_workload_version(sys.version.split()[0])
        self.unit.status = ops.MaintenanceStatus("installed")

    def _on_start(self, event: ops.StartEvent):
        self._make_state_dir()
        self.started.touch()
        self._converge(event)

    def _on_upgrade_charm(self, event: ops.UpgradeCharmEvent):
        # New charm code may bring a new server: restart onto it.
        self._stop_server()
        self._converge(event)

    def _on_stop(self, _: ops.StopEvent):
        self._stop_server()
        if self.portfile.exists():
            self.unit.close_port("tcp", int(self.portfile.read_text().strip()))
            self.portfile.unlink()
        self.started.unlink(missing_ok=True)
        self.addrfile.unlink(missing_ok=True)
        self.unit.status = ops.MaintenanceStatus("stopped")

    def _on_remove(self, _: ops.RemoveEvent):
        self._stop_server()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _converge(self, event: ops.EventBase):
        self._make_state_dir()
        relation = self.model.get_relation("kv")
        # During relation-broken the relation is on its way out: nothing may be
        # written to it and its data is no use any more. (Recent ops already
        # leaves it out of model.relations; older ones do not.)
        if isinstance(event, ops.RelationBrokenEvent) and relation is not None and relation.id == event.relation.id:
            relation = None
        # During relation-departed the departing unit is still listed by some
        # Juju versions; it must not be picked.
        departing = event.departing_unit if isinstance(event, ops.RelationDepartedEvent) else None

        kv_at = None
        if relation is not None:
            # Only the leader may write the application bag.
            if self.unit.is_leader():
                self._update(relation.data[self.app], {"database": str(self.config["database"])})
            self._update(relation.data[self.unit], {"client-address": self._address()})
            kv_at = self._connect(relation, departing)
        else:
            self._forget()

        port = int(self.config["port"])
        if not 0 < port < 65536:
            self.unit.status = ops.BlockedStatus(f"invalid port: {port}")
            return
        if not self.started.exists():
            self.unit.status = ops.MaintenanceStatus("waiting for start")
            return
        self._ensure_serving(port)
        if relation is None:
            self.unit.status = ops.BlockedStatus("needs a kv relation")
        elif kv_at is None:
            self.unit.status = ops.WaitingStatus("waiting for kv-store credentials and address")
        else:
            self.unit.status = ops.ActiveStatus(f"connected to kv-store at {kv_at}")

    # ---- the kv relation ------------------------------------------------------

    @staticmethod
    def _update(bag: ops.RelationDataContent, values: dict):
        """Write only the keys that change: an unchanged bag must not wake the other side."""
        for key, value in values.items():
            if bag.get(key) != value:
                bag[key] = value

    def _connect(self, relation: ops.Relation, departing: ops.Unit | None) -> str | None:
        """Write the connection to use into kv_conf; host:port, or None (and forget) if there is none yet."""
        if relation.app is None:
            self._forget()
            return None
        creds = {key: relation.data[relation.app].get(key, "") for key in CREDENTIAL_KEYS}
        gone = departing.name if departing is not None else None
        units = sorted(
            (u for u in relation.units if u.name != gone),
            key=lambda u: int(u.name.rsplit("/", 1)[1]),
        )
        usable = [u for u in units if relation.data[u].get("host") and relation.data[u].get("port")]
        previous = self.kv_unit.read_text().strip() if self.kv_unit.exists() else None
        chosen = next((u for u in usable if u.name == previous), usable[0] if usable else None)
        if chosen is None or not all(creds.values()):
            self._forget()
            return None
        conn = {"host": relation.data[chosen]["host"], "port": relation.data[chosen]["port"], **creds}
        tmp = self.kv_conf.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(conn, f)
        tmp.replace(self.kv_conf)
        if previous != chosen.name:
            self.kv_unit.write_text(f"{chosen.name}\n")
            logger.info("using kv-store unit %s at %s:%s", chosen.name, conn["host"], conn["port"])
        return f"{conn['host']}:{conn['port']}"

    def _forget(self):
        self.kv_conf.unlink(missing_ok=True)
        self.kv_unit.unlink(missing_ok=True)

    # ---- workload -------------------------------------------------------------

    def _make_state_dir(self):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)  # kv.json holds the kv-store password

    def _address(self) -> str:
        try:
            binding = self.model.get_binding("kv")
            if binding is not None and binding.network.bind_address is not None:
                return str(binding.network.bind_address)
        except (ops.ModelError, KeyError, TypeError) as e:
            logger.debug("network-get failed (%s); falling back to unit-get", e)
        return subprocess.check_output(["unit-get", "private-address"], text=True).strip()

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        # An exited server that init has not reaped yet (a zombie) is gone for us.
        try:
            stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"

    def _server_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if not self._alive(pid):
            return None
        # A recycled pid must not be mistaken for our server.
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline")
        if cmdline.exists() and b"webserver.py" not in cmdline.read_bytes():
            return None
        return pid

    def _stop_server(self):
        pid = self._server_pid()
        if pid is not None:
            logger.info("stopping server (pid %d)", pid)
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not self._alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)

    def _start_server(self, address: str, port: int):
        self.unit.status = ops.MaintenanceStatus(f"starting server on {address}:{port}")
        server = self.charm_dir / "src" / "webserver.py"
        args = [sys.executable, str(server), "--bind", address, "--port", str(port)]
        args += ["--config", str(self.kv_conf), "--unit", self.unit.name]
        with open(self.log, "ab") as log, open(os.devnull, "rb") as devnull:
            # A new session outlives the hook's process group; no fd of the hook
            # stays open in the server, or the hook runner would wait for it.
            proc = subprocess.Popen(
                args,
                stdin=devnull,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
                cwd="/",
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        self.pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}; see {self.log}")
            try:
                socket.create_connection((address, port), timeout=0.5).close()
                logger.info("server started on %s:%d (pid %d)", address, port, proc.pid)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not listen on {address}:{port} within 10s")

    def _ensure_serving(self, port: int):
        """Start the server if it is down or its address or port changed; make the opened port match."""
        address = self._address()
        old_port = int(self.portfile.read_text()) if self.portfile.exists() else None
        old_addr = self.addrfile.read_text().strip() if self.addrfile.exists() else None
        if self._server_pid() is None or old_port != port or old_addr != address:
            self._stop_server()
            self._start_server(address, port)
        if old_port is not None and old_port != port:
            self.unit.close_port("tcp", old_port)
        self.unit.open_port("tcp", port)
        self.portfile.write_text(f"{port}\n")
        self.addrfile.write_text(f"{address}\n")


if __name__ == "__main__":
    ops.main(OpsKvWebCharm)
