"""Ray Serve's high-throughput mode as this endpoint runs it: HAProxy on the endpoint's port,
forwarding straight to the replicas' own HTTP servers, and where HAProxy keeps its files."""

from __future__ import annotations

import os

#: Ray Serve's high-throughput mode, as this endpoint is meant to run (README, "Serving"): HAProxy
#: on the endpoint's port forwarding straight to the replicas' own HTTP servers. Serve's controller
#: reads these, and the proxies and replicas it starts inherit them, so they cannot be set from
#: here: serve_config.yaml gives them to the controller (``controller_options``, for `serve run`),
#: cluster.yaml and k8s/rayservice.yaml to every node (a test keeps all three equal to this).
#: Every route is a pure function of its request, so HAProxy may safely replay a request that a
#: dying replica left unanswered ("empty-response") on another replica.
HIGH_THROUGHPUT_ENVIRONMENT = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response",
}


def haproxy_file_locations(folder: str) -> dict[str, str]:
    """The variables that move HAProxy's config, sockets and server state from /tmp/haproxy-serve
    into ``folder`` (each node's under a folder named by its node id, 56 characters). HAProxy refuses
    socket paths longer than about 100 characters: keep ``folder`` under 30."""
    return {"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": os.path.join(folder, "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": os.path.join(folder, "admin.sock"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": os.path.join(folder, "metrics.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": folder,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": os.path.join(folder, "server-state")}
