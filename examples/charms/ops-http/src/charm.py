#!/usr/bin/env python3
"""The http-hooks workload as an ops charm: serve the `content` option on `port`."""

import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import ops

logger = logging.getLogger(__name__)


class OpsHttpCharm(ops.CharmBase):
    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        # Beside the charm dir, not in it (a refresh rewrites the charm files), and
        # named after the unit: several units can share one host.
        unit_slug = self.unit.name.replace("/", "-")
        self.state_dir = self.charm_dir.parent / f"workload-{unit_slug}"
        self.www = self.state_dir / "www"
        self.pidfile = self.state_dir / "server.pid"
        self.portfile = self.state_dir / "port"
        self.addrfile = self.state_dir / "address"
        self.started = self.state_dir / "started"
        self.log = self.state_dir / "server.log"

        framework.observe(self.on.install, self._on_install)
        framework.observe(self.on.config_changed, self._on_config_changed)
        framework.observe(self.on.start, self._on_start)
        framework.observe(self.on.update_status, self._on_update_status)
        framework.observe(self.on.upgrade_charm, self._on_upgrade_charm)
        framework.observe(self.on.stop, self._on_stop)
        framework.observe(self.on.remove, self._on_remove)
        framework.observe(self.on.website_relation_joined, self._on_website_relation)
        framework.observe(self.on.fetch_action, self._on_fetch_action)

    # ---- events ---------------------------------------------------------------

    def _on_install(self, _: ops.InstallEvent):
        self.www.mkdir(parents=True, exist_ok=True)
        self.unit.set_workload_version(sys.version.split()[0])
        self.unit.status = ops.MaintenanceStatus("installed")

    def _on_config_changed(self, _: ops.ConfigChangedEvent):
        self._write_page()
        # Before start (first deploy) only the page is written; start serves it.
        if self.started.exists():
            self._ensure_serving()
        else:
            self.unit.status = ops.MaintenanceStatus("configured; waiting for start")

    def _on_start(self, _: ops.StartEvent):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.started.touch()
        self._ensure_serving()

    def _on_update_status(self, _: ops.UpdateStatusEvent):
        # Also heals a server that died between hooks.
        if self.started.exists():
            self._ensure_serving()

    def _on_upgrade_charm(self, _: ops.UpgradeCharmEvent):
        if self.started.exists():
            self._stop_server()
            self._ensure_serving()

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

    def _on_website_relation(self, event: ops.RelationJoinedEvent):
        event.relation.data[self.unit].update(
            {"hostname": self._address(), "port": str(self.config["port"])}
        )

    def _on_fetch_action(self, event: ops.ActionEvent):
        url = f"http://{self._address()}:{self.config['port']}{event.params['path']}"
        event.log(f"fetching {url}")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                event.set_results({"status": str(r.status), "body": r.read().decode("utf-8", "replace")})
        except urllib.error.HTTPError as e:
            event.set_results({"status": str(e.code), "body": ""})
        except OSError as e:
            event.fail(f"could not fetch {url}: {e}")

    # ---- workload -------------------------------------------------------------

    def _address(self) -> str:
        try:
            binding = self.model.get_binding("website")
            if binding is not None and binding.network.bind_address is not None:
                return str(binding.network.bind_address)
        except (ops.ModelError, KeyError, TypeError) as e:
            logger.debug("network-get failed (%s); falling back to unit-get", e)
        return subprocess.check_output(["unit-get", "private-address"], text=True).strip()

    def _write_page(self):
        self.www.mkdir(parents=True, exist_ok=True)
        tmp = self.www / "index.html.tmp"
        tmp.write_text(f"{self.config['content']}\n")
        tmp.replace(self.www / "index.html")

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
        if cmdline.exists() and b"http.server" not in cmdline.read_bytes():
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
        with open(self.log, "ab") as log, open(os.devnull, "rb") as devnull:
            # A new session outlives the hook's process group; no fd of the hook
            # stays open in the server, or the hook runner would wait for it.
            proc = subprocess.Popen(
                [sys.executable, "-m", "http.server", str(port), "--bind", address, "--directory", str(self.www)],
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

    def _ensure_serving(self):
        port = int(self.config["port"])
        if not 0 < port < 65536:
            self.unit.status = ops.BlockedStatus(f"invalid port: {port}")
            return
        address = self._address()
        old_port = int(self.portfile.read_text()) if self.portfile.exists() else None
        old_addr = self.addrfile.read_text().strip() if self.addrfile.exists() else None
        self._write_page()
        if self._server_pid() is None or old_port != port or old_addr != address:
            self._stop_server()
            self._start_server(address, port)
        if old_port is not None and old_port != port:
            self.unit.close_port("tcp", old_port)
        self.unit.open_port("tcp", port)
        for relation in self.model.relations["website"]:
            relation.data[self.unit].update({"hostname": address, "port": str(port)})
        self.portfile.write_text(f"{port}\n")
        self.addrfile.write_text(f"{address}\n")
        self.unit.status = ops.ActiveStatus(f"serving on :{port}")


if __name__ == "__main__":
    ops.main(OpsHttpCharm)
