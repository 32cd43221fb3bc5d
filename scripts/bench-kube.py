#!/usr/bin/env python3
"""Benchmarks against a real kube-apiserver:
1. drain of 100 evictable pods under 10 PodDisruptionBudgets, `rhel-node-agent node drain` against
   `kubectl drain`, measured in the same run;
2. the idle daemon's API traffic per minute (from the server's own apiserver_request_total).

Starts etcd + kube-apiserver 1.20.2 + kube-controller-manager (disruption controller) from the
cache of tests/kube/get-kube.sh on loopback. For each round and each tool, a fresh namespace gets
10 budgets (minAvailable 9 of 10 pods each: one disruption at a time per group) and 100 pods on the
node to drain. There is no kubelet: one fake-kubelet loop (the same for both tools) removes evicted
pods and starts a ready replacement on another node, as a ReplicaSet would. Prints each drain's
wall time and the ratio. Needs root once for the cache; kubectl from Debian's kubernetes-client.
Usage: scripts/bench-kube.py [ROUNDS] [IDLE_SECONDS]   (not part of scripts/test)
"""
import json, os, shutil, socket, ssl, subprocess, sys, tempfile, threading, time, urllib.request

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 2
IDLE = int(sys.argv[2]) if len(sys.argv) > 2 else 180
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNA = os.environ.get("RNA_BIN", os.path.join(ROOT, "target/release/rhel-node-agent"))
TOKEN = "bench-admin-token"


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def main():
    kube_bin = subprocess.run(["bash", os.path.join(ROOT, "tests/kube/get-kube.sh")],
                              check=True, capture_output=True, text=True).stdout.strip()
    kubectl = shutil.which("kubectl")
    if not kubectl:
        sys.exit("kubectl missing: apt-get install kubernetes-client")
    if not os.access(RNA, os.X_OK):
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="rna-bench-drain.")
    procs = []
    try:
        pki = os.path.join(work, "pki"); os.makedirs(pki)
        open(os.path.join(pki, "tokens.csv"), "w").write(f'{TOKEN},admin,1,"system:masters"\n')
        subprocess.run(["openssl", "genrsa", "-out", f"{pki}/sa.key", "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", f"{pki}/sa.key", "-pubout", "-out", f"{pki}/sa.pub"], check=True, capture_output=True)
        ep, pp, port = free_port(), free_port(), free_port()
        log = lambda n: open(os.path.join(work, n), "w")
        procs.append(subprocess.Popen([f"{kube_bin}/etcd", "--name", "b", "--data-dir", f"{work}/etcd",
            f"--listen-client-urls=http://127.0.0.1:{ep}", f"--advertise-client-urls=http://127.0.0.1:{ep}",
            f"--listen-peer-urls=http://127.0.0.1:{pp}", f"--initial-advertise-peer-urls=http://127.0.0.1:{pp}",
            f"--initial-cluster=b=http://127.0.0.1:{pp}", "--unsafe-no-fsync=true", "--log-level=warn"],
            stdout=subprocess.DEVNULL, stderr=log("etcd.log")))
        procs.append(subprocess.Popen([f"{kube_bin}/kube-apiserver", f"--etcd-servers=http://127.0.0.1:{ep}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}", "--insecure-port=0",
            f"--cert-dir={work}/certs", f"--token-auth-file={pki}/tokens.csv", "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc", f"--service-account-key-file={pki}/sa.pub",
            f"--service-account-signing-key-file={pki}/sa.key", "--service-cluster-ip-range=10.96.0.0/24",
            "--endpoint-reconciler-type=none", "--v=0"], stdout=subprocess.DEVNULL, stderr=log("apiserver.log")))
        server = f"https://127.0.0.1:{port}"
        ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE

        def api(method, path, body=None, ctype="application/json", ok404=False):
            data = json.dumps(body).encode() if body is not None else None
            req = urllib.request.Request(server + path, data=data, method=method,
                                         headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": ctype})
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                    return json.loads(r.read() or b"{}")
            except urllib.error.HTTPError as e:
                if ok404 and e.code in (404, 409):
                    return None
                raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:300]}")

        for _ in range(300):
            try:
                api("GET", "/readyz"); break
            except Exception:
                time.sleep(0.3)
        kc = os.path.join(work, "admin.kubeconfig")
        open(kc, "w").write(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}", certificate-authority: "{work}/certs/apiserver.crt"}}}}]
