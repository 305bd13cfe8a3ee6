"""The checks of deploy/validate-manifests.sh that no off-the-shelf validator makes.

Run by that script with the Python of var/validate-venv (PyYAML, jsonschema and
cloudcoil-models-keda come from deploy/validate-requirements.txt):

    validate_manifests.py compose-refs   DEPLOY_DIR
    validate_manifests.py k8s-files      DEPLOY_DIR      (prints the files kubernetes-validate takes)
    validate_manifests.py kustomization  DEPLOY_DIR
    validate_manifests.py keda           DEPLOY_DIR
    validate_manifests.py invariants     DEPLOY_DIR
    validate_manifests.py alert-policy   DEPLOY_DIR
    validate_manifests.py prometheus-k8s DEPLOY_DIR PROMTOOL
    validate_manifests.py grafana        DEPLOY_DIR PROMTOOL
    validate_manifests.py dockerfile-build DEPLOY_DIR MAKEFILE
    validate_manifests.py dockerfile-ci  DEPLOY_DIR MAKEFILE CI_SCRIPT

Each prints its "validate: … ok" line and exits 0, or prints what is wrong and exits 1.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml


class Invalid(Exception):
    """A check failed; the message says where and why."""


def fail(msg: str) -> None:
    raise Invalid(msg)


def ok(line: str) -> None:
    print(f"validate: {line}")


def load_yaml_docs(path: Path) -> list[dict]:
    try:
        with path.open() as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        fail(f"{path}: not valid YAML: {e}")
    return []


def rel(path: Path, base: Path | None = None) -> str:
    """The path relative to the working folder when it lies below it, else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- compose


