"""The operator's image, built by hack/image.sh, run by runc as a kubelet would run the chart's pod.

`runtime_spec` turns a pod template (as the chart renders it) into an OCI runtime spec: its user and
groups, read-only root, capabilities, no-new-privileges, memory and CPU limits, environment, emptyDir
volumes as tmpfs, the ServiceAccount token where every pod has it, and a hosts file as the kubelet
writes one. What is not emulated: the pod's own network (the container shares the host's, where the
local control plane and the Hub emulator listen on loopback, so ports in the environment must be
free ones), cluster DNS, and the seccomp profile (runc here has no runtime default to apply).
Anything else the template asks for that this cannot give (another volume type, envFrom) is an error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .controlplane.processes import die_with_parent_preexec, run_script

REPO = Path(__file__).resolve().parents[2]
IMAGE_SCRIPT = REPO / "hack" / "image.sh"
SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
#: Period of the CFS quota that a CPU limit becomes, as the kubelet sets it.
CPU_PERIOD = 100_000
_QUANTITY_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "m": 10**-3,
}  # fmt: skip


class ContainerError(RuntimeError):
    """The image could not be built or mounted, or the pod template asks for what is not emulated."""


def build_image() -> str:
    """hack/image.sh: build the image from the Dockerfile (the stand-in base is cached); its name in
    buildah's local storage. The script asks this Python's pip how this machine reaches the index."""
    try:
        return run_script(IMAGE_SCRIPT, env={**os.environ, "PYTHON": sys.executable})
    except RuntimeError as error:
        raise ContainerError(str(error)) from error


@dataclass(frozen=True)
class Image:
    """A built image's root filesystem, mounted, and its OCI configuration (Env, Entrypoint, Cmd...)."""

    rootfs: Path
    config: dict[str, Any]


