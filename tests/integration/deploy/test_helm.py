"""The Helm chart under deploy/helm/apikm, linted and rendered by a real helm.

Each value set is linted with ``helm lint --strict`` and rendered with ``helm template``; the
rendered objects are checked for what matters in production: secrets only in Secrets, the
same secret source for every replica, non-root pods, the probes, migrations before serving,
and PostgreSQL whenever more than one pod may run. deploy/kubernetes/apikm.yaml must be what
the chart renders.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from apikm.config import Settings, load_settings
from apikm.devstack.java import cache_dir
from apikm.encryption import parse_encryption_keys
from apikm.keys.hashing import parse_peppers
from apikm.web.ui.session import parse_session_secrets
from tests.support.github_signing import SigningKey

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "apikm"
EXAMPLE = ROOT / "deploy" / "helm" / "examples" / "minimal.yaml"
MANIFEST = ROOT / "deploy" / "kubernetes" / "apikm.yaml"
NAMESPACE = "apikm"

SECRET_NAME = re.compile(r"SECRET|PEPPER|PASSWORD|DATABASE_URL|SMTP_URL|ENCRYPTION_KEY")
NOT_SECRETS = {"APIKM_REVOKE_ON_SECRET_REUSE"}  # names a secret, holds a yes or no
SHARED = ("APIKM_PEPPERS", "APIKM_SESSION_SECRET", "APIKM_ENCRYPTION_KEY")
# Set by the chart before the setting exists on this branch (issue 9: signing keys encrypted
# in the database); every other variable must be one apikm reads.
PENDING_SETTINGS = {"APIKM_ENCRYPTION_KEY"}

DB_PASSWORD = "db-pw-Zq81vX2mLr"
SMTP_PASSWORD = "smtp-pw-Kd93mQ"
SECRETS = {
    "peppers": "v2:pepper-two-0123456789abcdef,v1:pepper-one-0123456789abcdef",
    "sessionSecret": "session-secret-0123456789abcdef0123456789",
    "encryptionKey": "k1:" + "A" * 43,
    "oidcClientSecret": "oidc-client-secret-4711",
    "smtpUrl": f"smtp://apikm:{SMTP_PASSWORD}@smtp.example.org:587?starttls=true",
}
# Optional secrets: the pods refer to them whether or not the Secret holds them.
OPTIONAL_SECRETS = ("APIKM_OIDC_CLIENT_SECRET", "APIKM_EXCHANGE_CLIENT_SECRET", "APIKM_SMTP_URL")
LEAK_KEYS = SigningKey().github_document()  # public keys, as GitHub publishes them
LEAK_KEYS_DIR = "/etc/apikm/leak-report-keys"
NOTIFY_VALUES: dict[str, Any] = {
    "notifications": {"enabled": True, "smtpFrom": "apikm <apikm@example.org>",
                      "adminEmails": ["security@example.org", "soc@example.org"],
                      "expiryWarningDays": [14, 3, 1]},
    "alerts": {"revokeOnSecretReuse": True},
    "leakReports": {"publicKeys": LEAK_KEYS},
    "gatewayUrls": ["https://maps.example.org/wms?service=WMS", "https://data.example.org"],
}
BASE: dict[str, Any] = {
    "config": {
        "APIKM_KEYCLOAK_URL": "https://keycloak.example.org",
        "APIKM_KEYCLOAK_REALM": "example",
        "APIKM_PUBLIC_URL": "https://apikm.example.org",
        "APIKM_TRUSTED_PROXIES": "10.42.0.0/16",
        "APIKM_LOG_JSON": "true",
    },
    "secrets": SECRETS,
    "database": {"url": f"postgresql://apikm:{DB_PASSWORD}@pg.example.org:5432/apikm"},
}
REDIS_URL = "redis://redis-master.redis.svc.cluster.local:6379/0"
POD_TMP = "/tmp"  # noqa: S108 (the pod's emptyDir, not this machine's /tmp)

Docs = list[dict[str, Any]]


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": BASE,
    "redis": merged(BASE, {"redis": {"url": REDIS_URL}}),
    "existing-secret": merged({k: v for k, v in BASE.items() if k != "secrets"}, {
        "secrets": {"existingSecret": "apikm-secrets"},
        "database": {"url": "", "existingSecret": "pg-app", "existingSecretKey": "uri"},
        "redis": {"existingSecret": "redis-auth", "existingSecretKey": "url"},
    }),
    "everything": merged(BASE, {
        **NOTIFY_VALUES,
        "redis": {"url": REDIS_URL},
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 8},
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "networkPolicy": {"enabled": True, "egress": {"webhooks": {
            "enabled": True, "to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}]}}},
        "ingress": {"enabled": True, "hosts": [{"host": "apikm.example.org",
                                                "paths": [{"path": "/", "pathType": "Prefix"}]}],
                    "tls": [{"secretName": "apikm-tls", "hosts": ["apikm.example.org"]}]},
        "forwardAuth": {"ingresses": [{
            "name": "geoserver", "host": "maps.example.org",
            "paths": [{"path": "/geoserver", "pathType": "Prefix"}],
            "service": {"name": "geoserver", "port": 8080},
            "roles": ["geoserver:read", "analyst"]}]},
    }),
    "sqlite-one-replica": merged({k: v for k, v in BASE.items() if k != "database"},
                                 {"replicaCount": 1}),
}
EXAMPLE_SET = "example"


# --- running helm -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def helm() -> str:
    cached = cache_dir() / "bin" / "helm"
    if cached.is_file():
        return str(cached)
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    built = subprocess.run([str(ROOT / "scripts" / "helm.sh")], capture_output=True, text=True,
                           check=False)
    assert built.returncode == 0, f"scripts/helm.sh could not provide helm:\n{built.stderr}"
    return built.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def values_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    directory = tmp_path_factory.mktemp("values")

    def write(name: str) -> Path:
        if name == EXAMPLE_SET:
            return EXAMPLE
        path = directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump(VALUE_SETS[name]))
        return path

    return write


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, check=False,
                          timeout=120)


def template(helm: str, values: Path | dict[str, Any], tmp_path: Path | None = None,
             ) -> subprocess.CompletedProcess[str]:
    if isinstance(values, dict):
        assert tmp_path is not None
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        values = path
    return run_helm(helm, "template", "apikm", str(CHART), "--namespace", NAMESPACE,
                    "-f", str(values))


def objects(text: str) -> Docs:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def one(docs: Docs, kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def rendered(helm: str, values_file: Callable[[str], Path]) -> Callable[[str], Docs]:
    cache: dict[str, Docs] = {}

    def render(name: str) -> Docs:
        if name not in cache:
            result = template(helm, values_file(name))
            assert result.returncode == 0, result.stderr
            cache[name] = objects(result.stdout)
        return cache[name]

    return render


def config_map(docs: Docs) -> dict[str, Any]:
    """The ConfigMap of apikm's settings (the leak report keys may have one too)."""
    [found] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "apikm"]
    return found


