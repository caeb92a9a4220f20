#!/usr/bin/env sh
# The local S3 object store (SeaweedFS on 127.0.0.1): infra/local-s3.sh up | down | status
# A thin wrapper over `landmark infra ...` (run from the repository root so params.yaml applies).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
exec "${LANDMARK_VENV:-$root/.venv}/bin/landmark" infra "$@"