INTERPOLATION = re.compile(r"\$(?:\$|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


def interpolate(value, env: dict[str, str], problems: list[str], where: str = ""):
    """Compose's variable interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
    ${VAR:?error}, ${VAR?error}."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, problems, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, problems, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        have = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if op and op.endswith("-"):
            return env[name] if have else arg
        if op and op.endswith("?"):
            if not have:
                problems.append(f"{where}: ${{{name}}} is required: {arg}")
            return env.get(name, "")
        return env.get(name, "")

    return INTERPOLATION.sub(sub, value)


# Fields the Compose schema lets be strings so that they can be interpolated; compose
# converts them afterwards and refuses what does not convert.
COMPOSE_INTS = ["deploy.replicas", "scale", "healthcheck.retries", "deploy.update_config.parallelism",
                "deploy.rollback_config.parallelism", "deploy.restart_policy.max_attempts",
                "deploy.placement.max_replicas_per_node", "mem_swappiness", "pids_limit", "cpu_shares"]
COMPOSE_NUMBERS = ["cpus", "deploy.resources.limits.cpus", "deploy.resources.reservations.cpus"]
COMPOSE_DURATIONS = ["healthcheck.interval", "healthcheck.timeout", "healthcheck.start_period",
                     "healthcheck.start_interval", "stop_grace_period", "deploy.restart_policy.delay",
                     "deploy.restart_policy.window", "deploy.update_config.delay",
                     "deploy.update_config.monitor", "deploy.rollback_config.delay"]
COMPOSE_BOOLS = ["init", "privileged", "read_only", "tty", "stdin_open", "oom_kill_disable"]
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def dig(doc, dotted: str):
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def dotenv(path: Path) -> dict[str, str]:
    env = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                env[k.strip()] = v.strip().strip("'\"")
    return env


def check_compose_refs(deploy: Path) -> None:
    """What the Compose schema cannot see: values that do not convert after
    interpolation, files that must exist, healthchecks that depends_on waits for, and the
    broker plugins the rest of deploy/ relies on."""
    import os

    path = deploy / "compose.yaml"
    (raw,) = load_yaml_docs(path)
    problems: list[str] = []
    doc = interpolate(raw, {**dotenv(deploy / ".env"), **os.environ}, problems)
    services = doc.get("services") or {}
    for name, svc in services.items():
        for field in COMPOSE_INTS:
            v = dig(svc, field)
            if v is not None and not (isinstance(v, int) and not isinstance(v, bool)
                                      or isinstance(v, str) and re.fullmatch(r"-?\d+", v)):
                problems.append(f"service {name}: {field} {v!r} is not an integer")
        for field in COMPOSE_NUMBERS:
            v = dig(svc, field)
            if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                      or isinstance(v, str) and re.fullmatch(r"\d+(\.\d+)?", v)):
                problems.append(f"service {name}: {field} {v!r} is not a number")
        for field in COMPOSE_DURATIONS:
            v = dig(svc, field)
            if v is not None and not (isinstance(v, str) and GO_DURATION.match(v)):
                problems.append(f"service {name}: {field} {v!r} is not a duration such as 30s or 1m30s")
        for field in COMPOSE_BOOLS:
            v = dig(svc, field)
            if v is not None and not (isinstance(v, bool) or str(v).lower() in ("true", "false")):
                problems.append(f"service {name}: {field} {v!r} is not true or false")
    for name, svc in services.items():
        build = svc.get("build")
        if isinstance(build, dict):
            context = (deploy / build.get("context", ".")).resolve()
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not context.is_dir():
                problems.append(f"service {name}: build context {build.get('context')} is not a folder")
            elif not dockerfile.is_file():
                problems.append(f"service {name}: dockerfile {build.get('dockerfile')} not found in {context}")
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            if dep not in services:
                problems.append(f"service {name}: depends_on names unknown service {dep}")
            elif (spec or {}).get("condition") == "service_healthy" and not services[dep].get("healthcheck"):
                problems.append(f"service {name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
        for vol in svc.get("volumes") or []:
            source = vol.split(":", 1)[0] if isinstance(vol, str) else (vol or {}).get("source", "")
            if source.startswith(("./", "../")) and not (deploy / source).exists():
                problems.append(f"service {name}: mounts {source}, which does not exist")
            if isinstance(vol, str) and vol.split(":")[1:2] == ["/etc/rabbitmq/enabled_plugins"]:
                text = (deploy / source).read_text() if (deploy / source).is_file() else ""
                m = re.fullmatch(r"\s*\[([^\]]*)\]\.\s*", text)
                plugins = {p.strip() for p in m.group(1).split(",")} if m else set()
                for need in ("rabbitmq_management", "rabbitmq_prometheus"):
                    if need not in plugins:
                        problems.append(f"service {name}: {source} does not enable {need} "
                                        f"(want [rabbitmq_management,rabbitmq_prometheus].)")
    if problems:
        fail(f"{rel(path, deploy)}:\n  " + "\n  ".join(problems))
    ok(f"compose.yaml values and references ok ({len(services)} services)")


# --------------------------------------------------------------------------- kubernetes


def k8s_docs(deploy: Path) -> list[tuple[Path, dict]]:
    out = []
    for path in sorted((deploy / "k8s").rglob("*.yaml")):
        for doc in load_yaml_docs(path):
            if not isinstance(doc, dict):
                fail(f"{rel(path, deploy)}: a document is not a mapping")
            out.append((path, doc))
    return out


def is_keda(doc: dict) -> bool:
    return str(doc.get("apiVersion", "")).startswith("keda.sh/")


def is_kustomization(doc: dict) -> bool:
    return doc.get("kind") == "Kustomization"


def list_k8s_files(deploy: Path) -> None:
    """The files kubernetes-validate checks: every manifest but kustomizations and the
    KEDA custom resources (checked against KEDA's own schema instead)."""
    by_file: dict[Path, list[dict]] = {}
    for path, doc in k8s_docs(deploy):
        by_file.setdefault(path, []).append(doc)
    for path, docs in by_file.items():
        kinds = {("keda" if is_keda(d) else "kustomization" if is_kustomization(d) else "core") for d in docs}
        if len(kinds) > 1:
            fail(f"{rel(path, deploy)}: mixes KEDA objects, kustomizations and Kubernetes objects; "
                 "give each its own file")
        if kinds == {"core"}:
            print(path)


def check_kustomization(deploy: Path) -> None:
    problems = []
    count = 0
    for kpath in sorted((deploy / "k8s").rglob("kustomization.yaml")):
        (doc,) = load_yaml_docs(kpath)
        count += 1
        folder = kpath.parent
        unknown = set(doc) - {"apiVersion", "kind", "namespace", "resources", "images", "labels",
                              "commonLabels", "commonAnnotations", "patches", "configMapGenerator",
                              "secretGenerator", "generatorOptions", "namePrefix", "nameSuffix",
                              "components", "replicas"}
        if unknown:
            problems.append(f"{rel(kpath, deploy)}: unknown keys {sorted(unknown)}")
        listed = set()
        for res in doc.get("resources") or []:
            target = (folder / res).resolve()
            if target.is_dir():
                if not (target / "kustomization.yaml").is_file():
                    problems.append(f"{rel(kpath, deploy)}: resource {res} is a folder without kustomization.yaml")
            elif not target.is_file():
                problems.append(f"{rel(kpath, deploy)}: resource {res} does not exist")
            else:
                listed.add(target)
                if any(is_keda(d) for d in load_yaml_docs(target)) and folder == deploy / "k8s":
                    problems.append(f"{rel(kpath, deploy)}: {res} holds KEDA objects; keep them in keda/, "
                                    "so the base applies without KEDA's CRDs")
        for path in sorted(folder.glob("*.yaml")):
            if path.name != "kustomization.yaml" and path.resolve() not in listed:
                problems.append(f"{rel(kpath, deploy)}: {path.name} is in the folder but not in resources")
    if count == 0:
        problems.append("k8s/kustomization.yaml is missing")
    if problems:
        fail("\n".join(problems))
    ok(f"kustomizations ok ({count})")


def keda_models():
    from cloudcoil.models.keda import v1alpha1 as keda

    return {
        "ScaledObject": keda.ScaledObject,
        "ScaledJob": keda.ScaledJob,
        "TriggerAuthentication": keda.TriggerAuthentication,
        "ClusterTriggerAuthentication": keda.ClusterTriggerAuthentication,
    }


def closed(schema):
    """The API server's strict field validation (kubectl's default) rejects fields a
    CRD's schema does not declare; JSON Schema allows them unless told otherwise."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for v in schema.values():
            closed(v)
    elif isinstance(schema, list):
        for v in schema:
            closed(v)
    return schema


def describe(error) -> str:
    from jsonschema.exceptions import best_match

    err = best_match([error]) if error.context else error
    while err.context:
        err = best_match(err.context)
    where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
    return f"at {where}: {err.message}"


def check_keda(deploy: Path) -> None:
    from importlib.metadata import version

    from jsonschema import Draft202012Validator

    models = keda_models()
    validators = {}
    problems = []
    count = 0
    for path, doc in k8s_docs(deploy):
        if not is_keda(doc):
            continue
        count += 1
        kind = doc.get("kind")
        name = (doc.get("metadata") or {}).get("name")
        where = f"{rel(path, deploy)}: {kind}/{name}"
        if doc.get("apiVersion") != "keda.sh/v1alpha1":
            problems.append(f"{where}: apiVersion must be keda.sh/v1alpha1, not {doc.get('apiVersion')}")
            continue
        if kind not in models:
            problems.append(f"{where}: unknown KEDA kind {kind!r} (known: {', '.join(models)})")
            continue
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: metadata.name is required")
        if kind not in validators:
            validators[kind] = Draft202012Validator(
                closed(models[kind].model_json_schema(by_alias=True, mode="validation")))
        for error in sorted(validators[kind].iter_errors(doc), key=lambda e: list(e.absolute_path)):
            problems.append(f"{where}: {describe(error)}")
    if count == 0:
        problems.append("no KEDA objects found under k8s/")
    if problems:
        fail("KEDA objects do not match KEDA's CRD schema:\n  " + "\n  ".join(problems))
    ok(f"KEDA objects ok ({count}, against the CRD schema of cloudcoil-models-keda "
       f"{version('cloudcoil.models.keda')})")


# Trigger metadata the rabbitmq scaler reads (KEDA 2.16); anything else is ignored by
# KEDA without a word, so a typo would silently change the scaling.
RABBITMQ_TRIGGER_KEYS = {
    "host", "hostFromEnv", "protocol", "mode", "value", "activationValue", "queueName",
    "vhostName", "useRegex", "excludeUnacknowledged", "pageSize", "operation", "timeout",
    "unsafeSsl", "usernameFromEnv", "passwordFromEnv", "queueLength",
}


def container_env(container: dict, configmaps: dict[str, dict]) -> dict[str, object]:
    env: dict[str, object] = {}
    for src in container.get("envFrom") or []:
        ref = (src.get("configMapRef") or {}).get("name")
        if ref in configmaps:
            env.update(configmaps[ref])
    for item in container.get("env") or []:
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


def cpu_cores(quantity) -> float:
    q = str(quantity)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


def check_invariants(deploy: Path) -> None:
    """Settings that must agree across files: grace periods, probes, ports, references
    between objects, and the autoscaler's target."""
    docs = k8s_docs(deploy)
    core = [(p, d) for p, d in docs if not is_keda(d) and not is_kustomization(d)]
    by_kind: dict[str, dict[str, tuple[Path, dict]]] = {}
    for path, doc in core:
        by_kind.setdefault(doc.get("kind"), {})[(doc.get("metadata") or {}).get("name")] = (path, doc)
    configmaps = {n: d.get("data") or {} for n, (_, d) in by_kind.get("ConfigMap", {}).items()}
    secrets = {}
    for p, d in docs:
        if d.get("kind") == "Secret":
            secrets[d["metadata"]["name"]] = set(d.get("stringData") or {}) | set(d.get("data") or {})
    problems = []
    deployments = by_kind.get("Deployment", {})

    def find(image_part: str):
        for name, (path, doc) in deployments.items():
            for c in doc["spec"]["template"]["spec"]["containers"]:
                if image_part in str(c.get("image", "")):
                    return name, path, doc, c
        problems.append(f"no Deployment runs an image named {image_part}")
        return None

    def port_of(container: dict, port) -> int | None:
        for p in container.get("ports") or []:
            if port in (p.get("name"), p.get("containerPort")):
                return p.get("containerPort")
        return None

    def probe(where, container, kind, want_path, want_port):
        pr = container.get(kind)
        if not pr:
            problems.append(f"{where}: no {kind}")
            return
        get = pr.get("httpGet") or {}
        if get.get("path") != want_path:
            problems.append(f"{where}: {kind} asks {get.get('path')}, want {want_path}")
        if port_of(container, get.get("port")) != want_port:
            problems.append(f"{where}: {kind} port {get.get('port')} is not container port {want_port}")

    def listen_port(env, var, default):
        value = env.get(var, default)
        if not isinstance(value, str) or ":" not in value:
            return None
        return int(value.rsplit(":", 1)[1])

    for name, (path, doc) in deployments.items():
        where = f"{rel(path, deploy)}: Deployment/{name}"
        pod = doc["spec"]["template"]["spec"]
        pod_sc = pod.get("securityContext") or {}
        for c in pod["containers"]:
            csc = c.get("securityContext") or {}
            if not (csc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True):
                problems.append(f"{where}: container {c['name']} may run as root (runAsNonRoot)")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(part) or {}):
                        problems.append(f"{where}: container {c['name']} has no {part}.{r}")
            for item in c.get("env") or []:
                ref = (item.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["name"] in secrets and ref["key"] not in secrets[ref["name"]]:
                    problems.append(f"{where}: {item['name']} names key {ref['key']}, which Secret "
                                    f"{ref['name']} does not have")
            for src in c.get("envFrom") or []:
                ref = (src.get("configMapRef") or {}).get("name")
                if ref and ref not in configmaps:
                    problems.append(f"{where}: envFrom names ConfigMap {ref}, which is not in k8s/")
        labels = doc["spec"]["template"]["metadata"].get("labels") or {}
        pdbs = [n for n, (_, p) in by_kind.get("PodDisruptionBudget", {}).items()
                if (p["spec"].get("selector") or {}).get("matchLabels", {}).items() <= labels.items()]
        if not pdbs:
            problems.append(f"{where}: no PodDisruptionBudget selects its pods")

    gateway = find("pixmill-gateway")
    if gateway:
        name, path, doc, c = gateway
        where = f"{rel(path, deploy)}: Deployment/{name}"
        env = container_env(c, configmaps)
        port = listen_port(env, "PIXMILL_HTTP_ADDR", "127.0.0.1:8080")
        if env.get("PIXMILL_HTTP_ADDR", "127.0.0.1:8080").startswith("127."):
            problems.append(f"{where}: PIXMILL_HTTP_ADDR listens on loopback only; probes and the Service "
                            "cannot reach it")
        if env.get("PIXMILL_AUTH") not in ("required", "open"):
            problems.append(f"{where}: PIXMILL_AUTH must be required or open; the gateway refuses "
                            "to start on a non-loopback address without it")
        probe(where, c, "readinessProbe", "/readyz", port)
        probe(where, c, "livenessProbe", "/healthz", port)
        if env.get("PIXMILL_AUTH") == "required":
            problems.extend(gateway_scrape_problems(deploy, where, doc, c, secrets))
        for sname, (spath, svc) in by_kind.get("Service", {}).items():
            sel = svc["spec"].get("selector") or {}
            if sel and sel.items() <= (doc["spec"]["template"]["metadata"].get("labels") or {}).items():
                for sp in svc["spec"].get("ports") or []:
                    if port_of(c, sp.get("targetPort")) is None:
                        problems.append(f"{rel(spath, deploy)}: Service/{sname} targets port "
                                        f"{sp.get('targetPort')}, which the gateway does not expose")

    worker = find("pixmill-worker")
    concurrency = None
    prefix = "pixmill"
    if worker:
        name, path, doc, c = worker
        where = f"{rel(path, deploy)}: Deployment/{name}"
        env = container_env(c, configmaps)
        prefix = env.get("PIXMILL_QUEUE_PREFIX", "pixmill")
        port = listen_port(env, "PIXMILL_METRICS_ADDR", "127.0.0.1:0")
        probe(where, c, "readinessProbe", "/healthz", port)
        probe(where, c, "livenessProbe", "/healthz", port)
        grace = doc["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        try:
            job = float(env.get("PIXMILL_JOB_TIMEOUT_SECS", "30"))
            shutdown = float(env.get("PIXMILL_SHUTDOWN_GRACE_SECS", "30"))
        except (TypeError, ValueError):
            problems.append(f"{where}: PIXMILL_JOB_TIMEOUT_SECS / PIXMILL_SHUTDOWN_GRACE_SECS are not numbers")
            job = shutdown = 0
        if not grace > job + shutdown:
            problems.append(f"{where}: terminationGracePeriodSeconds {grace} must exceed "
                            f"PIXMILL_JOB_TIMEOUT_SECS + PIXMILL_SHUTDOWN_GRACE_SECS = {job + shutdown:g}")
        conc = env.get("PIXMILL_WORKER_CONCURRENCY")
        if isinstance(conc, str):
            concurrency = int(conc)
        elif isinstance(conc, dict) and (conc.get("resourceFieldRef") or {}).get("resource") == "limits.cpu":
            concurrency = math.ceil(cpu_cores(c["resources"]["limits"]["cpu"]) / cpu_cores(
                conc["resourceFieldRef"].get("divisor", "1")))

    # The autoscaler.
    auths = {d["metadata"]["name"]: (p, d) for p, d in docs if d.get("kind") == "TriggerAuthentication"}
    for path, so in [(p, d) for p, d in docs if d.get("kind") == "ScaledObject"]:
        where = f"{rel(path, deploy)}: ScaledObject/{so['metadata']['name']}"
        spec = so.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        if ref.get("kind", "Deployment") != "Deployment" or ref.get("name") not in deployments:
            problems.append(f"{where}: scaleTargetRef {ref.get('kind', 'Deployment')}/{ref.get('name')} "
                            "is not a Deployment in k8s/")
        elif worker and ref.get("name") != worker[0]:
            problems.append(f"{where}: scales {ref.get('name')}, not the worker Deployment {worker[0]}")
        lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            problems.append(f"{where}: minReplicaCount {lo} is above maxReplicaCount {hi}")
        for i, trig in enumerate(spec.get("triggers") or []):
            tw = f"{where}: triggers[{i}]"
            if trig.get("type") != "rabbitmq":
                problems.append(f"{tw}: type {trig.get('type')!r}, want rabbitmq")
                continue
            meta = trig.get("metadata") or {}
            for key in sorted(set(meta) - RABBITMQ_TRIGGER_KEYS):
                problems.append(f"{tw}: metadata key {key!r} is not one the rabbitmq scaler reads")
            if meta.get("protocol") != "http":
                problems.append(f"{tw}: protocol {meta.get('protocol')!r}, want http (the management API "
                                "counts unacknowledged messages, so busy workers are not scaled in)")
            if str(meta.get("excludeUnacknowledged", "false")).lower() == "true":
                problems.append(f"{tw}: excludeUnacknowledged would let KEDA scale in workers that hold jobs")
            if meta.get("mode") != "QueueLength":
                problems.append(f"{tw}: mode {meta.get('mode')!r}, want QueueLength")
            if meta.get("queueName") != f"{prefix}.jobs":
                problems.append(f"{tw}: queueName {meta.get('queueName')!r}, want {prefix}.jobs "
                                "(PIXMILL_QUEUE_PREFIX + .jobs)")
            if "vhostName" not in meta:
                problems.append(f"{tw}: no vhostName")
            if "host" in meta or "hostFromEnv" in meta:
                problems.append(f"{tw}: the host (with credentials) belongs in the TriggerAuthentication")
            try:
                value = float(meta.get("value"))
            except (TypeError, ValueError):
                problems.append(f"{tw}: value {meta.get('value')!r} is not a number")
                value = None
            if value is not None and (value <= 0 or (concurrency and value > concurrency)):
                problems.append(f"{tw}: value {value:g} must be above 0 and at most the worker's "
                                f"{concurrency} slots, or a busy pool asks for fewer replicas than it has")
            auth = (trig.get("authenticationRef") or {}).get("name")
            if auth not in auths:
                problems.append(f"{tw}: authenticationRef {auth!r} is not a TriggerAuthentication in k8s/")
                continue
            apath, adoc = auths[auth]
            targets = (adoc.get("spec") or {}).get("secretTargetRef") or []
            if not any(t.get("parameter") == "host" for t in targets):
                problems.append(f"{rel(apath, deploy)}: TriggerAuthentication/{auth} gives no host parameter")
            for t in targets:
                if t.get("name") in secrets and t.get("key") not in secrets[t["name"]]:
                    problems.append(f"{rel(apath, deploy)}: TriggerAuthentication/{auth} names key "
                                    f"{t.get('key')}, which Secret {t.get('name')} does not have")
                elif t.get("name") not in secrets:
                    problems.append(f"{rel(apath, deploy)}: TriggerAuthentication/{auth} names Secret "
                                    f"{t.get('name')}, which is not in k8s/")
    if problems:
        fail("deployment settings disagree:\n  " + "\n  ".join(problems))
    ok("deployment invariants ok (grace periods, probes, ports, references, KEDA target, "
       "the gateway's keyed scrape)")


SECRET_MOUNTS = "/etc/prometheus/secrets/"


def gateway_scrape_problems(deploy: Path, where: str, deployment: dict, container: dict,
                            secrets: dict[str, set[str]]) -> list[str]:
    """With PIXMILL_AUTH=required the gateway's /metrics needs an admin key: the pods must
    not invite a keyless annotation-driven scrape, and prometheus/kubernetes.yml must scrape
    their port with a Bearer key read from a Secret of k8s/ (mounted the Operator's way)."""
    problems = []
    annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
    if str(annotations.get("prometheus.io/scrape", "")).lower() == "true":
        problems.append(f"{where}: annotated prometheus.io/scrape, but with PIXMILL_AUTH=required "
                        "/metrics answers 401 to a scrape without an admin key")
    path = deploy / "prometheus" / "kubernetes.yml"
    if not path.is_file():
        return problems + [f"{where}: PIXMILL_AUTH=required, and no prometheus/kubernetes.yml scrapes "
                           "/metrics with an admin key"]
    (config,) = load_yaml_docs(path)
    name = deployment["spec"]["template"]["metadata"].get("labels", {}).get("app.kubernetes.io/name")
    ports = {p.get("name") for p in container.get("ports") or [] if p.get("name")}

    def keeps(rule: dict, port: str) -> bool:
        """Whether a keep rule on the pod's name label (and port name) keeps this port."""
        values = {"__meta_kubernetes_pod_label_app_kubernetes_io_name": name,
                  "__meta_kubernetes_pod_container_port_name": port}
        labels = rule.get("source_labels") or []
        if (rule.get("action") != "keep"
                or "__meta_kubernetes_pod_label_app_kubernetes_io_name" not in labels
                or not set(labels) <= set(values)):
            return False
        joined = rule.get("separator", ";").join(values[label] for label in labels)
        return re.fullmatch(rule.get("regex", "(.*)"), joined) is not None

    jobs = [job for job in config.get("scrape_configs") or []
            if any(keeps(rule, port) for rule in job.get("relabel_configs") or [] for port in ports)]
    if not jobs:
        return problems + [f"{rel(path, deploy)}: no job keeps the {name} pods' {sorted(ports)} port"]
    for job in jobs:
        jw = f"{rel(path, deploy)}: job {job.get('job_name')}"
        auth = job.get("authorization") or {}
        if auth.get("type", "Bearer") != "Bearer" or not auth.get("credentials_file"):
            problems.append(f"{jw}: sends no Bearer key (authorization.credentials_file), so the "
                            "gateways answer 401 with PIXMILL_AUTH=required")
            continue
        file = auth["credentials_file"]
        parts = file[len(SECRET_MOUNTS):].split("/") if file.startswith(SECRET_MOUNTS) else []
        if len(parts) != 2:
            problems.append(f"{jw}: credentials_file {file} is not {SECRET_MOUNTS}SECRET/KEY")
        elif parts[0] not in secrets or parts[1] not in secrets[parts[0]]:
            problems.append(f"{jw}: credentials_file {file} names key {parts[1]} of Secret {parts[0]}, "
                            "which k8s/ does not have")
    return problems


def check_prometheus_k8s(deploy: Path, promtool: str) -> None:
    """prometheus/kubernetes.yml through promtool. Debian's promtool is built without
    Kubernetes service discovery, so each job's kubernetes_sd_configs are checked here
    (pod role, namespaces named) and stand in as static targets for promtool, which then
    checks the rest: authorization, relabelling, rule files. Syntax only: the key file
    exists in the Prometheus pod, not here."""
    path = deploy / "prometheus" / "kubernetes.yml"
    (config,) = load_yaml_docs(path)
    problems = []
    jobs = config.get("scrape_configs") or []
    for job in jobs:
        jw = f"job {job.get('job_name')}"
        sds = job.pop("kubernetes_sd_configs", None) or []
        if not sds:
            problems.append(f"{jw}: no kubernetes_sd_configs")
        for sd in sds:
            if sd.get("role") != "pod":
                problems.append(f"{jw}: kubernetes_sd_configs role {sd.get('role')!r}, want pod")
            if not ((sd.get("namespaces") or {}).get("names")):
                problems.append(f"{jw}: kubernetes_sd_configs name no namespaces")
            unknown = set(sd) - {"role", "namespaces", "selectors", "api_server", "kubeconfig_file",
                                 "attach_metadata"}
            if unknown:
                problems.append(f"{jw}: unknown kubernetes_sd_configs keys {sorted(unknown)}")
        job["static_configs"] = [{"targets": ["pod.pixmill.svc:80"]}]
    if problems:
        fail(f"{rel(path, deploy)}:\n  " + "\n  ".join(problems))
    with tempfile.TemporaryDirectory() as tmp:
        for rules in config.get("rule_files") or []:
            source = path.parent / rules
            if source.is_file():
                (Path(tmp) / rules).write_text(source.read_text())
        standin = Path(tmp) / path.name
        standin.write_text(yaml.safe_dump(config))
        out = subprocess.run([promtool, "check", "config", "--syntax-only", str(standin)],
                             capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"{rel(path, deploy)} (promtool check config, Kubernetes discovery as static "
             f"targets):\n{(out.stdout + out.stderr).strip()}")
    ok(f"prometheus/kubernetes.yml ok ({len(jobs)} jobs; promtool check config, syntax only, "
       "with its pod discovery checked here)")


# --------------------------------------------------------------------------- alerts


def check_alert_policy(deploy: Path) -> None:
    path = deploy / "prometheus" / "alerts.yaml"
    (doc,) = load_yaml_docs(path)
    problems = []
    names = set()
    count = 0
    for group in doc.get("groups") or []:
        for rule in group.get("rules") or []:
            if "alert" not in rule:
                continue
            count += 1
            name = rule["alert"]
            if name in names:
                problems.append(f"{name}: defined twice")
            names.add(name)
            if not rule.get("for"):
                problems.append(f"{name}: no `for`")
            if (rule.get("labels") or {}).get("severity") not in ("critical", "warning", "info"):
                problems.append(f"{name}: severity label must be critical, warning or info")
            ann = rule.get("annotations") or {}
            for key in ("summary", "description", "runbook"):
                if not ann.get(key):
                    problems.append(f"{name}: no {key} annotation")
            runbook = ann.get("runbook")
            if runbook and not re.fullmatch(r"[a-z0-9_/-]+\.md#[a-z0-9-]+", runbook, re.I):
                problems.append(f"{name}: runbook {runbook!r} is not a file.md#anchor")
            elif runbook and not (deploy.parent / runbook.split("#")[0]).is_file():
                problems.append(f"{name}: runbook {runbook!r} names no file of the repository")
    if count == 0:
        problems.append("no alerting rules")
    if problems:
        fail(f"{rel(path, deploy)}:\n  " + "\n  ".join(problems))
    ok(f"alert rules complete ({count} alerts with for, severity, summary, description, runbook)")


# --------------------------------------------------------------------------- grafana


GRAFANA_MACROS = {
    "$__rate_interval": "5m", "${__rate_interval}": "5m", "$__interval": "1m", "${__interval}": "1m",
    "$__range": "1h", "${__range}": "1h",
}


def leaf_panels(panels):
    for p in panels or []:
        if p.get("type") == "row":
            yield from leaf_panels(p.get("panels"))
        else:
            yield p


def check_grafana(deploy: Path, promtool: str) -> None:
    path = deploy / "grafana" / "pixmill.json"
    try:
        dash = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        fail(f"{rel(path, deploy)}: not valid JSON: {e}")
    problems = []
    if not isinstance(dash, dict) or not dash.get("panels"):
        fail(f"{rel(path, deploy)}: no panels")
    if not isinstance(dash.get("schemaVersion"), int):
        problems.append("schemaVersion missing")
    variables = {v.get("name"): v for v in (dash.get("templating") or {}).get("list") or []}
    ds_vars = {n for n, v in variables.items() if v.get("type") == "datasource"}
    inputs = {i.get("name") for i in dash.get("__inputs") or []}
    if not ds_vars and not inputs:
        problems.append("no datasource variable or __inputs entry for Prometheus")
    ids = set()
    rules = []
    legend = {}
    panels = list(leaf_panels(dash["panels"]))
    for row in dash["panels"]:
        if row.get("id") in ids:
            problems.append(f"panel id {row.get('id')} used twice")
        ids.add(row.get("id"))
        for p in row.get("panels") or []:
            if p.get("id") in ids:
                problems.append(f"panel id {p.get('id')} used twice")
            ids.add(p.get("id"))
    for p in panels:
        title = p.get("title", "?")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"panel {title!r} has no queries")
        for t in [p] + [t for t in targets if "datasource" in t]:
            ds = t.get("datasource")
            uid = ds.get("uid") if isinstance(ds, dict) else ds
            m = re.fullmatch(r"\$\{?(\w+)\}?", str(uid or ""))
            if not m or m.group(1) not in ds_vars | inputs:
                problems.append(f"panel {title!r}: datasource {uid!r} is not the dashboard's datasource variable")
        for t in targets:
            expr = t.get("expr")
            if not expr:
                problems.append(f"panel {title!r} query {t.get('refId')}: no expr")
                continue
            for macro, value in GRAFANA_MACROS.items():
                expr = expr.replace(macro, value)
            for name in variables:
                expr = re.sub(r"\$\{" + re.escape(name) + r"(:\w+)?\}|\$" + re.escape(name) + r"\b", ".*", expr)
            if "$" in expr:
                problems.append(f"panel {title!r} query {t.get('refId')}: unknown variable in {t['expr']!r}")
                continue
            record = f"grafana:panel_{p.get('id')}_{t.get('refId')}"
            legend[record] = f"panel {title!r} query {t.get('refId')}: {t['expr']}"
            rules.append({"record": record, "expr": expr})
    if problems:
        fail(f"{rel(path, deploy)}:\n  " + "\n  ".join(problems))
    # promtool parses each query as a recording rule's expression.
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "grafana-queries", "rules": rules}]}, f)
    out = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    Path(f.name).unlink()
    if out.returncode != 0:
        text = out.stdout + out.stderr
        named = [v for k, v in legend.items() if f"\"{k}\"" in text]
        fail(f"{rel(path, deploy)}: a query does not parse as PromQL:\n{text.strip()}\n  " + "\n  ".join(named))
    ok(f"grafana dashboard ok ({len(panels)} panels, {len(rules)} queries parse as PromQL)")


