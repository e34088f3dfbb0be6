"""Check what `tutor config save` rendered with the codejail-broker plugin (test.sh runs it).

check_render.py --expect defaults|overrides --kubectl K --kubernetes-validate V
                --kubernetes-version X --schema S --repo R --broker B ENV

- env/local/docker-compose*.yml validate against the Compose specification's JSON
  schema (draft 2019-09), and a broken copy does not (the check can fail); the two
  services parse with compose-spec (the Rust compose_spec parser) and carry the
  security settings the broker and the front need;
- `kubectl kustomize ENV` builds, `kubernetes-validate --strict` accepts every
  resource, and the plugin's resources are there with the settings that matter;
- the LMS's and CMS's settings files set what edx-platform reads;
- broker.toml and http.toml say what the config says, in the ConfigMap too;
- with a built broker (B not empty), `codejail-broker check-config` parses broker.toml.
Prints what it checked; exits 1 with the reason at the first mismatch.
"""

from __future__ import annotations

import argparse
import copy
import filecmp
import json
import pathlib
import subprocess
import sys
import tempfile

import jsonschema
import tomllib
import yaml
from compose_spec import PyCompose

EXPECT = {
    "defaults": {
        "image": "codejail:0.1.0",
        "max_running": 4,
        "pool": {"size": 2, "preimport": ["json"]},
        "limits": {"CPU": 3, "REALTIME": 3, "VMEM": 536870912, "FSIZE": 10485760, "NPROC": 15},
        "ceilings": {"CPU": 10, "REALTIME": 30, "NPROC": 64},
        "replicas": 1,
        "read_timeout": "3.5",
    },
    "overrides": {
        "image": "registry.example.org/codejail:9.9.9",
        "max_running": 6,
        "pool": None,
        "limits": {"CPU": 5, "REALTIME": 5, "VMEM": 1073741824, "NPROC": 20},
        "ceilings": {"CPU": 20, "REALTIME": 40},
        "replicas": 3,
        "read_timeout": "6.5",
    },
}


def fail(message: str) -> None:
    sys.exit(f"check_render.py: {message}")


def same(what: str, got: object, want: object) -> None:
    if got != want:
        fail(f"{what}: {got!r}, expected {want!r}")


