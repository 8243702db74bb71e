"""deploy/k8s: the Kubernetes manifests pass a strict schema check
(kubernetes-validate from PyPI, which bundles the Kubernetes JSON schemas;
tests/run installs it into .cache/python) against pinned Kubernetes
versions, a misspelled field fails that check, every worker of the mapping
has a Deployment and a PodDisruptionBudget, the probes and the Prometheus
annotations name what the workers serve, and the ConfigMap's files load in
the real worker binaries."""
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import pytest

from nexus import BIN, ROOT, Worker, wait_until

K8S = os.path.join(ROOT, "deploy", "k8s")
PYDEPS = os.path.join(ROOT, ".cache", "python")
# the oldest Kubernetes we claim (policy/v1 PDBs, seccompProfile fields) and
# the newest the pinned kubernetes-validate bundles
VERSIONS = ("1.30.0", "1.37.0")
METRICS_PORT = 9400
PARTITIONS = 4   # NEXUS_TOPIC_PARTITIONS: replicas beyond it would idle


def need_validator():
    if not os.path.isdir(os.path.join(PYDEPS, "kubernetes_validate")):
        pytest.fail("kubernetes-validate is missing from .cache/python: tests/run installs it "
                    "(pip install --target .cache/python kubernetes-validate==1.37.0)")


def yaml_module():
    """PyYAML as installed with kubernetes-validate."""
    need_validator()
    if PYDEPS not in sys.path:
        sys.path.insert(0, PYDEPS)
    import yaml
    return yaml


def load(path):
    with open(path) as f:
        return [d for d in yaml_module().safe_load_all(f) if d]


def validate(paths, version):
    env = dict(os.environ, PYTHONPATH=PYDEPS)
    return subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--no-warn",
                           "-k", version, *paths], env=env, capture_output=True, text=True, timeout=300)


def kustomization():
    return load(os.path.join(K8S, "kustomization.yaml"))[0]


def resource_files():
    return [os.path.join(K8S, r) for r in kustomization()["resources"]]


def objects(kind):
    out = {}
    for path in resource_files():
        for d in load(path):
            if d["kind"] == kind:
                out[d["metadata"]["name"]] = d
    return out