# --------------------------------------------------------------------------- dockerfiles

CONTROL = {"&&", "||", ";", "|", "&", "(", ")", "|&", ";;", "\n"}
KEYWORDS = {"{", "}", "!", "then", "do", "else", "elif", "if", "while", "until", "time"}
ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
CARGO_IN_TEXT = re.compile(r"(^|[\s;&|(`])(\S*/)?cargo(\s|$|[;&|)`])")


def simple_commands(script: str) -> list[list[str]]:
    """Splits a shell command line into simple commands (word lists), at control operators."""
    lex = shlex.shlex(script, posix=True, punctuation_chars=";&|()")
    lex.whitespace_split = True
    lex.commenters = ""
    commands, words, comment = [], [], False
    try:
        for tok in lex:
            if tok in CONTROL or set(tok) <= set(";&|()"):
                if words:
                    commands.append(words)
                words, comment = [], False
            elif comment or tok.startswith("#"):
                comment = True
            else:
                words.append(tok)
    except ValueError as e:
        raise Invalid(f"cannot split shell command {script!r}: {e}")
    if words:
        commands.append(words)
    return commands


def is_cargo(word: str) -> bool:
    return word == "cargo" or word.endswith("/cargo")


def make_expand(line: str) -> str:
    return line.replace("$(MAKE)", "make").replace("${MAKE}", "make").replace("$$", "$")