def pod_containers(deployment: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["apikm"]
    return containers[0]


def secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    refs = {}
    for item in container.get("env", []):
        assert "value" not in item, f"{item['name']} is a literal in the pod spec"
        ref = item["valueFrom"]["secretKeyRef"]
        refs[item["name"]] = (ref["name"], ref["key"])
    return refs


ALL_SETS = [*VALUE_SETS, EXAMPLE_SET]
DB_SETS = [name for name in ALL_SETS if name != "sqlite-one-replica"]


# --- lint ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_SETS)
def test_lint_strict(helm: str, values_file: Callable[[str], Path], name: str) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values_file(name)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert "[ERROR]" not in result.stdout and "[WARNING]" not in result.stdout


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]


# --- secrets ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_SETS)
def test_no_secret_outside_secrets(rendered: Callable[[str], Docs],
                                   name: str) -> None:
    docs = rendered(name)
    configmaps = [doc for doc in docs if doc["kind"] == "ConfigMap"]
    assert configmaps
    for configmap in configmaps:
        for key, value in configmap["data"].items():
            assert key in NOT_SECRETS or not SECRET_NAME.search(key), \
                f"{key} in ConfigMap {configmap['metadata']}"
            assert not re.search(r"://[^/\s]*@", value), \
                f"{key}={value!r} looks like a URL with credentials"
    secret_values = [*SECRETS.values(), DB_PASSWORD, SMTP_PASSWORD]
    for doc in docs:
        if doc["kind"] == "Secret":
            continue
        text = yaml.safe_dump(doc)
        for value in secret_values:
            assert value not in text, f"a secret value appears in {doc['kind']}"


