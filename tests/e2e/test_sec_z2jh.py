"""deploy/z2jh/values.yaml, rendered offline into the pod KubeSpawner would ask Kubernetes for
(issue 23, item 7), and held to what each lab mode needs.

No cluster: the chart's hub turns ``singleuser.*`` values into KubeSpawner settings and applies
``hub.config`` over them; :func:`_chart_config` does that for the keys this values file uses
(and fails on any other, so a new key is never silently left out), then KubeSpawner's own
``get_pod_manifest`` (``kubespawner.objects.make_pod``; the ``test`` extra) builds the pod.
What the no-sudo kernel needs comes from docs/no-sudo.md and tunlab/kernelspec.py: ``unshare
--user --map-root-user --net --mount`` (a seccomp profile that allows unprivileged user
namespaces, mount(2) past AppArmor), /dev/net/tun, a writable /proc/sys/net and a sysfs it may
mount in its namespaces (``procMount: Unmasked``, which Kubernetes takes only with a pod user
namespace), and no capability from the node. Root mode (the block commented out at the end of
the file) needs NET_ADMIN, SYS_ADMIN and NET_RAW. Neither needs a pod sysctl: every sysctl the
lab sets is per network namespace, set inside the lab.
"""

from __future__ import annotations

import asyncio
import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

kubespawner = pytest.importorskip(
    "kubespawner", reason="needs KubeSpawner to render the pod: pip install -e '.[test]'")


VALUES = Path(__file__).resolve().parents[2] / "deploy" / "z2jh" / "values.yaml"
SINGLEUSER_KEYS = {"image", "uid", "fsGid", "defaultUrl", "lifecycleHooks", "storage",
                   "memory", "cpu", "cmd", "extraFiles"}


def _values(mode: str) -> dict[str, Any]:
    """The values as shipped ("no-sudo"), or with the commented root block put in ("root")."""
    text = VALUES.read_text()
    values = yaml.safe_load(text)
    if mode == "root":
        block = text.split("# --- root mode", 1)[1].split("\n", 1)[1]
        lines = [line[2:] if line.startswith("# ") else line[1:]
                 for line in block.splitlines() if line.startswith("#")]
        start = next(i for i, line in enumerate(lines) if line.startswith("hub:"))
        root = yaml.safe_load("\n".join(lines[start:]))
        values["hub"]["config"]["KubeSpawner"] = root["hub"]["config"]["KubeSpawner"]
    return values


def _chart_config(values: dict[str, Any]):
    """The traitlets config the chart's hub makes of ``values`` (the keys this file uses)."""
    from traitlets.config import Config

    single = values["singleuser"]
    unknown = set(single) - SINGLEUSER_KEYS
    assert not unknown, f"values.yaml uses singleuser keys this render does not map: {unknown}"
    config = Config()
    spawner = config.KubeSpawner
    spawner.image = f"{single['image']['name']}:{single['image']['tag']}"
    spawner.image_pull_policy = single["image"].get("pullPolicy")
    spawner.uid = single["uid"]
    spawner.fs_gid = single["fsGid"]
    spawner.allow_privilege_escalation = False  # the chart's singleuser default
    spawner.default_url = single["defaultUrl"]
    spawner.lifecycle_hooks = single["lifecycleHooks"]
    spawner.cmd = [single["cmd"]] if isinstance(single["cmd"], str) else single["cmd"]
    spawner.mem_limit = single["memory"]["limit"]
    spawner.mem_guarantee = single["memory"]["guarantee"]
    spawner.cpu_limit = float(single["cpu"]["limit"])
    spawner.cpu_guarantee = float(single["cpu"]["guarantee"])
    storage = single["storage"]  # type dynamic (the chart's default): a claim per user
    volumes = [{"name": "volume-{user_server}",
                "persistentVolumeClaim": {"claimName": "{pvc_name}"}},
               *storage.get("extraVolumes", [])]
    mounts = [{"name": "volume-{user_server}", "mountPath": "/home/jovyan"},
              *storage.get("extraVolumeMounts", [])]
    if single.get("extraFiles"):
        volumes.append({"name": "files", "secret": {"secretName": "singleuser"}})
        mounts += [{"name": "files", "mountPath": item["mountPath"], "subPath": name}
                   for name, item in single["extraFiles"].items()]
    spawner.volumes = volumes
    spawner.volume_mounts = mounts
    for section, settings in values["hub"]["config"].items():  # hub.config wins
        for key, value in settings.items():
            config[section][key] = copy.deepcopy(value)
    return config