def parse_makefile(path: Path):
    """Rules of a Makefile: target -> (prerequisites, recipe lines), and the default goal."""
    raw = path.read_text().splitlines()
    lines, buf = [], ""
    for line in raw:
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        lines.append(buf + line)
        buf = ""
    rules: dict[str, tuple[list[str], list[str]]] = {}
    default, current = None, []
    rule_re = re.compile(r"^([^\s:=#][^:=]*?)\s*:(?![=:])\s*(.*)$")
    for line in lines:
        if line.startswith("\t"):
            for t in current:
                rules[t][1].append(line[1:].lstrip("@+- \t"))
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.match(r"^\.DEFAULT_GOAL\s*:?=\s*(\S+)", line)
        if m:
            default = m.group(1)
            continue
        m = rule_re.match(line)
        if not m:
            current = []
            continue
        targets = m.group(1).split()
        rest = m.group(2).split("#", 1)[0]
        prereqs, _, inline = rest.partition(";")
        current = [t for t in targets if not t.startswith(".")]
        for t in current:
            rules.setdefault(t, ([], []))
            rules[t][0].extend(prereqs.split())
            if inline.strip():
                rules[t][1].append(inline.strip())
        if default is None and current:
            default = current[0]
    return rules, default


def make_targets(words: list[str]) -> list[str] | None:
    """The targets of a `make …` command, or None if it is not one."""
    if not words or words[0] not in ("make", "gmake"):
        return None
    targets, skip = [], False
    for w in words[1:]:
        if skip:
            skip = False
        elif w in ("-C", "-f", "--file", "--directory", "-I", "-o", "-W"):
            raise Invalid(f"`{' '.join(words)}`: make {w} is beyond this check")
        elif w.startswith("-") or ASSIGN.match(w):
            continue
        else:
            targets.append(w)
    return targets


