"""Assertions on one `helm template` output of charts/leaderd, for scripts/check-chart.sh.

    python3 assert_render.py RENDER.yaml HELP.txt 'SPEC-JSON'

Prints one line per assertion, "PASS <what>" or "FAIL <what>: <why>"; check-chart.sh counts
them. SPEC keys (all optional but `kinds`):
  kinds         sorted list of the kinds the render must hold, exactly (duplicates included)
  lease         the Lease name the Role's resourceNames and --lease-name must carry
  events        true/false: the events.k8s.io rule and --emit-events=true/false
  pods          true/false: the pods get/patch rule, and --label-pod=true with --pod-label-key
                (podLabel.enabled)
  pod_label_key the --pod-label-key expected with pods (default leaderd.io/role)
  pod_role_namespace  when set, the pods rule must be in a Role of its own ("<lease Role>-pod-label")
                in this namespace, bound to the same ServiceAccount, and not in the lease Role
  args          {flag: value or null}: the feature flags (--priority, the hooks, --hook-timeout,
                --notify-url, --on-lost, --app-check and its four timings) must be rendered with
                exactly these values; any of them not named here must be absent (the secure
                default)
  volume_mounts the leaderd container's volumeMounts, exactly (default: none)
  leader_service  {"name", "port"}: one Service of that name selecting the demo pods' labels plus
                <pod_label_key>: leader, targeting the metrics port, and the Deployment's own
                selector must not use the label
  sa            the ServiceAccount the RoleBinding binds and the pods run as
  sa_created    whether a ServiceAccount object must be rendered
  sidecar       "containers" or "initContainers": where the leaderd container must be
  probes        true/false: whether the leaderd container must carry kubelet probes
  alerts        path of the alert rule file the PrometheusRule must embed
  dashboard     path of the dashboard JSON the ConfigMap must carry
  etcd          {"endpoints": "URL,URL", "prefix": P or null, "tls_secret": NAME or null}: backend
                etcd. The args must carry --backend=etcd, exactly these --etcd-endpoints and
                --etcd-prefix (absent when null), the three TLS files under /etc/leaderd/etcd-tls
                exactly when tls_secret (with the read-only mount and the Secret volume), and none
                of --namespace, --emit-events, --priority, --label-pod, --pod-label-key; the pods
                and a rendered ServiceAccount have automountServiceAccountToken false, and the
                container gets POD_NAME but not POD_NAMESPACE. Without it (backend kubernetes) no
                --backend or --etcd-* flag, no volume and no automountServiceAccountToken may be
                rendered.
  shards        N > 0: a shard group. The args must carry --shards=N, and the lease rules of the
                Role must be exactly one namespace-wide rule (no resourceNames): leases get, list,
                watch, create, update. Without it (and without config) no --shards, and the Role
                must not grant list, nor watch beyond the one Lease (resourceNames).
  config        {"name": CONFIGMAP, "text": TEXT}: configFile. One ConfigMap CONFIGMAP with exactly
                data config.yaml: TEXT, the args --config=/etc/leaderd/config.yaml, the read-only
                mount leaderd-config at /etc/leaderd, the pod volume leaderd-config from that
                ConfigMap (mode 0444), and the namespace-wide lease rule as with shards. Without
                it: no --config, no such mount or volume, and no ConfigMap but the dashboard's.
"""

import json
import re
import sys

import yaml

render_path, help_path, spec_json = sys.argv[1:4]
spec = json.loads(spec_json)
ETCD = spec.get("etcd")
ETCD_TLS_DIR = "/etc/leaderd/etcd-tls"
SHARDS = spec.get("shards") or 0
CONFIG = spec.get("config")
CONFIG_DIR = "/etc/leaderd"
# leaderd works on more Leases than lease.name: the lease rules are namespace-wide.
LEASE_GROUPS = SHARDS > 0 or CONFIG is not None
docs = [d for d in yaml.safe_load_all(open(render_path)) if d]
help_text = open(help_path).read()
HELP_FLAGS = set(re.findall(r"(?m)^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)", help_text))


def report(ok, what, why=""):
    print(("PASS " if ok else "FAIL ") + what + ("" if ok else ": " + why))