@pytest.mark.parametrize("name", ALL_SETS)
def test_every_replica_reads_the_same_secrets(
        rendered: Callable[[str], Docs], name: str) -> None:
    docs = rendered(name)
    deployment = one(docs, "Deployment")
    expected_secret = ("apikm-secrets" if name == "existing-secret" else "apikm")
    all_refs = [secret_refs(container) for container in pod_containers(deployment)]
    assert len(all_refs) == 2  # migrate + apikm
    assert all_refs[0] == all_refs[1], "the migration and the server read different secrets"
    refs = all_refs[0]
    for variable in SHARED:
        assert refs[variable] == (expected_secret, variable)
    # Nothing per pod: no secret mounted or generated in the pod template.
    for volume in deployment["spec"]["template"]["spec"]["volumes"]:
        assert "secret" not in volume, volume
    for container in pod_containers(deployment):
        assert all("secretRef" not in source for source in container.get("envFrom", []))
    if name == "existing-secret":
        assert not [doc for doc in docs if doc["kind"] == "Secret"]
        assert refs["APIKM_DATABASE_URL"] == ("pg-app", "uri")
        assert refs["APIKM_RATE_LIMIT_STORAGE"] == ("redis-auth", "url")
        return
    secret = one(docs, "Secret")
    assert secret["metadata"]["name"] == expected_secret
    data = secret["stringData"]
    for variable, (secret_name, key) in refs.items():
        assert secret_name == expected_secret
        if variable not in OPTIONAL_SECRETS:
            assert key in data, f"{variable} refers to {key}, missing from the Secret"
    if name != EXAMPLE_SET:
        assert data["APIKM_PEPPERS"] == SECRETS["peppers"]
        assert data["APIKM_SESSION_SECRET"] == SECRETS["sessionSecret"]
        assert data["APIKM_ENCRYPTION_KEY"] == SECRETS["encryptionKey"]
    # What the chart puts in the Secret is what apikm accepts.
    assert parse_peppers(data["APIKM_PEPPERS"]).peppers
    assert parse_session_secrets(data["APIKM_SESSION_SECRET"])
    assert parse_encryption_keys(data["APIKM_ENCRYPTION_KEY"]).keys


def test_rendering_is_deterministic(helm: str, values_file: Callable[[str], Path]) -> None:
    """Two renders give the same Secret and pod template: nothing is made up per upgrade
    (a regenerated pepper would invalidate every key)."""
    first, second = (template(helm, values_file("defaults")) for _ in range(2))
    assert first.returncode == 0 and first.stdout == second.stdout