def cargo_commands_in(line: str) -> list[str]:
    out = []
    for words in simple_commands(line):
        for i, w in enumerate(words):
            if is_cargo(w):
                out.append(" ".join(["cargo"] + words[i + 1:]))
                break
    return out


def ci_cargo_commands(makefile: Path, ci_script: Path) -> tuple[set[str], list[str]]:
    """Every cargo command CI runs: those in ci_script itself and in the recipes of the
    Makefile targets it reaches (prerequisites and recursive makes included)."""
    rules, default = parse_makefile(makefile)
    commands: set[str] = set()
    todo: list[str] = []
    for line in ci_script.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        for words in simple_commands(line):
            targets = make_targets(words)
            if targets is not None:
                todo.extend(targets or [default])
            elif words and is_cargo(words[0]):
                commands.add(" ".join(["cargo"] + words[1:]))
    seen = set()
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        if t not in rules:
            continue
        prereqs, recipe = rules[t]
        todo.extend(prereqs)
        for line in recipe:
            line = make_expand(line)
            commands.update(cargo_commands_in(line))
            for words in simple_commands(line):
                targets = make_targets(words)
                if targets is not None:
                    todo.extend(targets or [default])
    return commands, sorted(seen & set(rules))


def dockerfile_runs(path: Path):
    """(line number, RUN text) for each RUN instruction, continuation lines joined and
    comment lines dropped as Docker does; heredoc bodies are appended to their RUN."""
    lines = path.read_text().splitlines()
    i, out = 0, []
    while i < len(lines):
        start = i
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        text = line
        while text.rstrip().endswith("\\") and i < len(lines):
            text = text.rstrip()[:-1] + " "
            nxt = lines[i]
            i += 1
            if nxt.lstrip().startswith("#") or not nxt.strip():
                text += " \\"
                continue
            text += nxt
        text = text.strip()
        instr, _, rest = text.partition(" ")
        if instr.upper() != "RUN":
            continue
        for m in re.finditer(r"(?<!<)<<(?!<)-?\s*[\"']?(\w+)[\"']?", rest):
            body = []
            while i < len(lines) and lines[i].strip() != m.group(1):
                body.append(lines[i])
                i += 1
            i += 1
            rest += "\n" + "\n".join(body)
        out.append((start + 1, rest.strip()))
    return out


