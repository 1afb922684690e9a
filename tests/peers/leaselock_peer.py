"""A peer elector written by others on the same Lease: the Python `kubernetes` client's
leaderelection with a LeaseLock. Prints `started leading` / `stopped leading` lines (flushed)
so that the real-apiserver test can check mutual exclusion with leaderd candidates.

usage: leaselock_peer.py KUBECONFIG NAMESPACE LEASE IDENTITY LEASE_S RENEW_S RETRY_S
"""
import logging
import sys

from kubernetes import client, config
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock


def main():
    kubeconfig, namespace, lease, identity = sys.argv[1:5]
    # Whole seconds: the LeaseLock writes int(str(lease_duration)), which fails on "3.0".
    lease_s, renew_s, retry_s = (int(x) for x in sys.argv[5:8])
    logging.basicConfig(level=logging.INFO if "-v" in sys.argv else logging.WARNING)
    config.load_kube_config(config_file=kubeconfig)
    client.Configuration.get_default_copy()

    def started():
        print("started leading", flush=True)

    def stopped():
        print("stopped leading", flush=True)

    lock = LeaseLock(lease, namespace, identity)
    print("campaigning", flush=True)
    while True:
        cfg = electionconfig.Config(lock, lease_s, renew_s, retry_s, started, stopped)
        leaderelection.LeaderElection(cfg).run()


if __name__ == "__main__":
    main()