@pytest.mark.parametrize("name", ALL_SETS)
def test_settings_are_real_and_valid(rendered: Callable[[str], Docs],
                                     name: str, tmp_path: Path) -> None:
    """Every APIKM_* variable the chart sets is one apikm reads, with a value it accepts."""
    docs = rendered(name)
    mounted_keys = _mount_leak_keys(docs, tmp_path)
    configmap = config_map(docs)["data"]
    secrets = next((d["stringData"] for d in docs if d["kind"] == "Secret"), {})
    deployment = one(docs, "Deployment")
    env_names = set(secret_refs(main_container(deployment)))
    known = {f"APIKM_{field.upper()}" for field in Settings.model_fields}
    unknown = (set(configmap) | env_names) - known - PENDING_SETTINGS
    assert not unknown, f"not apikm settings: {sorted(unknown)}"
    values = {**configmap, **{k: v for k, v in secrets.items() if k in known}}
    if mounted_keys is not None:  # the file the pod reads, here
        values["APIKM_LEAK_REPORT_KEYS"] = str(mounted_keys)
    settings = load_settings(_env_file=None, **{
        var.removeprefix("APIKM_").lower(): value for var, value in values.items()})
    assert settings.port == 8000 and settings.host == "0.0.0.0"
    assert settings.keycloak_url == "https://keycloak.example.org"


def _mount_leak_keys(docs: Docs, directory: Path) -> Path | None:
    """The leak report keys file as a pod sees it, from the chart's ConfigMap."""
    keys = [d for d in docs if d["kind"] == "ConfigMap"
            and d["metadata"]["name"].endswith("-leak-report-keys")]
    if not keys:
        return None
    [(name, content)] = keys[0]["data"].items()
    path = directory / name
    path.write_text(content)
    return path