def _buildah(*args: str) -> str:
    result = subprocess.run(["buildah", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ContainerError(f"buildah {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


@contextmanager
def mounted_image(image: str) -> Iterator[Image]:
    """The image's filesystem, mounted (no copy) by a buildah working container removed on exit."""
    config = json.loads(_buildah("inspect", "--type", "image", image))["OCIv1"]["config"]
    working = _buildah("from", "--pull-never", "--quiet", "--name", f"run-{uuid.uuid4().hex[:10]}", image)
    try:
        yield Image(Path(_buildah("mount", working)), config)
    finally:
        _buildah("rm", working)


def quantity(text: str) -> float:
    """A Kubernetes resource quantity ("512Mi", "1", "500m") as a plain number."""
    for suffix, factor in _QUANTITY_SUFFIXES.items():
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * factor
    return float(text)


def pod_env(
    container: Mapping[str, Any], pod_name: str, namespace: str, secret_value: Callable[[str, str], str]
) -> dict[str, str]:
    """The container's `env` as the kubelet resolves it: plain values, the downward API's pod name and
    namespace, and Secret keys (read through `secret_value(name, key)`)."""
    if container.get("envFrom"):
        raise ContainerError("envFrom is not emulated")
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        source = entry.get("valueFrom")
        if source is None:
            env[entry["name"]] = str(entry.get("value", ""))
        elif "fieldRef" in source and source["fieldRef"]["fieldPath"] in fields:
            env[entry["name"]] = fields[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            env[entry["name"]] = secret_value(source["secretKeyRef"]["name"], source["secretKeyRef"]["key"])
        else:
            raise ContainerError(f"env {entry['name']}: {source} is not emulated")
    return env


def _security(pod_spec: Mapping[str, Any], container: Mapping[str, Any], key: str) -> Any:
    """A security setting of the container, else of the pod (the container's wins, as in Kubernetes)."""
    own = (container.get("securityContext") or {}).get(key)
    return own if own is not None else (pod_spec.get("securityContext") or {}).get(key)


def _numeric_user(image_user: str) -> tuple[int, int]:
    user, _, group = (image_user or "0").partition(":")
    if not user.isdigit() or not (group or "0").isdigit():
        raise ContainerError(f"the image's USER {image_user!r} is not numeric")
    return int(user), int(group or 0)


def _capabilities(container: Mapping[str, Any], default: list[str]) -> list[str]:
    wanted = (container.get("securityContext") or {}).get("capabilities") or {}
    dropped = set(wanted.get("drop") or [])
    kept = [] if "ALL" in dropped else [cap for cap in default if cap.removeprefix("CAP_") not in dropped]
    return kept + [f"CAP_{cap}" for cap in wanted.get("add") or []]


def _volume_mounts(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> list[dict[str, Any]]:
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes") or []}
    mounts = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "emptyDir" not in volume:
            raise ContainerError(f"volume {mount['name']}: only emptyDir is emulated")
        options = ["nosuid", "nodev", "mode=1777"]
        size = (volume["emptyDir"] or {}).get("sizeLimit")
        if size:
            options.append(f"size={int(quantity(size))}")
        mounts.append(
            {"destination": mount["mountPath"], "type": "tmpfs", "source": "tmpfs", "options": options}
        )
    return mounts


def _read_only_bind(source: Path, destination: str) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": str(source), "options": ["bind", "ro"]}


def _resources(container: Mapping[str, Any]) -> dict[str, Any]:
    limits = (container.get("resources") or {}).get("limits") or {}
    resources: dict[str, Any] = {}
    if "memory" in limits:
        resources["memory"] = {"limit": int(quantity(str(limits["memory"])))}
    if "cpu" in limits:
        resources["cpu"] = {"quota": int(quantity(str(limits["cpu"])) * CPU_PERIOD), "period": CPU_PERIOD}
    return resources


def runtime_spec(
    base: Mapping[str, Any],
    image: Image,
    pod_spec: Mapping[str, Any],
    *,
    hostname: str,
    env: Mapping[str, str],
    service_account: Path | None,
    hosts_file: Path,
) -> dict[str, Any]:
    """The OCI runtime spec (over runc's default `base`) for the pod's one container.

    `env` is the container's resolved environment plus what the kubelet adds (KUBERNETES_SERVICE_*);
    it goes over the image's. `service_account` is the directory mounted read-only at
    SERVICE_ACCOUNT_MOUNT (None: the pod template turns the automount off)."""
    (container,) = pod_spec["containers"]
    config = image.config
    image_uid, image_gid = _numeric_user(config.get("User", ""))
    uid = _security(pod_spec, container, "runAsUser")
    gid = _security(pod_spec, container, "runAsGroup")
    pod_context = pod_spec.get("securityContext") or {}
    groups = [pod_context["fsGroup"]] if "fsGroup" in pod_context else []
    groups += pod_context.get("supplementalGroups") or []
    command = container.get("command") or config.get("Entrypoint") or []
    args = container.get("args") or ([] if container.get("command") else config.get("Cmd") or [])
    environment = dict(item.split("=", 1) for item in config.get("Env") or [])
    environment.update(env)
    escalation = _security(pod_spec, container, "allowPrivilegeEscalation")
    read_only = bool(_security(pod_spec, container, "readOnlyRootFilesystem"))
    capabilities = _capabilities(container, base["process"]["capabilities"]["bounding"])
    process = {
        **base["process"],
        "terminal": False,
        "user": {
            "uid": image_uid if uid is None else uid,
            "gid": image_gid if gid is None else gid,
            "additionalGids": groups,
        },
        "args": [*command, *args],
        "env": [f"{key}={value}" for key, value in environment.items()],
        "cwd": container.get("workingDir") or config.get("WorkingDir") or "/",
        "capabilities": {kind: capabilities for kind in ("bounding", "effective", "permitted")},
        "noNewPrivileges": escalation is False,
    }
    mounts = [*base["mounts"], *_volume_mounts(pod_spec, container)]
    mounts.append(_read_only_bind(hosts_file, "/etc/hosts"))
    if service_account is not None:
        mounts.append(_read_only_bind(service_account, SERVICE_ACCOUNT_MOUNT))
    linux = dict(base["linux"])
    # The host's network: the control plane and the Hub emulator are on its loopback.
    linux["namespaces"] = [space for space in base["linux"]["namespaces"] if space["type"] != "network"]
    linux["resources"] = {**base["linux"].get("resources", {}), **_resources(container)}
    return {
        **base,
        "process": process,
        "root": {"path": str(image.rootfs), "readonly": read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    }


def service_account_volume(directory: Path, *, token: str, ca: bytes, namespace: str, uid: int) -> Path:
    """What the kubelet projects for a pod's ServiceAccount: token (readable by the pod's user only),
    ca.crt and namespace."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    for name, content, mode in (("token", token.encode(), 0o600), ("ca.crt", ca, 0o644)):
        (directory / name).write_bytes(content)
        (directory / name).chmod(mode)
        os.chown(directory / name, uid, -1)
    (directory / "namespace").write_text(namespace)
    (directory / "namespace").chmod(0o644)
    return directory


def hosts_file(path: Path, hostname: str) -> Path:
    """The kubelet's hosts file for a pod: localhost, and the pod's own name (on loopback here)."""
    path.write_text(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"127.0.0.1\t{hostname}\n"
    )
    path.chmod(0o644)
    return path


def default_spec(directory: Path) -> dict[str, Any]:
    """runc's own default spec (`runc spec`), the base every container's spec starts from."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").unlink(missing_ok=True)
    subprocess.run(["runc", "spec", "--bundle", str(directory)], check=True, capture_output=True)
    spec: dict[str, Any] = json.loads((directory / "config.json").read_text())
    (directory / "config.json").unlink()
    return spec


class RuncContainer:
    """One container run by `runc run` in the foreground, its output in `bundle/container.log`. runc
    passes the signals it gets on to the container: SIGTERM when its parent dies (a killed test run),
    or when a CI run stops the process group it runs in, stops the operator as a kubelet would."""

    def __init__(self, container_id: str, bundle: Path) -> None:
        self.id = container_id
        self.bundle = bundle
        self.log_path = bundle / "container.log"
        self.proc: subprocess.Popen[bytes] | None = None
        #: The environment of its process, once started.
        self.env: dict[str, str] = {}

    def start(self, spec: Mapping[str, Any]) -> None:
        self.env = dict(item.split("=", 1) for item in spec["process"]["env"])
        self.bundle.mkdir(parents=True, exist_ok=True)
        (self.bundle / "config.json").write_text(json.dumps(spec, indent=1))
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                ["runc", "run", "--bundle", str(self.bundle), self.id],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent_preexec(signal.SIGTERM),
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def exec(self, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a command in the container, as its process runs (user, environment, no capabilities)."""
        return subprocess.run(
            ["runc", "exec", self.id, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )

    def kill(self) -> None:
        """SIGKILL, as a node failure or an OOM kill ends a container: no cleanup runs; then remove it."""
        if self.running():
            subprocess.run(["runc", "kill", self.id, signal.SIGKILL.name], capture_output=True, check=False)
            assert self.proc is not None
            self.proc.wait(timeout=30)
        subprocess.run(["runc", "delete", "--force", self.id], capture_output=True, check=False)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (what the kubelet sends first), SIGKILL after `timeout`."""
        if self.running():
            subprocess.run(["runc", "kill", self.id, signal.SIGTERM.name], capture_output=True, check=False)
            assert self.proc is not None
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        self.kill()
