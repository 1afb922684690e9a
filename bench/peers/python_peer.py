"""The Python `kubernetes` client's leaderelection with a LeaseLock, as a candidate for
bench/compare/: serves leaderd's `/leader` JSON shape from a thread so one sampler measures
every elector.

usage: python_peer.py --kubeconfig PATH --namespace NS --lease NAME --identity ID
                      --lease-duration S --renew-deadline S --retry-period S [--http-addr H:P]

Quirks of the library (kubernetes 3x): LeaseLock(name, namespace, identity); the lease
duration must be whole seconds (the lock writes int(str(d))); retry period >= 1 s and
renew deadline > 1.2 x retry period. It has no fencing epoch (it never writes
leaseTransitions), so `epoch` is null, and no release: SIGTERM ends the process with the
lease still held (the default SIGTERM action is kept on purpose).
`is_leader` is true between its on_started_leading and on_stopped_leading callbacks.
"""
import argparse
import datetime
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kubernetes import config
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock


class State:
    def __init__(self, args):
        self.args = args
        self.leading = False
        self.election = None
        self.lock = None
        self.mu = threading.Lock()

    def view(self):
        with self.mu:
            leading, election, lock = self.leading, self.election, self.lock
        rec = election.observed_record if election is not None else None
        ref = lock.lease_reference if lock is not None else None
        observed = None
        if election is not None and election.observed_time_milliseconds:
            observed = datetime.datetime.fromtimestamp(
                election.observed_time_milliseconds / 1000, datetime.timezone.utc
            ).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {
            "lease": self.args.lease,
            "namespace": self.args.namespace,
            "identity": self.args.identity,
            "leader": (rec.holder_identity or None) if rec is not None else None,
            "is_leader": leading,
            "epoch": None,
            "lease_uid": ref.metadata.uid if ref is not None and ref.metadata else None,
            "valid_for_ms": None,
            "observed_at": observed,
        }


def handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            path = self.path.split("?")[0]
            if path == "/leader":
                code, body = 200, state.view()
            elif path == "/healthz":
                code, body = 200, {"status": "ok"}
            else:
                code, body = 404, {"error": "not found", "status": 404}
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--lease", required=True)
    p.add_argument("--identity", required=True)
    p.add_argument("--lease-duration", type=int, required=True)
    p.add_argument("--renew-deadline", type=float, required=True)
    p.add_argument("--retry-period", type=float, required=True)
    p.add_argument("--http-addr", default="127.0.0.1:0")
    args = p.parse_args()

    config.load_kube_config(config_file=args.kubeconfig)
    state = State(args)
    host, port = args.http_addr.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), handler(state))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("INFO http api listening addr=%s:%d" % server.server_address[:2], file=sys.stderr, flush=True)

    def started():
        with state.mu:
            state.leading = True

    def stopped():
        with state.mu:
            state.leading = False

    lock = LeaseLock(args.lease, args.namespace, args.identity)
    state.lock = lock
    while True:
        cfg = electionconfig.Config(lock, args.lease_duration, args.renew_deadline,
                                    args.retry_period, started, stopped)
        election = leaderelection.LeaderElection(cfg)
        with state.mu:
            state.election = election
        election.run()


if __name__ == "__main__":
    main()