# --- pods ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_SETS)
def test_pods_run_unprivileged(rendered: Callable[[str], Docs],
                               name: str) -> None:
    deployment = one(rendered(name), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod_containers(deployment):
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["resources"]["requests"] and container["resources"]["limits"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["tmp"]["emptyDir"]
    mounts = {m["mountPath"]: m["name"] for c in pod_containers(deployment)
              for m in c["volumeMounts"]}
    read_only = {m["mountPath"]: m["name"] for c in pod_containers(deployment)
                 for m in c["volumeMounts"] if m.get("readOnly")}
    for volume in read_only.values():  # GitHub's public keys: a ConfigMap, read only
        assert set(volumes[volume]) == {"name", "configMap"}
    if name in DB_SETS:
        # With PostgreSQL the pod writes nothing but /tmp.
        writable = {path: v for path, v in mounts.items() if path not in read_only}
        assert writable == {POD_TMP: "tmp"}
        assert set(volumes) - set(read_only.values()) == {"tmp"}
        data_dir = config_map(rendered(name))["data"]["APIKM_DATA_DIR"]
        assert data_dir.startswith(f"{POD_TMP}/")


@pytest.mark.parametrize("name", ALL_SETS)
def test_probes_and_port(rendered: Callable[[str], Docs], name: str) -> None:
    docs = rendered(name)
    container = main_container(one(docs, "Deployment"))
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert config_map(docs)["data"]["APIKM_PORT"] == "8000"
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http",
                                         "protocol": "TCP"}]
    assert service["spec"]["selector"] == \
        one(docs, "Deployment")["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("name", ALL_SETS)
def test_migrations_run_before_serving(rendered: Callable[[str], Docs],
                                       name: str) -> None:
    deployment = one(rendered(name), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [migrate] = pod["initContainers"]
    server = main_container(deployment)
    assert migrate["args"] == ["migrate"]
    assert server["args"] == ["serve", "--no-migrate"]
    image = "registry.example.org/apikm:0.1.0" if name == EXAMPLE_SET else "apikm:0.1.0"
    assert migrate["image"] == server["image"] == image
    assert migrate["envFrom"] == server["envFrom"] == [{"configMapRef": {"name": "apikm"}}]


# --- replicas and their database ----------------------------------------------------------

@pytest.mark.parametrize(("extra", "pods"), [
    ({"replicaCount": 2}, 2),
    ({"replicaCount": 1, "autoscaling": {"enabled": True, "maxReplicas": 4}}, 4),
])
def test_several_replicas_without_database_fail(helm: str, tmp_path: Path,
                                                extra: dict[str, Any], pods: int) -> None:
    values = merged({k: v for k, v in BASE.items() if k != "database"}, extra)
    result = template(helm, values, tmp_path)
    assert result.returncode != 0
    assert f"apikm: {pods} replicas need PostgreSQL: set database.url or " \
           "database.existingSecret" in result.stderr
    assert "SQLite is one file in one pod and cannot be shared" in result.stderr


def test_one_replica_on_sqlite(rendered: Callable[[str], Docs]) -> None:
    docs = rendered("sqlite-one-replica")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert config_map(docs)["data"]["APIKM_DATA_DIR"] == "/var/lib/apikm"
    assert "APIKM_DATABASE_URL" not in secret_refs(main_container(deployment))
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert set(volumes) == {"tmp", "data"}


@pytest.mark.parametrize(("extra", "message"), [
    ({"config": {"APIKM_DB_PASSWORD": "x"}}, "invalid propertyName 'APIKM_DB_PASSWORD'"),
    ({"config": {"APIKM_SESSION_SECRET": "x" * 40}}, "invalid propertyName"),
    ({"config": {"KEYCLOAK_URL": "https://kc"}}, "invalid propertyName 'KEYCLOAK_URL'"),
    ({"redis": {"url": "redis://:hunter2hunter2@redis:6379"}}, "/redis/url"),
    ({"replicaCount": "two"}, "/replicaCount"),
    ({"secrets": {"peppers": "too-short"}}, "/secrets/peppers"),
    ({"secrets": {"sessionSecret": "short"}}, "/secrets/sessionSecret"),
    ({"secrets": {"encryptionKey": "a-long-passphrase-not-a-key"}}, "/secrets/encryptionKey"),
    ({"database": {"url": "mysql://u:p@h/db"}}, "/database/url"),
    ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
    ({"replicas": 3}, "additional properties 'replicas' not allowed"),
    ({"secrets": {"existingSecret": "mine"}}, "secrets.peppers is set together with "
                                              "secrets.existingSecret"),
    ({"secrets": {"encryptionKey": ""}}, "set secrets.encryptionKey"),
    ({"config": {"APIKM_SMTP_URL": "smtp://u:p@mail"}}, "invalid propertyName 'APIKM_SMTP_URL'"),
    ({"secrets": {"smtpUrl": "https://mail.example.org"}}, "/secrets/smtpUrl"),
    ({"secrets": {"existingSecret": "mine", "peppers": "", "sessionSecret": "",
                  "encryptionKey": "", "oidcClientSecret": ""}},
     "secrets.smtpUrl is set together with secrets.existingSecret"),
    ({"notifications": {"adminEmails": ["a@x.org,b@y.org"]}}, "/notifications/adminEmails/0"),
    ({"notifications": {"expiryWarningDays": [0]}}, "/notifications/expiryWarningDays/0"),
    ({"notifications": {"enabled": "yes"}}, "/notifications/enabled"),
    ({"alerts": {"revokeOnSecretReuse": "always"}}, "/alerts/revokeOnSecretReuse"),
    ({"gatewayUrls": ["maps.example.org"]}, "/gatewayUrls/0"),
    ({"notifications": {"adminEmails": ["a@example.org"]},
      "config": {"APIKM_ADMIN_EMAILS": "b@example.org"}},
     "APIKM_ADMIN_EMAILS is set twice, in config and by its own value"),
    ({"leakReports": {"publicKeys": "{}", "existingConfigMap": "github-keys"}},
     "set leakReports.publicKeys or leakReports.existingConfigMap, not both"),
])
def test_bad_values_fail_early(helm: str, tmp_path: Path, extra: dict[str, Any],
                               message: str) -> None:
    result = template(helm, merged(BASE, extra), tmp_path)
    assert result.returncode != 0
    assert message in result.stderr


def test_config_takes_every_setting_but_the_secrets(helm: str, tmp_path: Path) -> None:
    """The schema's secret filter matches apikm's secrets, not its ordinary settings."""
    chart_managed = {"APIKM_PORT", "APIKM_DATA_DIR", "APIKM_RATE_LIMIT_STORAGE"}
    secret_settings = {"APIKM_PEPPERS", "APIKM_SESSION_SECRET", "APIKM_ENCRYPTION_KEY",
                       "APIKM_OIDC_CLIENT_SECRET", "APIKM_SMTP_URL",
                       "APIKM_EXCHANGE_CLIENT_SECRET", "APIKM_DATABASE_URL"}
    names = {f"APIKM_{field.upper()}" for field in Settings.model_fields}
    assert secret_settings <= names
    config = {name: "1" for name in names - secret_settings - chart_managed}
    config |= BASE["config"] | {"APIKM_KEYCLOAK_ADMIN_URL": "https://kc.example.org"}
    result = template(helm, merged(BASE, {"config": config}), tmp_path)
    assert result.returncode == 0, result.stderr
    assert set(one(objects(result.stdout), "ConfigMap")["data"]) >= set(config)
    for name in secret_settings:
        refused = template(helm, merged(BASE, {"config": {name: "x" * 40}}), tmp_path)
        assert f"invalid propertyName '{name}'" in refused.stderr, name


# --- optional parts -----------------------------------------------------------------------

def test_redis_url_goes_to_the_configmap(rendered: Callable[[str], Docs]) -> None:
    assert one(rendered("redis"), "ConfigMap")["data"]["APIKM_RATE_LIMIT_STORAGE"] == REDIS_URL
    assert "APIKM_RATE_LIMIT_STORAGE" not in one(rendered("defaults"), "ConfigMap")["data"]


def test_defaults_leave_cluster_extras_off(rendered: Callable[[str], Docs],
                                           ) -> None:
    kinds = sorted(doc["kind"] for doc in rendered("defaults"))
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service",
                     "ServiceAccount"]
    assert one(rendered("defaults"), "Deployment")["spec"]["replicas"] == 2


def test_everything_on(rendered: Callable[[str], Docs]) -> None:
    docs = rendered("everything")
    labels = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert "replicas" not in one(docs, "Deployment")["spec"]  # the autoscaler decides

    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "apikm"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 8)

    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": labels}}

    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics",
                                             "interval": "30s"}]
    assert monitor["spec"]["selector"]["matchLabels"] == labels

    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == labels
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{
        "ports": [{"port": "http", "protocol": "TCP"}],
        "from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ingress-nginx"}}}]}]
    egress_ports = sorted((p["port"], p["protocol"]) for rule in policy["egress"]
                          for p in rule["ports"])
    # DNS, PostgreSQL, Redis, Keycloak (https://keycloak.example.org → 443), the mail
    # server (secrets.smtpUrl → 587), webhook receivers (443); nothing else.
    assert egress_ports == [(53, "TCP"), (53, "UDP"), (443, "TCP"), (443, "TCP"), (587, "TCP"),
                            (5432, "TCP"), (6379, "TCP")]
    assert policy["egress"][-1] == {"ports": [{"port": 443, "protocol": "TCP"}],
                                    "to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}]}
    dns = next(rule for rule in policy["egress"] if rule["ports"][0]["port"] == 53)
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}

    ingresses = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Ingress"}
    assert set(ingresses) == {"apikm", "geoserver"}
    own = ingresses["apikm"]["spec"]
    assert own["rules"][0]["http"]["paths"][0]["backend"] == {
        "service": {"name": "apikm", "port": {"name": "http"}}}
    protected = ingresses["geoserver"]
    assert protected["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/auth-url":
            "http://apikm.apikm.svc.cluster.local:8000/v1/auth?role=geoserver:read&role=analyst",
        "nginx.ingress.kubernetes.io/auth-response-headers":
            "X-Auth-User,X-Auth-User-Id,X-Auth-Roles,X-Auth-Groups,X-Auth-Key-Id",
    }
    assert protected["spec"]["ingressClassName"] == "nginx"
    assert protected["spec"]["rules"][0]["http"]["paths"][0]["backend"] == {
        "service": {"name": "geoserver", "port": {"number": 8080}}}