def of_kind(kind):
    return [d for d in docs if d.get("kind") == kind]


# --- objects -------------------------------------------------------------------------------
kinds = sorted(d.get("kind", "?") for d in docs)
report(kinds == sorted(spec["kinds"]), "rendered kinds are " + ",".join(sorted(spec["kinds"])),
       "got " + ",".join(kinds))

# --- RBAC ----------------------------------------------------------------------------------
POD_RULE = (("",), ("pods",), None, ("get", "patch"))


def rule_tuples(role):
    got = []
    for r in role.get("rules", []):
        names = r.get("resourceNames")
        got.append((tuple(r.get("apiGroups", [])), tuple(r.get("resources", [])),
                    tuple(names) if names is not None else None, tuple(r.get("verbs", []))))
    return got


all_roles = of_kind("Role")
# The lease Role is the one about leases; a separate pods Role (pod_role_namespace) is checked below.
roles = [r for r in all_roles if any("leases" in x.get("resources", []) for x in r.get("rules", []))]
pod_ns = spec.get("pod_role_namespace")
if pod_ns:
    pod_roles = [r for r in all_roles if r not in roles]
    pod_rbs = [b for b in of_kind("RoleBinding")
               if b["roleRef"]["name"] in [r["metadata"]["name"] for r in pod_roles]]
    report(len(pod_roles) == 1 and pod_roles[0]["metadata"]["namespace"] == pod_ns
           and roles and pod_roles[0]["metadata"]["name"] == roles[0]["metadata"]["name"] + "-pod-label"
           and rule_tuples(pod_roles[0]) == [POD_RULE]
           and len(pod_rbs) == 1 and pod_rbs[0]["metadata"]["namespace"] == pod_ns
           and [(s_["kind"], s_["name"]) for s_ in pod_rbs[0]["subjects"]] == [("ServiceAccount", spec["sa"])],
           f"pods get/patch in a Role and RoleBinding of their own in {pod_ns} (the pod's namespace), "
           f"bound to {spec['sa']}",
           f"got roles {[(r['metadata']['name'], r['metadata']['namespace'], rule_tuples(r)) for r in pod_roles]}, "
           f"bindings {[b['metadata'] for b in pod_rbs]}")
if roles:
    lease = spec["lease"]
    if LEASE_GROUPS:
        expected = [
            (("coordination.k8s.io",), ("leases",), None, ("get", "list", "watch", "create", "update")),
        ]
    else:
        expected = [
            (("coordination.k8s.io",), ("leases",), (lease,), ("get", "update", "watch")),
            (("coordination.k8s.io",), ("leases",), None, ("create",)),
        ]
    if spec.get("events", True):
        expected.append((("events.k8s.io",), ("events",), None, ("create", "patch")))
    if spec.get("pods", False) and not pod_ns:
        expected.append(POD_RULE)
    got = rule_tuples(roles[0])
    report(sorted(got, key=repr) == sorted(expected, key=repr),
           "Role rules are exactly: " + "; ".join(
               f"{g[0] or 'core'}/{res[0]}{'[' + n[0] + ']' if n else ''}: {','.join(v)}"
               for g, res, n, v in expected),
           f"got {got}")
    verbs = [v for role in of_kind("Role") + of_kind("ClusterRole")
             for r in role.get("rules", []) for v in r.get("verbs", [])]
    report("delete" not in verbs and "deletecollection" not in verbs and "*" not in verbs
           and not of_kind("ClusterRole") and not of_kind("ClusterRoleBinding"),
           "no delete (or *) verb and no cluster-wide RBAC", f"verbs {verbs}")
    lease_rules = [r for r in roles[0]["rules"] if "leases" in r.get("resources", [])
                   and any(v in r.get("verbs", []) for v in ("get", "update", "watch"))]
    all_lease_rules = [r for role in of_kind("Role") for r in role.get("rules", [])
                       if "leases" in r.get("resources", [])]
    lease_verbs = [v for r in all_lease_rules for v in r.get("verbs", [])]
    if LEASE_GROUPS:
        why = " and ".join(w for w, on in ((f"shards={SHARDS}", SHARDS > 0), ("configFile", CONFIG is not None)) if on)
        report(bool(lease_rules) and all("resourceNames" not in r for r in lease_rules)
               and all(v in lease_verbs for v in ("get", "list", "watch", "create", "update")),
               f"lease rule is namespace-wide (no resourceNames) with get, list, watch, create, update ({why})",
               f"got {all_lease_rules}")
    else:
        report(bool(lease_rules) and all(r.get("resourceNames") == [lease] for r in lease_rules),
               f"lease get/update/watch rule carries resourceNames [{lease}]", f"got {lease_rules}")
        report("list" not in lease_verbs
               and all(r.get("resourceNames") == [lease] for r in all_lease_rules if "watch" in r.get("verbs", [])),
               f"no list of leases, and watch only on [{lease}] (no shard group, no configFile)",
               f"got {all_lease_rules}")
    report("patch" not in lease_verbs, "no patch on leases", f"got {all_lease_rules}")
    rb = [b for b in of_kind("RoleBinding") if not b["metadata"]["name"].endswith("-pod-label")]
    subj = rb[0]["subjects"] if rb else []
    report(len(rb) == 1 and rb[0]["roleRef"]["name"] == roles[0]["metadata"]["name"]
           and subj == [{"kind": "ServiceAccount", "name": spec["sa"],
                         "namespace": subj[0].get("namespace") if subj else None}],
           f"RoleBinding binds the Role to ServiceAccount {spec['sa']}", f"got {subj}")
