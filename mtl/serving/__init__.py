"""The online endpoint: its HTTP API (free of Ray) and the Ray Serve deployments that batch, route
and scale it (``serve run serve_config.yaml``)."""