def test_notification_settings_reach_the_pods(rendered: Callable[[str], Docs]) -> None:
    docs = rendered("everything")
    data = config_map(docs)["data"]
    assert {k: data[k] for k in (
        "APIKM_NOTIFY_ENABLED", "APIKM_SMTP_FROM", "APIKM_ADMIN_EMAILS",
        "APIKM_EXPIRY_WARNING_DAYS", "APIKM_REVOKE_ON_SECRET_REUSE", "APIKM_GATEWAY_URLS",
        "APIKM_LEAK_REPORT_KEYS")} == {
        "APIKM_NOTIFY_ENABLED": "true", "APIKM_SMTP_FROM": "apikm <apikm@example.org>",
        "APIKM_ADMIN_EMAILS": "security@example.org,soc@example.org",
        "APIKM_EXPIRY_WARNING_DAYS": "14,3,1", "APIKM_REVOKE_ON_SECRET_REUSE": "true",
        "APIKM_GATEWAY_URLS": "https://maps.example.org/wms?service=WMS,https://data.example.org",
        "APIKM_LEAK_REPORT_KEYS": f"{LEAK_KEYS_DIR}/github-secret-scanning.json"}
    # The SMTP URL (it holds a password) only in the Secret, read by both containers.
    secret = next(d for d in docs if d["kind"] == "Secret")["stringData"]
    assert secret["APIKM_SMTP_URL"] == SECRETS["smtpUrl"]
    deployment = one(docs, "Deployment")
    for container in pod_containers(deployment):
        assert secret_refs(container)["APIKM_SMTP_URL"] == ("apikm", "APIKM_SMTP_URL")
        assert {"name": "leak-report-keys", "mountPath": LEAK_KEYS_DIR,
                "readOnly": True} in container["volumeMounts"]
    # GitHub's keys: the chart's ConfigMap, mounted; a change rolls the pods.
    keys = next(d for d in docs if d["kind"] == "ConfigMap"
                and d["metadata"]["name"] == "apikm-leak-report-keys")
    assert keys["data"] == {"github-secret-scanning.json": LEAK_KEYS}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/leak-report-keys" in annotations
    # Nothing of it by default: apikm's own defaults apply.
    defaults = config_map(rendered("defaults"))["data"]
    assert not {"APIKM_NOTIFY_ENABLED", "APIKM_ADMIN_EMAILS", "APIKM_EXPIRY_WARNING_DAYS",
                "APIKM_REVOKE_ON_SECRET_REUSE", "APIKM_LEAK_REPORT_KEYS"} & set(defaults)