if "sa_created" in spec:
    sas = [d["metadata"]["name"] for d in of_kind("ServiceAccount")]
    want = [spec["sa"]] if spec["sa_created"] else []
    report(sas == want, f"ServiceAccount objects are {want}", f"got {sas}")
automount = [d.get("automountServiceAccountToken") for d in of_kind("ServiceAccount")]
report(all(a is False for a in automount) if ETCD else all(a is None for a in automount),
       "ServiceAccount automountServiceAccountToken: "
       + ("false (backend etcd: no token)" if ETCD else "not set (backend kubernetes)"), f"got {automount}")

# --- the sidecar -----------------------------------------------------------------------------
if spec.get("sidecar"):
    pods = [d["spec"]["template"]["spec"] for d in docs
            if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet")]
    where = spec["sidecar"]
    other = "containers" if where == "initContainers" else "initContainers"
    found = [c for p in pods for c in p.get(where, []) if c["name"] == "leaderd"]
    stray = [c for p in pods for c in p.get(other, []) if c["name"] == "leaderd"]
    ok = len(found) == 1 and not stray
    if where == "initContainers":
        ok = ok and found[0].get("restartPolicy") == "Always"
    else:
        ok = ok and "restartPolicy" not in found[0]
    report(ok, f"leaderd is in {where}" + (" with restartPolicy Always" if where == "initContainers" else ""),
           f"found {len(found)} there, {len(stray)} in {other}")
    c = found[0] if found else {}
    report(all(p.get("serviceAccountName") == spec["sa"] for p in pods),
           f"pods run as ServiceAccount {spec['sa']}",
           str([p.get("serviceAccountName") for p in pods]))
    sc = c.get("securityContext", {})
    want_sc = {"runAsNonRoot": True, "runAsUser": 65532, "readOnlyRootFilesystem": True,
               "allowPrivilegeEscalation": False}
    ok = all(sc.get(k) == v for k, v in want_sc.items()) \
        and sc.get("capabilities", {}).get("drop") == ["ALL"] \
        and not sc.get("capabilities", {}).get("add") \
        and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault" \
        and sc.get("privileged") in (None, False)
    report(ok, "securityContext: runAsNonRoot, runAsUser 65532, readOnlyRootFilesystem, "
           "no privilege escalation, drop ALL, seccomp RuntimeDefault", f"got {sc}")
    env = {e["name"]: e for e in c.get("env", [])}
    pod_name_ok = env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name"
    if ETCD:
        report(pod_name_ok and "POD_NAMESPACE" not in env,
               "POD_NAME comes from the downward API, and no POD_NAMESPACE (backend etcd)",
               f"got {list(env.values())}")
    else:
        report(pod_name_ok
               and env.get("POD_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace",
               "POD_NAME and POD_NAMESPACE come from the downward API", f"got {list(env.values())}")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    report(ports == {"http": 4040, "metrics": 9464}, "ports http 4040 and metrics 9464", f"got {ports}")
    args = [str(a) for a in c.get("args", [])]
    flags = [a.split("=", 1)[0] for a in args if a.startswith("--")]
    unknown = [f for f in flags if f not in HELP_FLAGS]
    report(bool(flags) and not unknown and len(flags) == len(args),
           f"every flag in args exists in leaderd --help ({len(flags)} flags)",
           f"unknown {unknown}; help has {sorted(HELP_FLAGS)}; args {args}")
    av = {a.split("=", 1)[0]: a.split("=", 1)[1] if "=" in a else "" for a in args}

    def secs(d):
        units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
        return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(ns|us|ms|s|m|h)", d))

    timings = [secs(av.get(f, "")) for f in ("--lease-duration", "--renew-deadline", "--retry-period")]
    want_events = None if ETCD else ("true" if spec.get("events", True) else "false")
    if spec.get("config"):
        # --config names the lease or group and its timing: none of those flags beside it.
        report(all(f not in av for f in ("--lease-name", "--shards", "--lease-duration",
                                           "--renew-deadline", "--retry-period"))
               and av.get("--emit-events") == want_events,
               f"args: --config instead of --lease-name, --shards and the timing flags, --emit-events={want_events}",
               f"got {args}")
    else:
        report(av.get("--lease-name") == spec["lease"]
               and av.get("--emit-events") == want_events
               and timings[0] > timings[1] > timings[2] > 0,
               f"args: --lease-name={spec['lease']}, "
               + ("no --emit-events (backend etcd)" if ETCD else f"--emit-events={want_events}")
               + ", lease-duration > renew-deadline > retry-period > 0", f"got {args}")
    ETCD_FLAGS = ("--backend", "--etcd-endpoints", "--etcd-prefix", "--etcd-ca-file", "--etcd-cert-file",
                  "--etcd-key-file")
    if ETCD:
        want = {"--backend": "etcd", "--etcd-endpoints": ETCD["endpoints"], "--etcd-prefix": ETCD.get("prefix"),
                "--etcd-ca-file": None, "--etcd-cert-file": None, "--etcd-key-file": None}
        if ETCD.get("tls_secret"):
            want.update({"--etcd-ca-file": f"{ETCD_TLS_DIR}/ca.crt", "--etcd-cert-file": f"{ETCD_TLS_DIR}/tls.crt",
                         "--etcd-key-file": f"{ETCD_TLS_DIR}/tls.key"})
        have = {f: av.get(f) for f in ETCD_FLAGS}
        report(have == want and all(flags.count(f) <= 1 for f in ETCD_FLAGS),
               "args: etcd flags exactly " + ", ".join(f"{f}={v}" for f, v in want.items() if v is not None),
               f"got {have}")
        k8s_only = [f for f in ("--namespace", "--emit-events", "--priority", "--label-pod", "--pod-label-key")
                    if f in av]
        report(not k8s_only, "args: no Kubernetes-only flag (--namespace, --emit-events, --priority, "
               "--label-pod, --pod-label-key)", f"got {k8s_only}")
    else:
        stray = [f for f in ETCD_FLAGS if f in av]
        report(not stray, "args: no --backend and no --etcd-* flag (backend kubernetes, the default)",
               f"got {stray}")
    want_groups = {"--shards": str(SHARDS) if SHARDS > 0 else None,
                   "--config": f"{CONFIG_DIR}/config.yaml" if CONFIG is not None else None}
    have_groups = {f: av.get(f) for f in want_groups}
    report(have_groups == want_groups and all(flags.count(f) <= 1 for f in want_groups),
           "args: " + ", ".join(f"{f}={v}" if v is not None else f"no {f}" for f, v in want_groups.items()),
           f"got {have_groups}")
    key = spec.get("pod_label_key", "leaderd.io/role")
    if spec.get("pods", False):
        report(av.get("--label-pod") == "true" and av.get("--pod-label-key") == key,
               f"args: --label-pod=true --pod-label-key={key} (podLabel.enabled)", f"got {args}")
    else:
        report("--label-pod" not in av and "--pod-label-key" not in av,
               "args: no --label-pod, no --pod-label-key (podLabel off)", f"got {args}")
    FEATURES = ("--priority", "--on-started-leading", "--on-stopped-leading", "--on-new-leader",
                "--hook-timeout", "--notify-url", "--on-lost", "--app-check", "--app-check-interval",
                "--app-check-timeout", "--app-check-failures", "--app-check-successes")
    want = {f: spec.get("args", {}).get(f) for f in FEATURES}
    have = {f: av.get(f) for f in FEATURES}
    report(have == want and all(flags.count(f) <= 1 for f in FEATURES),
           "feature flags rendered exactly as set: "
           + (", ".join(f"{f}={v}" for f, v in want.items() if v is not None) or "none (defaults)"),
           f"got {have}")
    limits = {"--http-max-connections": "1024", "--http-idle-timeout": "30s"}
    limits.update({f: v for f, v in spec.get("args", {}).items() if f in limits})
    report(all(av.get(f) == v for f, v in limits.items()) and all(flags.count(f) == 1 for f in limits),
           "args: " + ", ".join(f"{f}={v}" for f, v in limits.items()) + " (http.maxConnections, http.idleTimeout)",
           f"got {args}")
    mounts = c.get("volumeMounts", [])
    want_mounts = list(spec.get("volume_mounts", []))
    if CONFIG is not None:
        want_mounts.insert(0, {"name": "leaderd-config", "mountPath": CONFIG_DIR, "readOnly": True})
    if ETCD and ETCD.get("tls_secret"):
        want_mounts.insert(0, {"name": "leaderd-etcd-tls", "mountPath": ETCD_TLS_DIR, "readOnly": True})
    report(mounts == want_mounts, f"leaderd volumeMounts are {want_mounts or 'none'}", f"got {mounts}")
    tls_volumes = [v for p in pods for v in p.get("volumes", []) if v.get("name") == "leaderd-etcd-tls"]
    if ETCD and ETCD.get("tls_secret"):
        report(len(tls_volumes) == len(pods) and all(
                   v.get("secret", {}).get("secretName") == ETCD["tls_secret"]
                   and v["secret"].get("defaultMode") == 0o444 and set(v) == {"name", "secret"}
                   for v in tls_volumes),
               f"pod volume leaderd-etcd-tls is Secret {ETCD['tls_secret']} (mode 0444)", f"got {tls_volumes}")
    else:
        report(not tls_volumes, "no leaderd-etcd-tls volume", f"got {tls_volumes}")
    config_volumes = [v for p in pods for v in p.get("volumes", []) if v.get("name") == "leaderd-config"]
    if CONFIG is not None:
        report(len(config_volumes) == len(pods) and all(
                   v.get("configMap", {}).get("name") == CONFIG["name"]
                   and v["configMap"].get("defaultMode") == 0o444 and set(v) == {"name", "configMap"}
                   for v in config_volumes),
               f"pod volume leaderd-config is ConfigMap {CONFIG['name']} (mode 0444)", f"got {config_volumes}")
    else:
        report(not config_volumes, "no leaderd-config volume", f"got {config_volumes}")
    tokens = [p.get("automountServiceAccountToken") for p in pods]
    report(all(t is False for t in tokens) if ETCD else all(t in (None, True) for t in tokens),
           "pods: automountServiceAccountToken "
           + ("false (backend etcd: leaderd never calls the Kubernetes API)" if ETCD else "not false"),
           f"got {tokens}")
    probes = {k: c.get(k) for k in ("livenessProbe", "readinessProbe", "startupProbe") if k in c}
    if spec.get("probes", True):
        live = probes.get("livenessProbe", {}).get("httpGet", {})
        ready = probes.get("readinessProbe", {}).get("httpGet", {})
        metrics_bind = av.get("--metrics-addr", "")
        report(live.get("path") == "/healthz" and ready.get("path") == "/readyz"
               and live.get("port") == "metrics" and ready.get("port") == "metrics"
               and "host" not in live and "host" not in ready
               and not metrics_bind.startswith("127.") and not metrics_bind.startswith("[::1]"),
               "liveness GET /healthz and readiness GET /readyz on port metrics, and --metrics-addr "
               "is not loopback (kubelet probes the pod IP)", f"got {probes}, --metrics-addr {metrics_bind}")
    else:
        report(not probes, "no kubelet probes (the metrics listener is bound to loopback)", f"got {probes}")
    http_bind = av.get("--http-addr", "")
    if spec.get("api_loopback", True):
        report(http_bind.startswith("127.0.0.1:"), "--http-addr on 127.0.0.1 (the app API stays pod-local)",
               f"got --http-addr {http_bind}")

# --- the leader Service ----------------------------------------------------------------------
if spec.get("leader_service"):
    want = spec["leader_service"]
    key = spec.get("pod_label_key", "leaderd.io/role")
    svcs = of_kind("Service")
    deps = of_kind("Deployment")
    pod_labels = deps[0]["spec"]["template"]["metadata"]["labels"] if deps else {}
    sel = svcs[0]["spec"].get("selector", {}) if svcs else {}
    ports = svcs[0]["spec"].get("ports", []) if svcs else []
    report(len(svcs) == 1 and svcs[0]["metadata"]["name"] == want["name"]
           and sel == {**pod_labels, key: "leader"},
           f"Service {want['name']} selects the demo pods' labels plus {key}: leader",
           f"got {[d['metadata']['name'] for d in svcs]} selecting {sel}; pod labels {pod_labels}")
    report([(p.get("port"), p.get("targetPort")) for p in ports] == [(want["port"], "metrics")],
           f"Service port {want['port']} targets port metrics", f"got {ports}")
    report(bool(deps) and key not in deps[0]["spec"]["selector"].get("matchLabels", {})
           and key not in pod_labels,
           f"the Deployment neither selects nor templates {key} (leaderd sets it at run time)",
           f"got {deps[0]['spec']['selector'] if deps else None}")

# --- monitoring ----------------------------------------------------------------------------
if spec.get("alerts"):
    rules = of_kind("PrometheusRule")
    try:
        src = yaml.safe_load(open(spec["alerts"]))
    except OSError as e:
        src = f"missing: {e}"
    report(len(rules) == 1 and rules[0]["spec"] == src,
           f"PrometheusRule spec equals {spec['alerts']}", "differs or missing")
if "podmonitor" in spec:
    pms = of_kind("PodMonitor")
    eps = pms[0]["spec"]["podMetricsEndpoints"] if pms else []
    report(len(pms) == 1 and [e["port"] for e in eps] == ["metrics"]
           and all(e.get("path") == "/metrics" for e in eps),
           "PodMonitor scrapes port metrics, /metrics", f"got {eps}")
if spec.get("dashboard"):
    cms = [d for d in of_kind("ConfigMap")
           if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    try:
        want = json.load(open(spec["dashboard"]))
    except OSError as e:
        want = f"missing: {e}"
    ok = len(cms) == 1 and json.loads(cms[0]["data"]["leaderd.json"]) == want
    report(ok, f"dashboard ConfigMap (grafana_dashboard: \"1\") carries {spec['dashboard']}",
           "differs or missing")

# --- configFile ------------------------------------------------------------------------------
config_maps = [d for d in of_kind("ConfigMap")
               if d["metadata"].get("labels", {}).get("grafana_dashboard") != "1"]
if CONFIG is not None:
    report(len(config_maps) == 1 and config_maps[0]["metadata"]["name"] == CONFIG["name"]
           and config_maps[0].get("data") == {"config.yaml": CONFIG["text"]},
           f"ConfigMap {CONFIG['name']} carries exactly config.yaml (configFile, verbatim)",
           f"got {[(d['metadata']['name'], d.get('data')) for d in config_maps]}")
else:
    report(not config_maps, "no ConfigMap but the dashboard's (configFile empty)",
           f"got {[d['metadata']['name'] for d in config_maps]}")
