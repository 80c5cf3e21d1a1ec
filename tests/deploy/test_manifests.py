"""The deployment files in deploy/: valid for Kubernetes and for Compose, lint-clean, wired the
way ragtune needs (one adapters path, one URL per vLLM replica, the same LoRA limits on both
sides), and safe (a non-root image with no model weights, no secret in any file). Offline."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
# The oldest Kubernetes the manifests are written for (the schemas come with kubernetes-validate).
KUBERNETES_VERSION = "1.34.0"
# Kept beside the manifests, applied by hand, never by kustomization.yaml.
TEMPLATES = {"secret.example.yaml"}
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
WEIGHT_SUFFIXES = {".safetensors", ".gguf", ".bin", ".pt", ".pth", ".onnx", ".ckpt", ".h5"}
HUB_DOWNLOAD = re.compile(
    r"snapshot_download|hf_hub_download|huggingface-cli|\bhf download|from_pretrained|git lfs"
)
# Setting and flag names that hold credentials: RAGTUNE_API_KEYS, HF_TOKEN, --api-key...
SECRET_NAME = re.compile(r"(?:^|[_-])(?:KEYS?|TOKEN|SECRET|PASSWORD)(?:$|[_-])", re.IGNORECASE)
# ${VAR}, ${VAR:?message}, ${VAR?message}, ${VAR:-} (empty): the value comes from outside the
# file. ${VAR:-something} would put a key in the file, as its default.
ENV_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*|:?-)?\}$")
PLACEHOLDER = re.compile(r"^REPLACE_WITH_[A-Z_]+$")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_resource(kind: str, name: str) -> dict[str, Any]:
    for path in MANIFESTS:
        for doc in documents(path):
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} named {name!r} in deploy/k8s")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] not in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return []
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]]


def claim_mount_path(workload: dict[str, Any], claim: str) -> str:
    """Where the workload's (only) container mounts the PersistentVolumeClaim `claim`."""
    spec = pod_spec(workload)
    (volume,) = [
        v["name"]
        for v in spec["volumes"]
        if v.get("persistentVolumeClaim", {}).get("claimName") == claim
    ]
    (container,) = spec["containers"]
    (path,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume]
    return str(path)


def flags(args: list[str]) -> dict[str, str]:
    """`--name=value` arguments as {name: value} (`--switch` alone as {switch: ""})."""
    return {a[2:].partition("=")[0]: a.partition("=")[2] for a in args if a.startswith("--")}


def compose_file() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def compose_mount_target(service: dict[str, Any], volume: str) -> str:
    (target,) = [m.split(":")[1] for m in service["volumes"] if m.split(":")[0] == volume]
    return str(target)