def test_leak_keys_from_a_configmap_of_ones_own(helm: str, tmp_path: Path) -> None:
    values = merged(BASE, {"leakReports": {"existingConfigMap": "github-keys",
                                           "existingConfigMapKey": "keys.json"}})
    result = template(helm, values, tmp_path)
    assert result.returncode == 0, result.stderr
    docs = objects(result.stdout)
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"] == ["apikm"]
    assert config_map(docs)["data"]["APIKM_LEAK_REPORT_KEYS"] == \
        f"{LEAK_KEYS_DIR}/keys.json"
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "leak-report-keys", "configMap": {
        "name": "github-keys", "items": [{"key": "keys.json", "path": "keys.json"}]}} in volumes


@pytest.mark.parametrize(("smtp", "extra", "ports"), [
    ("smtps://mailer:pw@mail.example.org", {}, [465]),
    ("smtp://mail.example.org", {}, [25]),
    ("smtp://mailer:pw@mail.example.org:2525", {}, [2525]),
    ("", {"enabled": True, "ports": [587]}, [587]),  # the URL in an existing Secret
    ("smtps://mail.example.org", {"ports": [10465]}, [10465]),
])
def test_smtp_egress_follows_the_mail_server(helm: str, tmp_path: Path, smtp: str,
                                             extra: dict[str, Any], ports: list[int]) -> None:
    values = merged(BASE, {"secrets": {"smtpUrl": smtp},
                           "networkPolicy": {"enabled": True, "egress": {"smtp": extra}}})
    result = template(helm, values, tmp_path)
    assert result.returncode == 0, result.stderr
    egress = one(objects(result.stdout), "NetworkPolicy")["spec"]["egress"]
    assert egress[-1] == {"ports": [{"port": p, "protocol": "TCP"} for p in ports]}
    assert "# The mail server" in result.stdout


