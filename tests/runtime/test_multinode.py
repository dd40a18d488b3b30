"""The two-node cluster run of scripts/multinode_e2e.py: train losing a node, label, serve. It
trains the tiny encoder, from S3: the cluster's behaviour is what is checked, and MiniLM's weights
and optimizer state made each checkpoint a 270 MB upload."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def ray_node_processes() -> int:
    """raylet and gcs_server processes on this machine (the session's own Ray included)."""
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return sum(1 for line in listing.splitlines() if "/raylet/raylet " in line or "/gcs/gcs_server " in line)


def default_haproxy_folders() -> set[str]:
    """The per-node folders of HAProxy's files in Serve's default place (what a Serve run without
    its own file locations leaves behind)."""
    default = Path("/tmp/haproxy-serve")
    return {entry.name for entry in default.iterdir()} if default.is_dir() else set()


@pytest.mark.timeout(1500)  # the script's own limit: on a slow day it has taken over 600 s
def test_jobs_run_end_to_end_on_a_two_node_cluster_and_survive_losing_a_node(tiny_encoder_dir):
    before, haproxy_before = ray_node_processes(), default_haproxy_folders()
    script = [sys.executable, str(REPO / "scripts" / "multinode_e2e.py"), "--encoder", str(tiny_encoder_dir)]
    done = subprocess.run(script, cwd=REPO,
                          capture_output=True, text=True, timeout=1500)
    print(done.stdout[-3000:], done.stderr[-3000:])
    assert done.returncode == 0, done.stderr[-3000:]
    for step in ("train", "label", "serve"):
        assert f"ok {step}:" in done.stdout
    assert "tear down" in done.stdout
    assert ray_node_processes() == before, "the script left Ray node processes behind"
    assert default_haproxy_folders() == haproxy_before, "the script left HAProxy's files in /tmp/haproxy-serve"