def dockerfile_cargo(path: Path) -> list[tuple[int, str]]:
    """The cargo commands the Dockerfile's RUN instructions run, normalised. Cargo run
    any other way (under a wrapper, in sh -c, in a heredoc) cannot be verified and fails."""
    found = []
    for lineno, rest in dockerfile_runs(path):
        while rest.startswith("--"):
            rest = rest.split(None, 1)[1] if " " in rest else ""
        if "\n" in rest and CARGO_IN_TEXT.search(rest.split("\n", 1)[1]):
            fail(f"{rel(path)}:{lineno}: cargo runs inside a heredoc, which this check cannot verify")
        if rest.startswith("["):
            try:
                argv = json.loads(rest)
            except json.JSONDecodeError:
                fail(f"{rel(path)}:{lineno}: RUN [...] is not a JSON array")
            if argv and is_cargo(argv[0]):
                found.append((lineno, " ".join(["cargo"] + argv[1:])))
                continue
            if len(argv) == 3 and argv[1] == "-c" and argv[0].split("/")[-1] in ("sh", "bash"):
                rest = argv[2]
            elif any(CARGO_IN_TEXT.search(a) or is_cargo(a) for a in argv):
                fail(f"{rel(path)}:{lineno}: cargo runs in a form this check cannot verify: {argv}")
            else:
                continue
        for words in simple_commands(rest):
            while words and (ASSIGN.match(words[0]) or words[0] in KEYWORDS):
                words = words[1:]
            if not words:
                continue
            if is_cargo(words[0]):
                found.append((lineno, " ".join(["cargo"] + words[1:])))
            elif any(is_cargo(w) or CARGO_IN_TEXT.search(w) for w in words):
                fail(f"{rel(path)}:{lineno}: cargo runs in a form this check cannot verify "
                     f"(`{' '.join(words)}`); run it as a command of its own")
    return found