def workers():
    return subprocess.run([os.path.join(BIN, "nexus-schema"), "workers"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.split()


def deployment_of(worker):
    return objects("Deployment").get(worker.replace("_", "-") + "-worker")


def container(dep):
    cs = dep["spec"]["template"]["spec"]["containers"]
    assert len(cs) == 1, [c["name"] for c in cs]
    return cs[0]


def test_kustomization_names_every_manifest():
    k = kustomization()
    listed = set(k["resources"])
    for f in os.listdir(K8S):
        if f.endswith(".yaml") and f not in ("kustomization.yaml", "secret.example.yaml"):
            assert f in listed, f"{f} is not in kustomization.yaml's resources"
    for f in listed:
        assert os.path.isfile(os.path.join(K8S, f)), f
    gen = {g["name"]: g["files"] for g in k["configMapGenerator"]}
    assert sorted(gen["nexus-sync-config"]) == ["mapping.cfg", "worker.cfg"]
    assert k["namespace"] == "nexus-sync"


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_pass_the_strict_schema_check(version):
    need_validator()
    paths = resource_files() + [os.path.join(K8S, "secret.example.yaml")]
    p = validate(paths, version)
    assert p.returncode == 0, p.stdout + p.stderr
    docs = sum(len(load(f)) for f in paths)
    assert (p.stdout + p.stderr).count(" passed for resource ") == docs, p.stdout + p.stderr


def test_kustomize_renders_what_passes_the_check(tmp_path):
    """`kubectl kustomize` (kustomize built into kubectl) renders the folder
    as `kubectl apply -k` would: the ConfigMap is generated from the two
    files under a hashed name, which every Deployment then mounts, and
    everything lands in the namespace. The rendered whole passes the strict
    check too."""
    need_validator()
    import shutil
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.fail("kubectl is missing: tests/run installs Debian's kubernetes-client")
    p = subprocess.run([kubectl, "kustomize", K8S], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(p.stdout)
    v = validate([str(rendered)], VERSIONS[0])
    assert v.returncode == 0, v.stdout + v.stderr
    docs = [d for d in yaml_module().safe_load_all(p.stdout) if d]
    cms = [d for d in docs if d["kind"] == "ConfigMap"]
    assert len(cms) == 1 and cms[0]["metadata"]["name"].startswith("nexus-sync-config-")
    for f in ("worker.cfg", "mapping.cfg"):
        assert cms[0]["data"][f] == open(os.path.join(K8S, f)).read(), f
    deps = [d for d in docs if d["kind"] == "Deployment"]
    assert len(deps) == len(workers())
    for d in deps:
        vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        assert vols["config"]["configMap"]["name"] == cms[0]["metadata"]["name"]
        assert container(d)["image"] == "nexus-sync:0.1.0"
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "nexus-sync", d["metadata"]["name"]


@pytest.mark.parametrize("mutation", [
    ("readinessProbe:", "readinesProbe:"),            # a misspelled container field
    ("  replicas:", "  replica:"),                    # a misspelled spec field
    ("containerPort: 9400", "containerPort: \"9400\""),  # a string for an integer
    ("  maxUnavailable: 1\n  selector:", "  maxUnavailble: 1\n  selector:"),  # in the PDB
])
def test_a_broken_manifest_fails_the_check(tmp_path, mutation):
    """The check is strict: a mutated copy of a real manifest is rejected."""
    need_validator()
    text = open(os.path.join(K8S, "tag-worker.yaml")).read()
    old, new = mutation
    assert text.count(old) == 1, old
    bad = tmp_path / "tag-worker.yaml"
    bad.write_text(text.replace(old, new))
    p = validate([str(bad)], VERSIONS[0])
    assert p.returncode != 0, p.stdout + p.stderr
    assert "did not validate" in p.stdout + p.stderr
    # and the unmutated copy passes, so it is the mutation that failed
    good = tmp_path / "good.yaml"
    good.write_text(text)
    assert validate([str(good)], VERSIONS[0]).returncode == 0


def test_every_worker_has_a_deployment_and_a_pdb():
    pdbs = objects("PodDisruptionBudget")
    names = set()
    for w in workers():
        dep = deployment_of(w)
        assert dep, f"no Deployment for {w}_worker in deploy/k8s"
        names.add(dep["metadata"]["name"])
        assert container(dep)["command"][0] == f"{w}_worker"
        assert 1 <= dep["spec"]["replicas"] <= PARTITIONS
        surge = dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
        assert dep["spec"]["replicas"] + surge <= PARTITIONS, "a rollout would run more pods than partitions"
        sel = dep["spec"]["selector"]["matchLabels"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert sel.items() <= labels.items()
        pdb = pdbs.get(dep["metadata"]["name"])
        assert pdb, f"no PodDisruptionBudget for {w}_worker"
        assert pdb["spec"]["selector"]["matchLabels"] == sel
        assert pdb["spec"].get("maxUnavailable") == 1
    assert names == set(objects("Deployment")), "a Deployment for a worker the mapping does not have"


def test_probes_ports_and_scrape_annotations_name_the_metrics_endpoint():
    svc = objects("Service")["nexus-sync-workers"]
    assert svc["metadata"]["annotations"]["prometheus.io/port"] == str(METRICS_PORT)
    assert svc["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == \
        [("metrics", METRICS_PORT, "metrics")]
    for w in workers():
        dep = deployment_of(w)
        c = container(dep)
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["NEXUS_METRICS_PORT"] == str(METRICS_PORT)
        assert {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"} in c["ports"]
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                            ("startupProbe", "/healthz")):
            assert c[probe]["httpGet"] == {"path": path, "port": "metrics"}, (w, probe)
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        assert ann == {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT),
                       "prometheus.io/path": "/metrics"}
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items(), f"the Service does not select {w}"


def test_pods_run_locked_down_with_secrets_from_files():
    dockerfile = open(os.path.join(ROOT, "deploy", "docker", "Dockerfile")).read()
    for w in workers():
        dep = deployment_of(w)
        pod = dep["spec"]["template"]["spec"]
        c = container(dep)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert f'USER {pod["securityContext"]["runAsUser"]}' in dockerfile
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        res = c["resources"]
        for kind in ("cpu", "memory"):
            assert kind in res["requests"] and kind in res["limits"], (w, kind)
        mi = {k: int(res[k]["memory"].removesuffix("Mi")) for k in ("requests", "limits")}
        assert 16 <= mi["requests"] <= mi["limits"] <= 512, (w, mi)
        # passwords only as files from the mounted Secret
        env = {e["name"]: e for e in c["env"]}
        assert not [n for n in env if n.endswith("_PASSWORD")]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        secret_dirs = [mounts[n] for n, v in volumes.items() if "secret" in v]
        for name in ("NEXUS_NEO4J_PASSWORD_FILE", "NEXUS_WRITER_PASSWORD_FILE"):
            assert os.path.dirname(env[name]["value"]) in secret_dirs, name
        config_dirs = [mounts[n] for n, v in volumes.items() if "configMap" in v]
        assert config_dirs == ["/etc/nexus-sync/config"]
        assert c["command"][1:] == ["--config", "/etc/nexus-sync/config/worker.cfg"]


def test_configmap_files_load_in_every_worker(tmp_path):
    """The ConfigMap's worker.cfg and mapping work in the real binaries, with
    the passwords read from files as in the pods."""
    with open(os.path.join(K8S, "mapping.cfg")) as a, open(os.path.join(ROOT, "schemas", "mapping.cfg")) as b:
        assert a.read() == b.read(), "deploy/k8s/mapping.cfg differs: cp schemas/mapping.cfg deploy/k8s/"
    (tmp_path / "neo4j-password").write_text("s3cret-neo4j\n")
    (tmp_path / "writer-password").write_text("s3cret-writer\n")
    env = {"PATH": os.environ["PATH"], "NEXUS_MAPPING": os.path.join(K8S, "mapping.cfg"),
           "NEXUS_NEO4J_PASSWORD_FILE": str(tmp_path / "neo4j-password"),
           "NEXUS_WRITER_PASSWORD_FILE": str(tmp_path / "writer-password")}
    for w in workers():
        p = subprocess.run([os.path.join(BIN, f"{w}_worker"), "--config", os.path.join(K8S, "worker.cfg"),
                            "--dump-config"], env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert '"bootstrap.servers" = "kafka:9092"' in p.stdout
        assert 'url = "http://neo4j:7474"' in p.stdout and "host=postgres" in p.stdout
        assert '"queued.max.messages.kbytes" = "16384"' in p.stdout  # the memory limits rest on it
        assert "s3cret" not in p.stdout and p.stdout.count('password = "********"') == 2, p.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError:
        return None, ""


def test_a_worker_serves_the_probe_paths(nx, tmp_path):
    """A real worker, with the Deployment's metrics settings (on a free port
    instead of 9400, which other processes here may hold), answers every
    path the probes and the scrape annotations name."""
    dep = deployment_of("tag")
    c = container(dep)
    dump = subprocess.run([os.path.join(BIN, "tag_worker"), "--dump-config"], env=nx.worker_env(),
                          capture_output=True, text=True, timeout=30).stdout
    if "metrics" not in dump:
        pytest.skip("this build of the workers has no metrics endpoint yet (issue 7 item 1)")
    port = free_port()
    paths = {c[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe", "startupProbe")}
    paths.add(dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"])
    w = Worker(nx, "tag", str(tmp_path / "w"), f"k8s-probe-{uuid.uuid4().hex[:8]}",
               NEXUS_METRICS_PORT=port, NEXUS_METRICS_BIND="127.0.0.1")
    try:
        w.start()
        for path in sorted(paths):
            wait_until(lambda: get(port, path)[0] == 200, 120, what=f"GET {path} answering 200")
        status, body = get(port, "/metrics")
        assert status == 200 and "# TYPE" in body
        assert w.proc.poll() is None
    finally:
        w.stop()
