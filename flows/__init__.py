"""Prefect flows: orchestration only; every task calls a `landmark` stage."""

import os

from landmark.platform.prefect_services import ANALYTICS_OFF

# No network at run time: without PREFECT_API_URL a flow starts Prefect's temporary server in this process, which
# would otherwise try to send telemetry, and the demo runs `dvc init` and GX itself (the Makefile and `make up` set
# the same; a user's own choice wins).
for _name, _value in {**ANALYTICS_OFF, "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false"}.items():
    os.environ.setdefault(_name, _value)