def dockerfiles(deploy: Path) -> list[Path]:
    files = sorted((deploy / "docker").glob("*.Dockerfile"))
    if not files:
        fail(f"no Dockerfiles in {rel(deploy / 'docker')}")
    return files


def check_dockerfile_build(deploy: Path, makefile: Path) -> None:
    """Each image builds with the cargo command of `make build`."""
    rules, _ = parse_makefile(makefile)
    if "build" not in rules:
        fail(f"{rel(makefile)}: no build target")
    wanted = set()
    for line in rules["build"][1]:
        wanted.update(cargo_commands_in(make_expand(line)))
    if len(wanted) != 1:
        fail(f"{rel(makefile)}: `make build` should run one cargo command, found {sorted(wanted) or 'none'}")
    (want,) = wanted
    for path in dockerfiles(deploy):
        got = [c for _, c in dockerfile_cargo(path)]
        if want not in got:
            fail(f"{rel(path, deploy)}: does not build with `{want}` (what `make build` runs); "
                 f"its cargo commands: {got or 'none'}")
    ok(f"dockerfiles build with `{want}`, as `make build` does")


def check_dockerfile_ci(deploy: Path, makefile: Path, ci_script: Path) -> None:
    """Every cargo command a Dockerfile runs is one CI runs too, so CI proves it works."""
    ci, reached = ci_cargo_commands(makefile, ci_script)
    problems = []
    for path in dockerfiles(deploy):
        for lineno, cmd in dockerfile_cargo(path):
            if cmd not in ci:
                problems.append(f"{rel(path, deploy)}:{lineno}: `{cmd}` is not a command CI runs")
    if problems:
        listing = "\n    ".join(sorted(ci)) or "(none)"
        fail("\n".join(problems) + f"\n  CI ({rel(ci_script)}) reaches the make targets "
             f"{', '.join(reached)}, whose recipes run these cargo commands:\n    {listing}")
    ok(f"dockerfile cargo commands are ones CI runs (targets reached: {', '.join(reached)})")


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    checks = {
        "compose-refs": (check_compose_refs, 1),
        "k8s-files": (list_k8s_files, 1),
        "kustomization": (check_kustomization, 1),
        "keda": (check_keda, 1),
        "invariants": (check_invariants, 1),
        "alert-policy": (check_alert_policy, 1),
        "prometheus-k8s": (check_prometheus_k8s, 2),
        "grafana": (check_grafana, 2),
        "dockerfile-build": (check_dockerfile_build, 2),
        "dockerfile-ci": (check_dockerfile_ci, 3),
    }
    if len(argv) < 2 or argv[1] not in checks or len(argv) != 2 + checks[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 64
    fn, _ = checks[argv[1]]
    args = [Path(argv[2])] + [a if argv[1] in ("grafana", "prometheus-k8s") else Path(a)
                              for a in argv[3:]]
    try:
        fn(*args)
    except Invalid as e:
        print(f"validate: {argv[1]} FAILED\n{e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
