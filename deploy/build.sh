#!/bin/sh
# Builds the release binary: static (no cgo), reproducible paths, version stamped. The Dockerfile
# runs it, and TestDeployBuild starts what it builds.
# Usage: deploy/build.sh OUT_DIR [VERSION]
set -eu
out=${1:?usage: deploy/build.sh OUT_DIR [VERSION]}
version=${2:-dev}
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${version}" -o "${out}/imbridge" ./cmd/imbridge