def run_tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuation lines joined, no comments."""
    instructions, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        keyword, _, arguments = (current + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    start = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[start:]


# --- schemas and lint ----------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifest_matches_the_kubernetes_schemas(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        where = f"{path.name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            # strict: unknown fields (a typo, a field of another version) are errors too.
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            # The command line only warns about these; a misspelt kind is an error here.
            pytest.fail(f"{where}: no such apiVersion and kind in Kubernetes {KUBERNETES_VERSION}")


def test_kustomization_applies_every_manifest_but_the_templates() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    expected = sorted(p.name for p in MANIFESTS if p.name not in TEMPLATES)
    assert sorted(kustomization["resources"]) == expected


def test_compose_file_matches_the_compose_specification() -> None:
    schema = DEPLOY / "schemas" / "compose-spec.json"
    result = run_tool("check_jsonschema", "--schemafile", str(schema), str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_deploy_yaml_passes_yamllint_strictly() -> None:
    config = DEPLOY / ".yamllint.yaml"
    result = run_tool("yamllint", "--strict", "--config-file", str(config), str(DEPLOY))
    assert result.returncode == 0, result.stdout + result.stderr


# --- the image ------------------------------------------------------------------------------


def test_image_runs_as_a_non_root_user_kubernetes_can_check() -> None:
    users = [arguments for keyword, arguments in final_stage() if keyword == "USER"]
    assert users, "the final stage sets no USER: the API would run as root"
    user = users[-1].partition(":")[0]
    assert user not in {"root", "0"}
    # Numeric, or Kubernetes' runAsNonRoot cannot verify it; the same UID the Deployment sets.
    assert user.isdigit()
    api = k8s_resource("Deployment", "ragtune-api")
    assert pod_spec(api)["securityContext"]["runAsUser"] == int(user)


def test_image_health_check_asks_the_api_for_health() -> None:
    stage = final_stage()
    (check,) = [arguments for keyword, arguments in stage if keyword == "HEALTHCHECK"]
    command = json.loads(check[check.index("CMD") + len("CMD") :].strip())
    # Exec form, with the image's Python (it has no curl): the code must at least compile.
    assert command[:2] == ["python", "-c"]
    compile(command[2], "HEALTHCHECK", "exec")
    (exposed,) = [arguments for keyword, arguments in stage if keyword == "EXPOSE"]
    assert f"127.0.0.1:{exposed}/health'" in command[2]


def test_image_carries_no_model_weights() -> None:
    for keyword, arguments in dockerfile():
        # ADD fetches URLs and unpacks archives: COPY says exactly what goes in.
        assert keyword != "ADD", f"ADD {arguments}"
        if keyword == "RUN":
            assert not HUB_DOWNLOAD.search(arguments), f"RUN downloads a model: {arguments}"
        if keyword == "COPY" and "--from=" not in arguments:
            *sources, _destination = [a for a in shlex.split(arguments) if not a.startswith("--")]
            for source in sources:
                # The whole context would take whatever lies in the checkout (.ragtune/models).
                assert source.rstrip("/") not in {".", "*", ""}, f"COPY {arguments}"
                path = ROOT / source
                files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                weights = [str(p) for p in files if p.suffix in WEIGHT_SUFFIXES]
                assert not weights, f"COPY {arguments} takes model weights: {weights}"
    # The context itself is an allowlist that also drops weight files wherever they are.
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored
    assert {f"**/*{suffix}" for suffix in (".safetensors", ".gguf", ".bin", ".pt")} <= set(ignored)


# --- secrets --------------------------------------------------------------------------------


def test_compose_file_holds_no_secret() -> None:
    compose = compose_file()
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        for key, value in environment.items():
            if SECRET_NAME.search(key) and value:
                assert ENV_REFERENCE.match(str(value)), f"{name}: {key} is written in the file"
        command = service.get("command", [])
        for flag, value in flags(command if isinstance(command, list) else []).items():
            if SECRET_NAME.search(flag) and value:
                assert ENV_REFERENCE.match(value), f"{name}: --{flag} is written in the file"
    for name, secret in compose.get("secrets", {}).items():
        assert "content" not in secret, f"secret {name} is written in the file"


def test_kubernetes_manifests_hold_no_secret() -> None:
    for path in MANIFESTS:
        for doc in documents(path):
            where = f"{path.name}: {doc['kind']}/{doc['metadata']['name']}"
            if doc["kind"] == "Secret":
                # A template, with placeholders only (base64 `data` would hide real values).
                assert path.name in TEMPLATES, f"{where} would be applied with the manifests"
                assert "data" not in doc, where
                for key, value in doc["stringData"].items():
                    assert PLACEHOLDER.match(value), f"{where}: {key} is not a placeholder"
            if doc["kind"] == "ConfigMap":
                leaked = [key for key in doc["data"] if SECRET_NAME.search(key)]
                assert not leaked, f"{where} holds {leaked}: they belong in the Secret"
            for container in containers(doc):
                for env in container.get("env", []):
                    if SECRET_NAME.search(env["name"]):
                        assert "value" not in env, f"{where}: {env['name']} is written in the file"


# --- wiring ---------------------------------------------------------------------------------


def test_adapters_are_at_the_same_path_in_the_api_and_in_vllm() -> None:
    # The API hands vLLM an adapter as <RAGTUNE_DATA_DIR>/adapters/<name>/v<N>/.
    services = compose_file()["services"]
    expected = f"{services['api']['environment']['RAGTUNE_DATA_DIR']}/adapters"
    assert compose_mount_target(services["api"], "adapters") == expected
    assert compose_mount_target(services["vllm"], "adapters") == expected

    config = k8s_resource("ConfigMap", "ragtune-config")["data"]
    expected = f"{config['RAGTUNE_DATA_DIR']}/adapters"
    api = k8s_resource("Deployment", "ragtune-api")
    vllm = k8s_resource("StatefulSet", "vllm")
    assert claim_mount_path(api, "ragtune-adapters") == expected
    assert claim_mount_path(vllm, "ragtune-adapters") == expected


def test_vllm_urls_name_every_vllm_replica() -> None:
    vllm = k8s_resource("StatefulSet", "vllm")
    service = k8s_resource("Service", vllm["spec"]["serviceName"])
    # Headless: each pod has its own DNS name, <statefulset>-<ordinal>.<service>.
    assert service["spec"]["clusterIP"] == "None"
    (port,) = [p["port"] for p in service["spec"]["ports"]]
    expected = [
        f"http://{vllm['metadata']['name']}-{i}.{service['metadata']['name']}:{port}"
        for i in range(vllm["spec"]["replicas"])
    ]
    config = k8s_resource("ConfigMap", "ragtune-config")["data"]
    assert config["RAGTUNE_VLLM_URLS"].split(",") == expected


def test_vllm_serves_the_model_and_lora_limits_the_api_expects() -> None:
    shared = {  # vLLM flag -> the API's setting
        "served-model-name": "RAGTUNE_SERVED_MODEL_NAME",
        "max-loras": "RAGTUNE_MAX_LORAS",
        "max-lora-rank": "RAGTUNE_MAX_LORA_RANK",
    }
    services = compose_file()["services"]
    vllm_flags = flags(services["vllm"]["command"])
    api_env = services["api"]["environment"]
    assert "enable-lora" in vllm_flags
    assert services["vllm"]["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert services["vllm"]["command"][0] == api_env["RAGTUNE_MODEL"]
    for flag, setting in shared.items():
        assert vllm_flags[flag] == api_env[setting], f"--{flag} and {setting} differ"

    # Kubernetes: vLLM's arguments read the API's ConfigMap, the API takes all of it.
    vllm = k8s_resource("StatefulSet", "vllm")
    (container,) = pod_spec(vllm)["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert "enable-lora" in flags(container["args"])
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"]["value"] == "True"
    references = {"RAGTUNE_MODEL": container["args"][0]} | {
        setting: flags(container["args"])[flag] for flag, setting in shared.items()
    }
    for setting, argument in references.items():
        assert argument == f"$({setting})", f"vLLM does not take {setting} from the ConfigMap"
        source = env[setting]["valueFrom"]["configMapKeyRef"]
        assert (source["name"], source["key"]) == ("ragtune-config", setting)
    (api_container,) = pod_spec(k8s_resource("Deployment", "ragtune-api"))["containers"]
    assert {"configMapRef": {"name": "ragtune-config"}} in api_container["envFrom"]


# --- the engine's port ----------------------------------------------------------------------
# vLLM checks its key on these prefixes only (vllm/entrypoints/serve/middleware/authenticate.py).
VLLM_GUARDED_PREFIXES = ("/v1", "/v2", "/inference", "/cohere")
ENGINE_KEY_SETTING = "RAGTUNE_ENGINE_API_KEY"
# ${VAR:?message}: Compose refuses to start without it (an empty key turns vLLM's check off).
REQUIRED_REFERENCE = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):\?[^}]*\}$")


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector matches these labels (an empty selector: all)."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def workloads() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in documents(path) if containers(doc)]


def compose_networks(service: dict[str, Any]) -> set[str]:
    """The networks a Compose service joins (`default` when it names none)."""
    return set(service.get("networks") or ["default"])


def test_only_the_api_pods_reach_the_vllm_port() -> None:
    vllm = k8s_resource("StatefulSet", "vllm")
    (container,) = pod_spec(vllm)["containers"]
    (port,) = container["ports"]
    policies = [
        doc
        for path in MANIFESTS
        for doc in documents(path)
        if doc["kind"] == "NetworkPolicy" and selects(doc["spec"]["podSelector"], pod_labels(vllm))
    ]
    assert policies, "no NetworkPolicy selects the vLLM pods: every pod in the cluster reaches them"
    # Policies add up: each one that selects vLLM may only open its port to the API pods.
    allowed = []
    for policy in policies:
        name = policy["metadata"]["name"]
        assert "Ingress" in policy["spec"].get("policyTypes", ["Ingress"]), name
        for rule in policy["spec"].get("ingress", []):
            # A rule without `from` (or without `ports`) admits every source (or every port).
            assert rule.get("from"), f"{name}: an ingress rule admits every source"
            assert rule.get("ports"), f"{name}: an ingress rule admits every port"
            for source in rule["from"]:
                assert set(source) == {"podSelector"}, f"{name}: admits {source}"
                allowed += [w for w in workloads() if selects(source["podSelector"], pod_labels(w))]
            for opened in rule["ports"]:
                assert opened["port"] in (port["name"], port["containerPort"]), opened
    api = k8s_resource("Deployment", "ragtune-api")
    assert allowed, "the NetworkPolicy admits no pod: the API cannot reach vLLM"
    assert {w["metadata"]["name"] for w in allowed} == {api["metadata"]["name"]}


def test_vllm_requires_the_key_the_api_sends_in_kubernetes() -> None:
    vllm = k8s_resource("StatefulSet", "vllm")
    (container,) = pod_spec(vllm)["containers"]
    env = {e["name"]: e for e in container["env"]}
    reference = env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert not reference.get("optional"), "vLLM would start without a key"
    assert reference["key"] == ENGINE_KEY_SETTING
    assert not any(a.startswith("--api-key") for a in container["args"]), "use VLLM_API_KEY"

    (api,) = pod_spec(k8s_resource("Deployment", "ragtune-api"))["containers"]
    sources = [s["secretRef"]["name"] for s in api["envFrom"] if "secretRef" in s]
    assert reference["name"] in sources, "the API is not given the key vLLM requires"
    # The Secret's template (created by hand, as for the API keys) holds that key.
    (secret,) = [
        doc
        for doc in documents(K8S / "secret.example.yaml")
        if doc["metadata"]["name"] == reference["name"]
    ]
    assert set(secret["stringData"]) == {ENGINE_KEY_SETTING}


def test_vllm_probes_ask_a_path_open_without_the_key() -> None:
    (container,) = pod_spec(k8s_resource("StatefulSet", "vllm"))["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert not path.startswith(VLLM_GUARDED_PREFIXES), f"{probe} would get 401 on {path}"
    check = " ".join(compose_file()["services"]["vllm"]["healthcheck"]["test"])
    path = re.search(r"https?://[^/\s']+(/[^\s']*)", check)
    assert path, check
    assert not path.group(1).startswith(VLLM_GUARDED_PREFIXES), check


def test_vllm_is_on_an_internal_network_with_the_api_alone_in_compose() -> None:
    compose = compose_file()
    services = compose["services"]
    vllm = services["vllm"]
    assert "ports" not in vllm, "vLLM's port is published"
    assert "network_mode" not in vllm, "vLLM shares another network namespace"
    networks = compose_networks(vllm)
    for name in networks:
        declared = compose.get("networks", {}).get(name) or {}
        assert declared.get("internal") is True, f"vLLM's network {name!r} is not internal"
    peers = {other for other, s in services.items() if compose_networks(s) & networks}
    assert peers == {"vllm", "api"}


def test_vllm_requires_the_key_the_api_sends_in_compose() -> None:
    services = compose_file()["services"]
    vllm_key = REQUIRED_REFERENCE.match(str(services["vllm"]["environment"]["VLLM_API_KEY"]))
    api_key = REQUIRED_REFERENCE.match(str(services["api"]["environment"][ENGINE_KEY_SETTING]))
    assert vllm_key, "vLLM's key may be left empty (its check is then off)"
    assert api_key, f"the API's {ENGINE_KEY_SETTING} may be left empty"
    assert vllm_key["name"] == api_key["name"]
    assert not any(a.startswith("--api-key") for a in services["vllm"]["command"])


def test_api_shutdown_fits_in_the_time_it_is_given_to_stop() -> None:
    (api,) = pod_spec(k8s_resource("Deployment", "ragtune-api"))["containers"]
    config = k8s_resource("ConfigMap", "ragtune-config")["data"]
    pre_stop = api["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod_spec(k8s_resource("Deployment", "ragtune-api"))["terminationGracePeriodSeconds"]
    assert pre_stop + int(config["RAGTUNE_SHUTDOWN_TIMEOUT_S"]) < grace

    service = compose_file()["services"]["api"]
    grace_s = int(str(service["stop_grace_period"]).removesuffix("s"))
    assert int(service["environment"]["RAGTUNE_SHUTDOWN_TIMEOUT_S"]) < grace_s