def check_compose(env: pathlib.Path, schema_path: pathlib.Path, want: dict) -> None:
    schema = json.loads(schema_path.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    files = sorted((env / "local").glob("docker-compose*.yml"))
    if len(files) < 2:
        fail(f"no docker-compose files in {env / 'local'}")
    for path in files:
        doc = yaml.safe_load(path.read_text())
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
        if errors:
            fail(f"{path.name} against the Compose schema: " + "; ".join(errors))
        print(f"compose schema: {path.name} valid ({len(doc.get('services', {}))} services)")
    compose = yaml.safe_load((env / "local" / "docker-compose.yml").read_text())
    # The validator can fail: an unknown key and a wrong type are each refused.
    for key, value in (("security_opts", []), ("cap_add", "SETUID")):
        broken = copy.deepcopy(compose)
        broken["services"]["codejail-broker"][key] = value
        if validator.is_valid(broken):
            fail(f"the Compose schema accepted codejail-broker.{key} = {value!r}")
    services = compose["services"]
    broker, front = services.get("codejail-broker"), services.get("codejail-http")
    if broker is None or front is None:
        fail(f"docker-compose.yml services: {sorted(services)} lack codejail-broker/codejail-http")
    PyCompose.from_yaml(yaml.safe_dump({"services": {"codejail-broker": broker, "codejail-http": front}}))
    for name, service in (("codejail-broker", broker), ("codejail-http", front)):
        same(f"{name}.image", service["image"], want["image"])
        same(f"{name}.read_only", service["read_only"], True)
        same(f"{name}.cap_drop", service["cap_drop"], ["ALL"])
        if "no-new-privileges:true" not in service["security_opt"]:
            fail(f"{name}: no no-new-privileges in {service['security_opt']}")
    same("codejail-broker.cap_add", broker["cap_add"], ["SETUID", "SETGID"])
    same("codejail-broker.user", broker["user"], "0:0")
    same("codejail-broker.network_mode", broker["network_mode"], "none")
    same("codejail-http.user", front["user"], "10001:10001")
    same("codejail-http.cap_add", front.get("cap_add"), None)
    same("codejail-http.volumes_from", front["volumes_from"], ["codejail-broker:ro"])
    if "/run/codejail" not in broker["volumes"]:
        fail(f"codejail-broker: no socket volume /run/codejail in {broker['volumes']}")
    seccomp = [o.split("=", 1)[1] for o in broker["security_opt"] if o.startswith("seccomp=")]
    if len(seccomp) != 1 or not (env / "local" / seccomp[0]).is_file():
        fail(f"codejail-broker: seccomp profile {seccomp} is not a rendered file (relative to env/local)")
    for name in ("lms", "cms"):
        if "codejail-http" not in services[name]["depends_on"]:
            fail(f"{name} does not depend on codejail-http")
    print(
        "compose services: codejail-broker (uid 0, cap_add SETUID SETGID, network none, read-only, "
        "seccomp + no-new-privileges), codejail-http (uid 10001, no capability, read-only), "
        f"image {want['image']}; compose-spec parses both"
    )


def kustomize(env: pathlib.Path, args: argparse.Namespace) -> list[dict]:
    built = subprocess.run([args.kubectl, "kustomize", str(env)], check=True, capture_output=True, text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as out:
        out.write(built)
        out.flush()
        result = subprocess.run(
            [args.kubernetes_validate, "--strict", "--kubernetes-version", args.kubernetes_version, out.name],
            capture_output=True,
            text=True,
        )
    said = result.stdout + result.stderr
    resources = [r for r in yaml.safe_load_all(built) if r]
    passed = said.count(" passed for resource ")
    if result.returncode != 0 or passed != len(resources):
        fail(f"kubernetes-validate --strict ({passed}/{len(resources)} passed):\n{said}")
    # --strict can fail: a field the API does not have is refused.
    broken = copy.deepcopy(next(r for r in resources if r["metadata"]["name"] == "codejail-broker"))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capability"] = {"add": ["ALL"]}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as out:
        yaml.safe_dump(broken, out)
        out.flush()
        refused = subprocess.run(
            [args.kubernetes_validate, "--strict", "--kubernetes-version", args.kubernetes_version, out.name],
            capture_output=True,
        )
    if refused.returncode == 0:
        fail("kubernetes-validate --strict accepted an unknown securityContext field")
    print(f"kubectl kustomize: {len(resources)} resources; kubernetes-validate --strict "
          f"{args.kubernetes_version}: {passed} passed")
    return resources


def check_k8s(resources: list[dict], env: pathlib.Path, want: dict) -> None:
    def find(kind: str, prefix: str) -> dict:
        found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"].startswith(prefix)]
        if len(found) != 1:
            fail(f"{len(found)} {kind} named {prefix}* in the kustomize output")
        return found[0]

    deployment = find("Deployment", "codejail-broker")
    service = find("Service", "codejail-http")
    policy = find("NetworkPolicy", "codejail-broker")
    config = find("ConfigMap", "codejail-broker-config-")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    same("Deployment replicas", spec["replicas"], want["replicas"])
    same("pod hostUsers", pod["hostUsers"], False)
    same("pod seccompProfile", pod["securityContext"]["seccompProfile"]["type"], "Localhost")
    containers = {c["name"]: c for c in pod["containers"]}
    same("containers", sorted(containers), ["broker", "http"])
    for c in containers.values():
        same(f"{c['name']}.image", c["image"], want["image"])
        same(f"{c['name']}.readOnlyRootFilesystem", c["securityContext"]["readOnlyRootFilesystem"], True)
        same(f"{c['name']}.allowPrivilegeEscalation", c["securityContext"]["allowPrivilegeEscalation"], False)
    same("broker capabilities", containers["broker"]["securityContext"]["capabilities"],
         {"drop": ["ALL"], "add": ["SETUID", "SETGID"]})
    same("http runAsUser", containers["http"]["securityContext"]["runAsUser"], 10001)
    volumes = {v["name"]: v for v in pod["volumes"]}
    same("config volume", volumes["config"]["configMap"]["name"], config["metadata"]["name"])
    same("Service selector", service["spec"]["selector"]["app.kubernetes.io/name"], "codejail-broker")
    same("Service port", service["spec"]["ports"][0]["port"], 8550)
    same("NetworkPolicy egress", policy["spec"]["egress"], [])
    rendered = env / "plugins" / "codejail-broker" / "apps" / "config"
    for name in ("broker.toml", "http.toml"):
        same(f"ConfigMap {name}", config["data"][name], (rendered / name).read_text())
    print(
        f"k8s: Deployment codejail-broker ({want['replicas']} replicas; broker + http, hostUsers false, "
        f"Localhost seccomp), Service codejail-http:8550, NetworkPolicy, ConfigMap {config['metadata']['name']}"
    )


def check_settings(env: pathlib.Path, want: dict) -> None:
    lines = [
        "ENABLE_CODEJAIL_REST_SERVICE = True",
        'CODE_JAIL_REST_SERVICE_HOST = "http://codejail-http:8550"',
        "CODE_JAIL_REST_SERVICE_CONNECT_TIMEOUT = 0.5",
        f"CODE_JAIL_REST_SERVICE_READ_TIMEOUT = {want['read_timeout']}",
    ]
    for service in ("lms", "cms"):
        for variant in ("production.py", "development.py"):
            path = env / "apps" / "openedx" / "settings" / service / variant
            text = path.read_text().splitlines()
            missing = [line for line in lines if line not in text]
            if missing:
                fail(f"{path.relative_to(env)} lacks {missing}")
            compile("\n".join(text), str(path), "exec")
    print("settings: lms and cms production.py/development.py set " + "; ".join(lines))


def check_configs(env: pathlib.Path, repo: pathlib.Path, broker_bin: str, want: dict) -> None:
    apps = env / "plugins" / "codejail-broker" / "apps"
    broker = tomllib.loads((apps / "config" / "broker.toml").read_text())
    http = tomllib.loads((apps / "config" / "http.toml").read_text())
    same("broker.toml max_running", broker["max_running"], want["max_running"])
    same("broker.toml [pool.python]", broker.get("pool", {}).get("python"), want["pool"])
    same("broker.toml [limits.defaults]", broker["limits"]["defaults"], want["limits"])
    same("broker.toml [limits.ceilings]", broker["limits"]["ceilings"], want["ceilings"])
    same("broker.toml allowed_uids", broker["allowed_uids"], [10001])
    same("http.toml broker_socket", http["broker_socket"], broker["socket"]["path"])
    shipped = repo / "deploy" / "kubernetes" / "seccomp" / "codejail.json"
    packaged = repo / "deploy/tutor/tutorcodejail_broker/templates/codejail-broker/apps/seccomp/codejail.json"
    if not filecmp.cmp(packaged, shipped, shallow=False):
        fail(f"{packaged} differs from {shipped} (copy it again)")
    # Rendering drops the final newline: the same profile, not the same bytes.
    same("the rendered seccomp profile", json.loads((apps / "seccomp" / "codejail.json").read_text()),
         json.loads(shipped.read_text()))
    print(f"configs: broker.toml max_running {broker['max_running']}, pool {want['pool']}, "
          f"limits {want['limits']}, ceilings {want['ceilings']}; seccomp profile = deploy/kubernetes's")
    if not broker_bin:
        print("configs: no built codejail-broker in target/: check-config not run")
        return
    result = subprocess.run([broker_bin, "check-config", str(apps / "config" / "broker.toml")],
                            capture_output=True, text=True)
    # Exit 2 is an invalid config; 1 is a host where its layers cannot be held (the
    # jail stage path is the image's), which is expected here.
    if result.returncode == 2:
        fail(f"codejail-broker check-config refused broker.toml:\n{result.stdout}{result.stderr}")
    print(f"configs: {broker_bin} check-config parses broker.toml (exit {result.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--expect", choices=sorted(EXPECT), required=True)
    parser.add_argument("--kubectl", required=True)
    parser.add_argument("--kubernetes-validate", required=True)
    parser.add_argument("--kubernetes-version", required=True)
    parser.add_argument("--schema", required=True, type=pathlib.Path)
    parser.add_argument("--repo", required=True, type=pathlib.Path)
    parser.add_argument("--broker", default="")
    parser.add_argument("env", type=pathlib.Path)
    args = parser.parse_args()
    want = EXPECT[args.expect]
    check_compose(args.env, args.schema, want)
    check_k8s(kustomize(args.env, args), args.env, want)
    check_settings(args.env, want)
    check_configs(args.env, args.repo, args.broker, want)


if __name__ == "__main__":
    main()
