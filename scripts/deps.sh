#!/usr/bin/env bash
# Installs what `make test` needs where it can (apt-get as root on Debian) and otherwise stops
# with a message naming what is missing. Under CI (SV_STRICT=1) nothing may be missing.
set -euo pipefail

need=()
command -v brotli >/dev/null || need+=(brotli)
command -v chromium >/dev/null || need+=(chromium)
command -v redis-server >/dev/null || need+=(redis-server)
command -v gcc >/dev/null || need+=(gcc) # go test -race needs cgo
command -v node >/dev/null || { echo "deps: node (>= 20) is missing; install Node.js" >&2; exit 1; }

# Test-only npm packages, pinned by their package-lock.json: the independent RFC 9421
# implementation of internal/protocol's interop test, and TypeScript for js/test/types.test.js.
npmci() { # dir, a file it installs, what needs it
	[ -e "$1/node_modules/$2" ] && return 0
	if command -v npm >/dev/null; then
		npm ci --prefix "$1" --no-audit --no-fund --loglevel=error >/dev/null || echo "deps: npm ci in $1 failed; $3 will say so" >&2
	else
		echo "deps: npm is missing; $3 cannot run" >&2
	fi
}
npmci internal/protocol/testdata/interop http-message-signatures "internal/protocol's interop test"
npmci js/test/types typescript/bin/tsc "js/test/types.test.js"

if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "deps: installing ${need[*]} with apt-get"
	if [ -z "${SV_APT_UPDATED:-}" ]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
	exit 0
fi
echo "deps: missing ${need[*]}: install them (Debian: sudo apt-get install -y ${need[*]})," >&2
echo "deps: or run as root on Debian so that make test installs them itself." >&2
exit 1