def test_no_smtp_egress_without_mail(rendered: Callable[[str], Docs], helm: str,
                                     tmp_path: Path) -> None:
    values = merged(BASE, {"secrets": {"smtpUrl": ""}, "networkPolicy": {"enabled": True}})
    result = template(helm, values, tmp_path)
    assert result.returncode == 0, result.stderr
    egress = one(objects(result.stdout), "NetworkPolicy")["spec"]["egress"]
    assert [p["port"] for rule in egress for p in rule["ports"]] == [53, 53, 5432, 443]


def test_keycloak_egress_port_follows_its_url(helm: str, tmp_path: Path) -> None:
    values = merged(BASE, {"networkPolicy": {"enabled": True},
                           "config": {"APIKM_KEYCLOAK_URL": "http://keycloak.iam:8080",
                                      "APIKM_KEYCLOAK_ADMIN_URL": "https://kc-admin.example.org"}})
    values["secrets"]["smtpUrl"] = ""  # the Keycloak rule comes last then
    result = template(helm, values, tmp_path)
    assert result.returncode == 0, result.stderr
    policy = one(objects(result.stdout), "NetworkPolicy")["spec"]
    keycloak = policy["egress"][-1]
    assert keycloak["ports"] == [{"port": 8080, "protocol": "TCP"},
                                 {"port": 443, "protocol": "TCP"}]
    assert "to" not in keycloak


def test_notes_show_the_forward_auth_annotations(helm: str, tmp_path: Path) -> None:
    """NOTES.txt, rendered offline (`helm install --dry-run` wants a cluster): a copy of the
    chart with one more template that holds the rendered notes."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n"
        '  notes: {{ include (print $.Template.BasePath "/NOTES.txt") . | quote }}\n')
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(BASE))
    result = run_helm(helm, "template", "apikm", str(chart), "--namespace", NAMESPACE,
                      "-f", str(values), "--show-only", "templates/zz-notes.yaml")
    assert result.returncode == 0, result.stderr
    notes = one(objects(result.stdout), "ConfigMap")["data"]["notes"]
    assert "nginx.ingress.kubernetes.io/auth-url: " \
           '"http://apikm.apikm.svc.cluster.local:8000/v1/auth?role=<required role>"' in notes
    assert "nginx.ingress.kubernetes.io/auth-response-headers: " \
           '"X-Auth-User,X-Auth-User-Id,X-Auth-Roles,X-Auth-Groups,X-Auth-Key-Id"' in notes
    assert "kubectl -n apikm rollout status deployment/apikm" in notes
    assert "WARNING" not in notes  # PostgreSQL is set


# --- the files users copy -----------------------------------------------------------------

def test_checked_in_manifest_is_what_the_chart_renders() -> None:
    result = subprocess.run([str(ROOT / "scripts" / "render-manifest.sh")], capture_output=True,
                            text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stderr
    assert MANIFEST.read_text() == result.stdout, \
        "deploy/kubernetes/apikm.yaml is stale: scripts/render-manifest.sh > " \
        "deploy/kubernetes/apikm.yaml"


def test_readme_install_command_uses_the_example() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "helm install apikm deploy/helm/apikm -f my-values.yaml" in readme
    assert "deploy/helm/examples/minimal.yaml" in readme
    example = yaml.safe_load(EXAMPLE.read_text())
    assert example["database"]["url"] and example["secrets"]["peppers"]
