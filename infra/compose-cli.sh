#!/usr/bin/env bash
# Builds the Docker Compose v2 CLI plugin from the Go module proxy when `docker compose` is missing,
# so the compose test can run `docker compose config` (it needs no Docker engine).
# Downloads and build cache live under ~/.cache/driftline; about 2 minutes from nothing on 2 cores.
set -euo pipefail
VERSION=v2.40.3
PLUGIN="$HOME/.docker/cli-plugins/docker-compose"
if docker compose version >/dev/null 2>&1; then exit 0; fi
command -v docker >/dev/null || { echo "compose-cli: no docker client on this machine" >&2; exit 1; }
command -v go >/dev/null || { echo "compose-cli: Go is needed to build the compose plugin" >&2; exit 1; }
cache="$HOME/.cache/driftline/go"
export GOMODCACHE="$cache/mod" GOCACHE="$cache/build" GOFLAGS=-mod=mod
# `go install pkg@version` refuses compose's go.mod (it has exclude directives): build in a copy.
dir=$(go mod download -json "github.com/docker/compose/v2@$VERSION" | python3 -c "import json,sys; print(json.load(sys.stdin)['Dir'])")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$dir/." "$work" && chmod -R u+w "$work"
mkdir -p "$(dirname "$PLUGIN")"
(cd "$work" && go build -trimpath -ldflags "-X github.com/docker/compose/v2/internal.Version=$VERSION" -o "$PLUGIN.tmp" ./cmd)
mv "$PLUGIN.tmp" "$PLUGIN"
docker compose version