def _render(mode: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The pod manifest (camelCase, as sent to the API server) for one participant."""
    from kubernetes_asyncio.client import ApiClient

    # no cluster: KubeSpawner would read a kubeconfig or the in-cluster account here
    monkeypatch.setattr(kubespawner.spawner, "load_config", lambda **_: None)

    async def build() -> dict[str, Any]:
        spawner = kubespawner.KubeSpawner(config=_chart_config(_values(mode)), _mock=True)
        pod = await spawner.get_pod_manifest()
        async with ApiClient() as client:
            return client.sanitize_for_serialization(pod)

    return asyncio.run(build())


def _notebook(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "notebook"]
    return container


def _tun_device(pod: dict[str, Any], container: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/net/tun"]
    assert volumes[mount["name"]]["hostPath"] == {"path": "/dev/net/tun", "type": "CharDevice"}


def _never_from_the_node(pod: dict[str, Any], container: dict[str, Any]) -> None:
    spec, context = pod["spec"], container["securityContext"]
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(field), field
    assert not context.get("privileged")
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "sysctls" not in (spec.get("securityContext") or {}), \
        "no pod sysctl is needed: the lab sets its own, per network namespace"
    assert spec["automountServiceAccountToken"] is False  # no API token in a participant's pod
    if context.get("procMount") == "Unmasked":
        # Kubernetes refuses Unmasked /proc without a pod user namespace
        assert spec.get("hostUsers") is False, "procMount Unmasked needs hostUsers: false"


def test_no_sudo_pod_gets_what_the_user_namespace_kernel_needs(monkeypatch):
    pod = _render("no-sudo", monkeypatch)
    container = _notebook(pod)
    context = container["securityContext"]
    assert container["image"] == "registry.example.org/tunlab:0.1.0"
    assert context["runAsUser"] == 1000 and context["runAsGroup"] == 1000
    assert context["runAsNonRoot"] is True
    assert "add" not in context["capabilities"], "no capability from the node"
    # unshare(CLONE_NEWUSER) without CAP_SYS_ADMIN: RuntimeDefault seccomp refuses it
    assert context["seccompProfile"] == {"type": "Unconfined"}
    # mount(2) for the kernel's private /run and `ip netns add`
    assert context["appArmorProfile"] == {"type": "Unconfined"}
    # writable /proc/sys/net and a sysfs the kernel's namespaces may mount
    assert context["procMount"] == "Unmasked"
    assert pod["spec"]["hostUsers"] is False
    _tun_device(pod, container)
    _never_from_the_node(pod, container)
    assert pod["spec"]["securityContext"]["fsGroup"] == 1000
    assert container["lifecycle"]["postStart"]["exec"]["command"] == [
        "tunlab", "notebooks", "/home/jovyan/tunlab-notebooks"]
    assert container["resources"]["limits"] == {"cpu": 1.0, "memory": 1024**3}  # 1G is GiB
    assert container["args"][0] == "jupyterhub-singleuser"


def test_root_mode_pod_gets_its_three_capabilities_and_nothing_more(monkeypatch):
    pod = _render("root", monkeypatch)
    container = _notebook(pod)
    context = container["securityContext"]
    assert context["runAsUser"] == 0 and context["runAsNonRoot"] is False
    assert sorted(context["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"]
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context["procMount"] == "Unmasked"  # /proc/sys/net writable in the lab's netns
    _tun_device(pod, container)
    _never_from_the_node(pod, container)


def test_the_values_and_the_guide_say_what_was_not_run_on_a_cluster():
    guide = (VALUES.parent.parent.parent / "docs" / "instructor-guide.md").read_text()
    assert re.search(r"not run on a cluster|never ran on a cluster|no cluster", guide)
    assert "tests/test_sec_z2jh.py" in guide
