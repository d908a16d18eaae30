"""deploy/kubernetes, checked offline: every resource validates against the Kubernetes
OpenAPI schemas that kubernetes-validate ships (strict: unknown fields are errors), every
approach has a Deployment and a headless Service and is addressed by the orchestrator Job,
every pod is least-privilege with TLS and the token from the Secrets, and the
NetworkPolicies, evaluated the way Kubernetes does, let approaches reach only the store."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import yaml
from kubernetes_validate import utils as kv

from tests.deploy.deployfiles import (
    KUBERNETES_DIR,
    REPO_ROOT,
    approach_names,
    compose_approaches,
    env_pairs,
    kubernetes_documents,
    kubernetes_files,
    load_yaml,
)

# The oldest Kubernetes release still commonly run, and the newest the package knows.
VERSIONS = ("1.27", kv.latest_version())
NAMESPACE = "fixbench"
SECRET_ENV = {
    "FIXBENCH_TOKEN_FILE": "fixbench_token",
    "FIXBENCH_TLS_CERT": "fixbench_tls_cert",
    "FIXBENCH_TLS_KEY": "fixbench_tls_key",
    "FIXBENCH_TLS_CA": "fixbench_tls_ca",
}

DOCS = kubernetes_documents()


def resources(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in DOCS if doc["kind"] == kind}


def pod_specs() -> Iterator[tuple[str, dict]]:
    for kind in ("Deployment", "Job"):
        for name, doc in resources(kind).items():
            yield f"{kind}/{name}", doc["spec"]["template"]["spec"]


def container_env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("index", range(len(DOCS)), ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in DOCS])
def test_resource_validates_against_the_kubernetes_schema(index: int, version: str) -> None:
    _, doc = DOCS[index]
    # SchemaNotFoundError (a kind the schemas lack) fails the test too: nothing is skipped
    kv.validate(doc, version, strict=True)


def test_the_validator_rejects_what_a_cluster_would() -> None:
    """The check above can fail: strict mode refuses an unknown field and a wrong type."""
    deployment = copy.deepcopy(resources("Deployment")["store"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesystem"] = True  # wrong level
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, VERSIONS[-1], strict=True)
    job = copy.deepcopy(resources("Job")["orchestrator"])
    job["spec"]["backoffLimit"] = "none"
    with pytest.raises(kv.ValidationError):
        kv.validate(job, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_file() -> None:
    listed = load_yaml(KUBERNETES_DIR / "kustomization.yaml")["resources"]
    assert sorted(listed) == sorted(p.name for p in kubernetes_files())
    for path in kubernetes_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == NAMESPACE, f"{path.name}: {doc['kind']} outside {NAMESPACE}"


@pytest.mark.parametrize("name", approach_names())
def test_every_approach_has_a_deployment_a_headless_service_and_an_address(name: str) -> None:
    deployment = resources("Deployment").get(name)
    assert deployment is not None, f"deploy/kubernetes has no Deployment {name!r} (run `fixbench deploy render`)"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    # the NetworkPolicies pick approaches by this label
    assert labels["fixbench.io/role"] == "approach"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].split(":")[0] == f"fixbench/{name}"

    service = resources("Service").get(name)
    assert service is not None, f"deploy/kubernetes has no Service {name!r}"
    # headless: DNS lists every ready replica, which the orchestrator expands into job slots
    assert service["spec"].get("clusterIP") == "None"
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["port"] for p in service["spec"]["ports"]] == [50051]

    env = container_env(resources("Job")["orchestrator"]["spec"]["template"]["spec"]["containers"][0])
    # found by name: the Service is called as the approach, on the conventional port
    assert "FIXBENCH_APPROACHES" not in env and service["metadata"]["name"] == name
    expected = env_pairs(env["FIXBENCH_EXPECT_REPLICAS"], "FIXBENCH_EXPECT_REPLICAS")
    assert expected.get(name) == str(deployment["spec"]["replicas"]), "FIXBENCH_EXPECT_REPLICAS != replicas"


def test_approaches_match_compose() -> None:
    deployments = {n for n, d in resources("Deployment").items()
                   if d["spec"]["template"]["metadata"]["labels"].get("fixbench.io/role") == "approach"}
    assert sorted(deployments) == compose_approaches()


def test_store_is_on_a_persistent_volume_and_the_study_in_a_configmap() -> None:
    store = resources("Deployment")["store"]["spec"]
    assert store["replicas"] == 1 and store["strategy"]["type"] == "Recreate"
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in store["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v}
    mounts = {m["name"]: m["mountPath"] for m in store["template"]["spec"]["containers"][0]["volumeMounts"]}
    (volume,) = claims
    assert mounts[volume] == "/data/store" and claims[volume] in resources("PersistentVolumeClaim")

    job = resources("Job")["orchestrator"]["spec"]
    assert job["backoffLimit"] == 0 and job["template"]["spec"]["restartPolicy"] == "Never"
    pod = job["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    for path in ("/app/results", "/app/.fixbench/bench"):
        claim = volumes[mounts[path]["name"]]["persistentVolumeClaim"]["claimName"]
        assert claim in resources("PersistentVolumeClaim"), path
        assert "subPath" not in mounts[path], "kubelet makes subPath folders root's; the orchestrator is not root"
    config = volumes[mounts["/app/studies/cluster"]["name"]]["configMap"]["name"]
    env = container_env(pod["containers"][0])
    study_file = env["FIXBENCH_STUDY"].removeprefix("studies/cluster/")
    study = yaml.safe_load(resources("ConfigMap")[config]["data"][study_file])
    # the ConfigMap is the compose quick study, kept in step with it
    assert study == load_yaml(REPO_ROOT / "studies" / "compose-quick.yaml")


@pytest.mark.parametrize("where", [w for w, _ in pod_specs()])
def test_pods_are_least_privilege_with_limits(where: str) -> None:
    spec = dict(pod_specs())[where]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    emptydirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    for container in spec["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where}: {kind}"
        # a read-only root needs a writable /tmp (HOME, caches)
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert tmp and tmp[0]["name"] in emptydirs, f"{where}: no emptyDir at /tmp"


@pytest.mark.parametrize("where", [w for w, _ in pod_specs()])
def test_tls_and_token_are_on_from_the_secrets(where: str) -> None:
    spec = dict(pod_specs())[where]
    (container,) = spec["containers"]
    env = container_env(container)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    secrets = {v["name"]: v for v in spec["volumes"] if "projected" in v}
    assert len(secrets) == 1, f"{where}: one projected volume of the two Secrets"
    (volume,) = secrets.values()
    files = {}
    for source in volume["projected"]["sources"]:
        for item in source["secret"]["items"]:
            files[item["path"]] = (source["secret"]["name"], item["key"])
    mount = mounts[volume["name"]]
    assert mount.get("readOnly") is True
    for variable, file in SECRET_ENV.items():
        assert env[variable] == f"{mount['mountPath']}/{file}", f"{where}: {variable}"
        assert file in files, f"{where}: {file} is not projected from a Secret"
    assert files["fixbench_token"] == ("fixbench-token", "token")
    assert files["fixbench_tls_key"] == ("fixbench-tls", "tls.key")
    # readable by the pod's group (fsGroup), by no one else
    assert volume["projected"]["defaultMode"] == 0o440 and spec["securityContext"]["fsGroup"] == 10001
    # clients dial replicas by IP and check the certificate's shared name
    assert env["FIXBENCH_TLS_SERVER_NAME"] == "fixbench.internal"
    assert "FIXBENCH_TOKEN" not in env, "the token comes from the Secret, never from the manifest"


# --- NetworkPolicy semantics (networking.k8s.io/v1), enough for these manifests ----------

def _peer_matches(peer: dict, labels: dict[str, str]) -> bool:
    # Peers here are pods of this namespace, matched by labels. A peer that names another
    # namespace or an ipBlock never matches a fixbench pod; matchExpressions are not used.
    if "ipBlock" in peer or "namespaceSelector" in peer:
        return False
    selector = peer.get("podSelector", {})
    assert "matchExpressions" not in selector, "extend the evaluator before using matchExpressions"
    return selector.get("matchLabels", {}).items() <= labels.items()


def _port_matches(rule: dict, port: int) -> bool:
    ports = rule.get("ports")
    return not ports or any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports)


def _selects(policy: dict, labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    assert "matchExpressions" not in selector
    return selector.get("matchLabels", {}).items() <= labels.items()


def allowed(policies: list[dict], direction: str, pod: dict[str, str], peer: dict[str, str], port: int) -> bool:
    """Whether `policies` let `pod` send (Egress) to / receive (Ingress) from `peer`."""
    key = "egress" if direction == "Egress" else "ingress"
    side = "to" if key == "egress" else "from"
    selecting = [p for p in policies if _selects(p, pod) and direction in p["spec"]["policyTypes"]]
    if not selecting:
        return True  # no policy isolates the pod in this direction
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(side)
            if (not peers or any(_peer_matches(x, peer) for x in peers)) and _port_matches(rule, port):
                return True
    return False


def can_call(client: str, server: str, port: int = 50051, policies: list[dict] | None = None) -> bool:
    """Whether pods of workload `client` may open a TCP connection to pods of `server`."""
    policies = list(resources("NetworkPolicy").values()) if policies is None else policies
    labels = {name: d["spec"]["template"]["metadata"]["labels"]
              for kind in ("Deployment", "Job") for name, d in resources(kind).items()}
    return (allowed(policies, "Egress", labels[client], labels[server], port)
            and allowed(policies, "Ingress", labels[server], labels[client], port))


def test_network_policies_let_approaches_reach_only_the_store() -> None:
    approaches = approach_names()
    for approach in approaches:
        assert can_call(approach, "store")
        assert can_call("orchestrator", approach)
        assert not can_call(approach, "evaluator")
        assert not can_call(approach, "orchestrator")
        for other in approaches:
            if other != approach:
                assert not can_call(approach, other), f"{approach} -> {other}"
        assert not can_call(approach, "store", port=22)
    assert can_call("orchestrator", "store") and can_call("orchestrator", "evaluator")
    assert can_call("evaluator", "store")
    assert not can_call("evaluator", approaches[0]) and not can_call("store", "evaluator")


def test_network_policies_deny_by_default_and_allow_only_cluster_dns_outside() -> None:
    policies = resources("NetworkPolicy").values()
    deny = [p for p in policies
            if p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, "no default-deny policy for the namespace"
    outside = [(p["metadata"]["name"], peer) for p in policies
               for rule in p["spec"].get("egress") or [] for peer in rule.get("to") or [{}]
               if "namespaceSelector" in peer or "ipBlock" in peer or peer == {}]
    # the only way out of the namespace: kube-dns on port 53
    assert outside
    for name, peer in outside:
        assert peer.get("podSelector", {}).get("matchLabels") == {"k8s-app": "kube-dns"}, (name, peer)
        assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}


def test_network_policy_evaluator_can_fail() -> None:
    """The evaluation is not vacuous: without the approaches' policy, default-deny cuts them
    off the store, and without any policy everything is open."""
    policies = resources("NetworkPolicy")
    without = [p for name, p in policies.items() if name != "approaches"]
    assert not can_call("noop", "store", policies=without)
    assert can_call("noop", "evaluator", policies=[])


@pytest.mark.parametrize("where", [w for w, _ in pod_specs()])
def test_only_the_platform_holds_the_store_signing_key(where: str) -> None:
    """The store, the evaluator and the orchestrator mount Secret fixbench-store-key; an
    approach pod never does (it gets a per-job credential in the RepairJob instead)."""
    spec = dict(pod_specs())[where]
    (container,) = spec["containers"]
    env = container_env(container)
    projected = [v for v in spec["volumes"] if "projected" in v]
    holds = any(src["secret"]["name"] == "fixbench-store-key" for v in projected for src in v["projected"]["sources"])
    platform = where in ("Deployment/store", "Deployment/evaluator", "Job/orchestrator")
    assert holds == platform, where
    assert env.get("FIXBENCH_STORE_KEY_FILE") == ("/run/secrets/fixbench/fixbench_store_key" if platform else None), where
    assert "FIXBENCH_STORE_KEY" not in env
