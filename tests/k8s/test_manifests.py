"""k8s/ checked offline: every manifest and the `kubectl kustomize` output
validated strictly against the Kubernetes schemas (kubernetes-validate), and
the properties the schemas cannot see: what FUSE and mount propagation need,
probes and the preStop hook through the entrypoint, PYTHONHASHSEED on every
vLLM server, /dev/shm large enough for the CPU tier, the ConfigMap reference
surviving kustomize's name hashing."""

import copy
import json
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "k8s"
VERSION = "1.33.0"
MANIFESTS = ["namespace.yaml", "pvc.yaml", "daemonset.yaml", "metrics-service.yaml",
             "vllm-fs-tier.yaml", "vllm-kvfs-spec.yaml"]


def load_all(text):
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def built():
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return {(d["kind"], d["metadata"]["name"]): d for d in load_all(out.stdout)}


@pytest.mark.parametrize("name", MANIFESTS)
def test_each_manifest_is_valid(name):
    docs = load_all((K8S / name).read_text())
    assert docs
    for d in docs:
        kubernetes_validate.validate(d, VERSION, strict=True)


def test_kustomize_output_is_valid_and_complete(built):
    for d in built.values():
        kubernetes_validate.validate(d, VERSION, strict=True)
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "kvfs"
    kinds = sorted(k for k, _ in built)
    assert kinds == ["ConfigMap", "DaemonSet", "Deployment", "Deployment", "Namespace",
                     "PersistentVolumeClaim", "Service"]


def test_the_validator_is_not_vacuous(built):
    ds = copy.deepcopy(built[("DaemonSet", "kvfs")])
    ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPropagationn"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, VERSION, strict=True)


def container(obj):
    return obj["spec"]["template"]["spec"]["containers"][0]


def test_daemonset_has_what_fuse_and_propagation_need(built):
    ds = built[("DaemonSet", "kvfs")]
    pod = ds["spec"]["template"]["spec"]
    c = container(ds)
    assert c["securityContext"]["privileged"] is True
    assert pod["hostPID"] is True  # writers' pids (see core/kvfs_proc.h)
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["dev-fuse"]["hostPath"] == {"path": "/dev/fuse", "type": "CharDevice"}
    assert mounts["mnt"]["mountPropagation"] == "Bidirectional"
    assert vols["mnt"]["hostPath"]["path"] == "/mnt/kvfs"
    assert vols["backing"]["persistentVolumeClaim"]["claimName"] == "kvfs-backing"
    # Upgrades by takeover: the new pod starts beside the old one, and both
    # see the handover socket's directory.
    assert ds["spec"]["updateStrategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert vols["run-kvfs"]["hostPath"]["path"] == "/run/kvfs"
    assert mounts["run-kvfs"]["mountPath"] == "/run/kvfs"
    assert ("PersistentVolumeClaim", "kvfs-backing") in built
    pvc = built[("PersistentVolumeClaim", "kvfs-backing")]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["kvfs-entrypoint", "stop"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["exec"]["command"] == ["kvfs-entrypoint", "probe"]
    assert {"requests", "limits"} <= set(c["resources"])
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    # The ConfigMap reference follows kustomize's hashed name.
    [ref] = c["envFrom"]
    assert ("ConfigMap", ref["configMapRef"]["name"]) in built
    opts = built[("ConfigMap", ref["configMapRef"]["name"])]["data"]["KVFS_OPTIONS"]
    assert "metrics_addr=0.0.0.0:9464" in opts
    svc = built[("Service", "kvfs-metrics")]
    assert svc["spec"]["selector"] == ds["spec"]["selector"]["matchLabels"]
    assert svc["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def size_bytes(q):
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    for u, m in units.items():
        if q.endswith(u):
            return int(q[:-2]) * m
    return int(q)


@pytest.mark.parametrize("name,spec", [("vllm-fs-tier", "TieringOffloadingSpec"),
                                       ("vllm-kvfs-spec", "KvfsOffloadingSpec")])
def test_vllm_deployments_use_the_nodes_mount(built, name, spec):
    d = built[("Deployment", name)]
    pod = d["spec"]["template"]["spec"]
    c = container(d)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["PYTHONHASHSEED"] == "0"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["kvfs"]["mountPropagation"] == "HostToContainer"
    assert mounts["kvfs"]["mountPath"] == "/mnt/kvfs"
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["kvfs"]["hostPath"]["path"] == "/mnt/kvfs"
    cfg = json.loads(c["args"][c["args"].index("--kv-transfer-config") + 1])
    extra = cfg["kv_connector_extra_config"]
    assert cfg["kv_connector"] == "OffloadingConnector" and extra["spec_name"] == spec
    shm = size_bytes(vols["dshm"]["emptyDir"]["sizeLimit"])
    assert vols["dshm"]["emptyDir"]["medium"] == "Memory"
    if spec == "TieringOffloadingSpec":
        assert extra["secondary_tiers"][0]["root_dir"].startswith("/mnt/kvfs/")
        assert shm >= extra["cpu_bytes_to_use"] + (1 << 30), "/dev/shm cannot hold the CPU tier"
        assert size_bytes(c["resources"]["limits"]["memory"]) > shm
    else:
        assert extra["spec_module_path"] == "kvfs.vllm.spec"
        assert extra["root_dir"].startswith("/mnt/kvfs/")
    # They wait for the node's daemon rather than start on an empty directory.
    [init] = pod["initContainers"]
    assert ".kvfs/stats" in " ".join(init["command"])