users: [{{name: u, user: {{token: {TOKEN}}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
        procs.append(subprocess.Popen([f"{kube_bin}/kube-controller-manager", f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}", "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}", "--leader-elect=false", "--controllers=disruption", "--v=0"],
            stdout=subprocess.DEVNULL, stderr=log("kcm.log")))
        for n in ["node-r"] + [f"node-{t}-{r}" for r in range(ROUNDS) for t in ("rna", "kubectl")]:
            api("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}})

        stop = threading.Event()

        def make_pod(ns, name, group, node):
            for _ in range(50):
                try:
                    api("POST", f"/api/v1/namespaces/{ns}/pods", {"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": name, "labels": {"group": group}, "ownerReferences": [{
                            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": group,
                            "uid": "00000000-0000-0000-0000-0000000000aa", "controller": True}]},
                        "spec": {"nodeName": node, "automountServiceAccountToken": False,
                                 "containers": [{"name": "c", "image": "example.invalid/pause:1"}]}})
                    break
                except RuntimeError as e:
                    if "403" not in str(e):
                        raise
                    time.sleep(0.2)
            api("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status",
                {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
                ctype="application/merge-patch+json")

        def kubelet():
            n = 0
            while not stop.is_set():
                try:
                    pods = api("GET", "/api/v1/pods")["items"]
                    for p in pods:
                        m = p["metadata"]
                        if "deletionTimestamp" in m:
                            api("DELETE", f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}",
                                {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}, ok404=True)
                            n += 1
                            make_pod(m["namespace"], f"r{n}", m["labels"]["group"], "node-r")
                except Exception as e:
                    print("fake kubelet:", e, file=sys.stderr)
                time.sleep(0.2)

        def fixture(ns, node):
            api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            api("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
            for g in range(10):
                api("POST", f"/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets", {
                    "apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": f"g{g}"},
                    "spec": {"minAvailable": 9, "selector": {"matchLabels": {"group": f"g{g}"}}}})
                for i in range(10):
                    make_pod(ns, f"g{g}-p{i}", f"g{g}", node)
            # Wait until every budget's status is computed (one disruption allowed each).
            for _ in range(300):
                items = api("GET", f"/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets")["items"]
                if all(b.get("status", {}).get("disruptionsAllowed") == 1 for b in items):
                    return
                time.sleep(0.2)
            raise RuntimeError("budgets not computed")

        def on_node(node):
            return [p for p in api("GET", "/api/v1/pods")["items"] if p["spec"].get("nodeName") == node]

        t = threading.Thread(target=kubelet, daemon=True); t.start()
        rootdir = os.path.join(work, "root")
        os.makedirs(f"{rootdir}/etc/rhel-node-agent/config.d", exist_ok=True)
        os.makedirs(f"{rootdir}/etc/containers", exist_ok=True)
        open(f"{rootdir}/etc/containers/registries.conf", "w").close()
        shutil.copy(kc, f"{rootdir}/etc/rhel-node-agent/kubeconfig")
        results = {"rna": [], "kubectl": []}
        for r in range(ROUNDS):
            order = ("rna", "kubectl") if r % 2 == 0 else ("kubectl", "rna")
            for tool in order:
                node, ns = f"node-{tool}-{r}", f"b-{tool}-{r}"
                fixture(ns, node)
                if tool == "rna":
                    open(f"{rootdir}/etc/rhel-node-agent/config.d/50-bench.toml", "w").write(
                        f'[node]\nname = "{node}"\n[kubernetes]\nkubeconfig = "/etc/rhel-node-agent/kubeconfig"\n'
                        '[kubernetes.drain]\ntimeout = "10m"\n')
                    cmd = [RNA, "--root", rootdir, "node", "drain"]
                else:
                    cmd = [kubectl, f"--kubeconfig={kc}", "drain", node, "--ignore-daemonsets", "--timeout=600s"]
                t0 = time.monotonic()
                p = subprocess.run(cmd, capture_output=True, text=True)
                dt = time.monotonic() - t0
                left = len(on_node(node))
                if p.returncode != 0 or left:
                    raise RuntimeError(f"{tool} drain failed ({p.returncode}, {left} pods left): {p.stderr[-500:]}")
                results[tool].append(dt)
                print(f"round {r}: {tool:8s} drained 100 pods in {dt:6.1f} s", flush=True)
        stop.set()
        med = lambda v: sorted(v)[len(v) // 2]
        a, k = med(results["rna"]), med(results["kubectl"])
        print(f"median: rhel-node-agent {a:.1f} s, kubectl drain {k:.1f} s, ratio {a / k:.2f}", flush=True)
        t.join()
        # Idle traffic: stop the controller manager so only the agent talks to the server.
        procs[2].kill(); procs[2].wait()
        api("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "idle"}})
        open(f"{rootdir}/etc/rhel-node-agent/config.d/50-bench.toml", "w").write(
            '[node]\nname = "idle"\n[kubernetes]\nkubeconfig = "/etc/rhel-node-agent/kubeconfig"\n')
        daemon = subprocess.Popen([RNA, "--root", rootdir, "daemon"], stdout=subprocess.DEVNULL, stderr=log("daemon.log"))
        procs.append(daemon)
        time.sleep(30)

        def counts():
            req = urllib.request.Request(server + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            text = urllib.request.urlopen(req, context=ctx, timeout=30).read().decode()
            c = {}
            for line in text.splitlines():
                if line.startswith("apiserver_request_total{"):
                    inner = line[line.index("{") + 1:line.rindex("}")]
                    labels = dict(kv.split("=", 1) for kv in inner.split('",') if "=" in kv)
                    verb = labels.get("verb", "").strip('"')
                    res = labels.get("resource", "").strip('"')
                    if res in ("nodes", "leases", "events", "pods", "configmaps"):
                        c[verb] = c.get(verb, 0) + float(line.rsplit(" ", 1)[1])
            return c
        before = counts()
        time.sleep(IDLE)
        after = counts()
        per_min = {v: (after.get(v, 0) - before.get(v, 0)) * 60 / IDLE for v in after}
        writes = sum(per_min.get(v, 0) for v in ("PATCH", "POST", "PUT", "DELETE", "APPLY"))
        reads = sum(per_min.get(v, 0) for v in ("GET", "LIST"))
        watches = per_min.get("WATCH", 0)
        print(f"idle over {IDLE} s (heartbeat 60 s): {writes:.2f} writes/min, {reads:.2f} reads/min, "
              f"{watches:.2f} watches opened/min; by verb: "
              + ", ".join(f"{v} {n:.2f}" for v, n in sorted(per_min.items()) if n))
    finally:
        for p in reversed(procs):
            p.kill(); p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
