"""A real kube-apiserver + etcd (+ kube-controller-manager) on loopback, envtest-style (no kubelet).

Tests and the dev mode need the genuine admission chain (PodSecurity, ValidatingAdmissionPolicy),
RBAC and garbage collection, which fakes do not give.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from .certs import CertificateAuthority, KeyPair, write_signing_key_pair
from .errors import ControlPlaneError, PortInUseError
from .kubeconfig import cert_credentials, write_kubeconfig
from .kubectl import Kubectl
from .processes import COMPONENTS, free_ports, launch, recorded_pid, run_script, terminate, wait_until

_log = logging.getLogger(__name__)

BIN_DIR_ENV = "SANDBOX_OPERATOR_BIN_DIR"
BINARIES = ("kube-apiserver", "etcd", "kube-controller-manager", "kubectl", "helm")
ADMIN_USER = "sandbox-operator-admin"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
# What namespace deletion, ownerReference GC and ServiceAccounts need, plus the kube-root-ca.crt
# ConfigMap (the ServiceAccount admission plugin's projected token volume refers to it) and
# ClusterRole aggregation (charts extend admin/edit/view through aggregate-to-* labels).
CONTROLLERS = (
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
)
ETCD_TIMEOUT = 30.0
APISERVER_TIMEOUT = 60.0  # cold page cache on a 2-core machine
CONTROLLER_MANAGER_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
PROBE_TIMEOUT = 2.0  # short: whoever won a port race may accept connections and never answer


def _checked_bin_dir(bin_dir: Path, source: str) -> Path:
    missing = [name for name in BINARIES if not os.access(bin_dir / name, os.X_OK)]
    if missing:
        raise ControlPlaneError(f"{bin_dir} (from {source}) has no executable {', '.join(missing)}")
    return bin_dir


def find_binaries() -> Path:
    """The directory with the control plane binaries and helm.

    $SANDBOX_OPERATOR_BIN_DIR wins; otherwise the checkout's hack/build-binaries.sh builds them
    (a no-op once cached) and prints the directory. Its progress is passed through to stderr,
    since a cold build takes minutes.
    """
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        return _checked_bin_dir(Path(override), f"${BIN_DIR_ENV}")
    script = Path(__file__).resolve().parents[3] / "hack" / "build-binaries.sh"
    if not script.is_file():
        raise ControlPlaneError(
            f"${BIN_DIR_ENV} is unset and {script} does not exist (not a source checkout); "
            f"set ${BIN_DIR_ENV} to a directory holding {', '.join(BINARIES)}"
        )
    return _checked_bin_dir(Path(run_script(script)), str(script))


def _http_status(url: str, context: ssl.SSLContext | None = None) -> int | None:
    """GET without proxies (http.client ignores $https_proxy), None if nothing answers yet."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    conn = (
        http.client.HTTPSConnection(host, port, timeout=PROBE_TIMEOUT, context=context)
        if parts.scheme == "https"
        else http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT)
    )
    try:
        conn.request("GET", parts.path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class ControlPlane:
    """etcd, kube-apiserver and optionally kube-controller-manager as local processes.

    Each start is a fresh cluster: new ports, new PKI, empty etcd. Everything lives in
    `state_dir`: certs/, etcd-data/, pids/, one `<component>.log` each and the admin `kubeconfig`.
    `die_with_parent` makes the processes die with the Python process (test sessions); without it
    they outlive it (dev mode) and `stop_from_state_dir` stops them later. Linux ties that signal
    to the starting *thread*, so call start() from one that lives as long (not a worker thread).
    """

    def __init__(
        self,
        state_dir: Path,
        bin_dir: Path | None = None,
        with_controller_manager: bool = True,
        *,
        die_with_parent: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir)
        self._bin_dir = bin_dir
        self.with_controller_manager = with_controller_manager
        self._die_with_parent = die_with_parent
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._server_url: str | None = None
        self._serving_ca: CertificateAuthority | None = None
        self._client_ca: CertificateAuthority | None = None

    @property
    def bin_dir(self) -> Path:
        """Resolved on first use, because finding the binaries may mean building them."""
        if self._bin_dir is None:
            self._bin_dir = find_binaries()
        return self._bin_dir

    @property
    def kubeconfig(self) -> Path:
        """The admin (system:masters) kubeconfig, written once the apiserver is ready."""
        return self.state_dir / "kubeconfig"

    @property
    def server_url(self) -> str:
        if self._server_url is None:
            raise ControlPlaneError("the control plane is not started")
        return self._server_url

    @property
    def serving_ca(self) -> Path:
        """The CA of the apiserver's serving certificate: what a pod's ServiceAccount ca.crt holds."""
        return self._certs / "serving-ca.crt"

    @property
    def _certs(self) -> Path:
        return self.state_dir / "certs"

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start all components and return once they serve; on failure stop what was started."""
        if self._procs:
            raise ControlPlaneError("the control plane is already started")
        leftovers = [name for name in COMPONENTS if recorded_pid(self.state_dir, name) is not None]
        if leftovers:
            raise ControlPlaneError(
                f"{', '.join(leftovers)} of an earlier start still run from {self.state_dir}; "
                "stop them with stop_from_state_dir() first"
            )
        bin_dir = self.bin_dir
        began = time.monotonic()
        for attempt in (1, 2):
            try:
                self._start_once(bin_dir)
            except PortInUseError as error:
                self.stop()
                if attempt == 2:
                    raise
                _log.warning("retrying with new ports: %s", str(error).splitlines()[0])
            except BaseException:
                self.stop()
                raise
            else:
                break
        _log.info("local control plane ready at %s in %.1fs", self._server_url, time.monotonic() - began)

    def exited(self) -> dict[str, int]:
        """The components that have exited since they started, with their exit codes."""
        return {name: code for name, proc in self._procs.items() if (code := proc.poll()) is not None}

    def stop(self) -> None:
        """Stop what this instance started, newest first; safe to call repeatedly."""
        try:
            for name in reversed(COMPONENTS):
                if name in self._procs:
                    terminate(self.state_dir, name, STOP_TIMEOUT)
        finally:
            for proc in self._procs.values():
                proc.wait(timeout=STOP_TIMEOUT)  # reap; terminate() already ended them
            self._procs.clear()
            self._server_url = None

    def kubectl(self, kubeconfig: Path | None = None) -> Kubectl:
        """kubectl as the admin, or as whoever `kubeconfig` authenticates."""
        return Kubectl(self.bin_dir / "kubectl", kubeconfig or self.kubeconfig)

    def write_user_kubeconfig(self, path: Path, user: str, groups: Iterable[str] = ()) -> Path:
        """A kubeconfig with a client certificate for `user` in `groups`: a real, non-admin identity."""
        if self._client_ca is None:
            raise ControlPlaneError("the control plane is not started")
        pair = self._client_ca.issue_client(user, groups)
        return self._write_kubeconfig(path, user, cert_credentials(pair.cert_pem, pair.key_pem))

    def token_kubeconfig(self, path: Path, token: str, user: str = "token-user") -> Path:
        """A bearer-token kubeconfig, e.g. for a ServiceAccount token from the TokenRequest API."""
        return self._write_kubeconfig(path, user, {"token": token})

    def service_account_token(self, namespace: str, name: str, duration: str = "1h") -> str:
        """A TokenRequest token of a ServiceAccount: exactly what its pod would get."""
        request = self.kubectl()("create", "token", name, "-n", namespace, f"--duration={duration}")
        return request.stdout.strip()

    def service_account_kubeconfig(self, path: Path, namespace: str, name: str, duration: str = "1h") -> Path:
        """A kubeconfig with a TokenRequest token of a ServiceAccount."""
        token = self.service_account_token(namespace, name, duration)
        return self.token_kubeconfig(path, token, user=f"system:serviceaccount:{namespace}:{name}")

    def _write_kubeconfig(self, path: Path, user: str, credentials: dict[str, str]) -> Path:
        if self._serving_ca is None:
            raise ControlPlaneError("the control plane is not started")
        return write_kubeconfig(
            path,
            server=self.server_url,
            ca_pem=self._serving_ca.pair.cert_pem,
            user=user,
            credentials=credentials,
        )

    def _start_once(self, bin_dir: Path) -> None:
        self._certs.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.state_dir / "etcd-data", ignore_errors=True)
        etcd_port, peer_port, api_port = free_ports(3)
        self._server_url = f"https://127.0.0.1:{api_port}"
        admin, serving_ca = self._write_pki()
        self._start_etcd(bin_dir, etcd_port, peer_port)
        context = ssl.create_default_context(cadata=serving_ca.decode())
        context.load_cert_chain(self._certs / "admin.crt", self._certs / "admin.key")
        apiserver = self._start_apiserver(bin_dir, etcd_port, api_port)
        wait_until(
            "kube-apiserver", apiserver, self.state_dir, self._answers("/readyz", context), APISERVER_TIMEOUT
        )
        self._write_kubeconfig(self.kubeconfig, ADMIN_USER, cert_credentials(admin.cert_pem, admin.key_pem))
        default_ns = self._answers("/api/v1/namespaces/default", context)
        wait_until("kube-apiserver", apiserver, self.state_dir, default_ns, APISERVER_TIMEOUT)
        if self.with_controller_manager:
            manager = self._start_controller_manager(bin_dir)
            default_sa = self._answers("/api/v1/namespaces/default/serviceaccounts/default", context)
            wait_until(
                "kube-controller-manager", manager, self.state_dir, default_sa, CONTROLLER_MANAGER_TIMEOUT
            )

    def _answers(self, path: str, context: ssl.SSLContext) -> Callable[[], bool]:
        """A readiness check as the admin over verified TLS, i.e. the way real clients connect."""
        url = self.server_url + path
        return lambda: _http_status(url, context) == 200

    def _write_pki(self) -> tuple[KeyPair, bytes]:
        """Write the files the components read; return the admin's client certificate and the CA."""
        certs = self._certs
        self._serving_ca = CertificateAuthority("sandbox-operator-local-serving-ca")
        self._client_ca = CertificateAuthority("sandbox-operator-local-client-ca")
        (certs / "serving-ca.crt").write_bytes(self._serving_ca.pair.cert_pem)
        (certs / "client-ca.crt").write_bytes(self._client_ca.pair.cert_pem)
        serving = self._serving_ca.issue_server(["localhost"], ["127.0.0.1"])
        serving.write(certs / "apiserver.crt", certs / "apiserver.key")
        admin = self._client_ca.issue_client(ADMIN_USER, ["system:masters"])
        admin.write(certs / "admin.crt", certs / "admin.key")  # for the probes, and curl when debugging
        write_signing_key_pair(certs / "sa.key", certs / "sa.pub")
        return admin, self._serving_ca.pair.cert_pem

    def _launch(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = launch(name, argv, self.state_dir, die_with_parent=self._die_with_parent)
        self._procs[name] = proc
        return proc

    def _start_etcd(self, bin_dir: Path, client_port: int, peer_port: int) -> None:
        client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
        proc = self._launch(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=etcd",
                f"--data-dir={self.state_dir / 'etcd-data'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=etcd={peer}",
                "--unsafe-no-fsync=true",  # throwaway data: fsync only costs time
            ],
        )
        wait_until(
            "etcd", proc, self.state_dir, lambda: _http_status(f"{client}/health") == 200, ETCD_TIMEOUT
        )

    def _start_apiserver(self, bin_dir: Path, etcd_port: int, port: int) -> subprocess.Popen[bytes]:
        certs = self._certs
        argv = [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={certs / 'apiserver.crt'}",
            f"--tls-private-key-file={certs / 'apiserver.key'}",
            f"--client-ca-file={certs / 'client-ca.crt'}",
            # No kubelets, so no Node authorizer: RBAC alone, as in envtest.
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.server_url}",
            f"--service-account-key-file={certs / 'sa.pub'}",
            f"--service-account-signing-key-file={certs / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            # Let PodSecurity, not the apiserver's blanket switch, decide about privileged pods.
            "--allow-privileged=true",
            # Else it advertises the host's default-route IP, where it does not listen (and fails to
            # start on hosts without one). Endpoints reject loopback IPs, so the `kubernetes`
            # Service gets none; no pod runs here to use them.
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
        ]
        if not self.with_controller_manager:
            # Without the serviceaccount controller no `default` ServiceAccount ever appears and the
            # plugin would reject every pod; with it, keep the production admission chain intact.
            argv.append("--disable-admission-plugins=ServiceAccount")
        return self._launch("kube-apiserver", argv)

    def _start_controller_manager(self, bin_dir: Path) -> subprocess.Popen[bytes]:
        kubeconfig = self.write_user_kubeconfig(
            self.state_dir / "kube-controller-manager.kubeconfig", CONTROLLER_MANAGER_USER, ["system:masters"]
        )
        certs = self._certs
        return self._launch(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={certs / 'sa.key'}",
                f"--root-ca-file={certs / 'serving-ca.crt'}",
                # One identity for all controllers: no per-controller ServiceAccounts to bootstrap.
                "--use-service-account-credentials=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",  # no health endpoint needed: readiness is the default ServiceAccount
            ],
        )
