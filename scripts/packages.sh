#!/usr/bin/env bash
# Builds vipkeeper's packages with nfpm (pinned in go.mod's tool block):
# vipkeeper-agent and vipkeeper-hostsync, .deb and .rpm, for each
# architecture, into $DIST, and prints their sizes.
#
#   scripts/packages.sh                 build (what `make packages` runs)
#   scripts/packages.sh version GITVER  print the package version of a
#                                       `git describe` version
#
# Environment: GO (go), VERSION (git describe), LDFLAGS (-s -w -X
# main.version=$VERSION), DIST (dist), ARCHES ("amd64 arm64"),
# FORMATS ("deb rpm"). Binaries are static (CGO_ENABLED=0).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each package must stay under this size.
max_bytes=$((15 * 1024 * 1024))

# pkg_version maps a `git describe --tags --always --dirty` version to one
# that dpkg and rpm order correctly:
#   v1.2.3                 -> 1.2.3
#   v1.2.3-4-gabc1234      -> 1.2.3+4.gabc1234     (after 1.2.3)
#   v1.3.0-rc.1            -> 1.3.0~rc.1           (before 1.3.0)
#   abc1234 (no tag)       -> 0.0.0+git.abc1234
#   ...-dirty              -> ....dirty / +dirty
#   anything else          -> 0.0.0+<it, with [^A-Za-z0-9.+~] made .>
pkg_version() {
	local v=${1#v} post="" dirty=""
	if [[ $v == *-dirty ]]; then
		dirty=1
		v=${v%-dirty}
	fi
	if [[ $v =~ ^(.+)-([0-9]+)-g([0-9a-f]+)$ ]]; then
		v=${BASH_REMATCH[1]}
		post="+${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}"
	elif [[ $v =~ ^[0-9a-f]{7,40}$ ]]; then
		post="+git.$v"
		v=0.0.0
	fi
	if [[ $v =~ ^([0-9]+(\.[0-9]+)*)-(.+)$ ]]; then
		v="${BASH_REMATCH[1]}~${BASH_REMATCH[3]}"
	fi
	v=${v//[^A-Za-z0-9.+~]/.}
	if [[ ! $v =~ ^[0-9] ]]; then
		v="0.0.0+$v"
	fi
	if [[ -n $dirty ]]; then
		if [[ -n $post || $v == *+* ]]; then
			post+=".dirty"
		else
			post="+dirty"
		fi
	fi
	printf '%s%s\n' "$v" "$post"
}

if [[ ${1:-} == version ]]; then
	[[ $# -eq 2 ]] || { echo "usage: $0 version GITVERSION" >&2; exit 2; }
	pkg_version "$2"
	exit 0
fi
[[ $# -eq 0 ]] || { echo "usage: $0 [version GITVERSION]" >&2; exit 2; }

GO=${GO:-go}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
LDFLAGS=${LDFLAGS:-"-s -w -X main.version=$VERSION"}
DIST=${DIST:-dist}
ARCHES=${ARCHES:-amd64 arm64}
FORMATS=${FORMATS:-deb rpm}
PKG_VERSION=$(pkg_version "$VERSION")
export PKG_VERSION

mkdir -p "$DIST"
DIST=$(cd "$DIST" && pwd)
rm -f "$DIST"/vipkeeper-agent[-_]*.{deb,rpm} "$DIST"/vipkeeper-hostsync[-_]*.{deb,rpm}

nfpm="$DIST/.build/nfpm"
"$GO" build -o "$nfpm" github.com/goreleaser/nfpm/v2/cmd/nfpm

echo "packages: version $VERSION, package version $PKG_VERSION"
for arch in $ARCHES; do
	BIN_DIR="$DIST/.build/$arch"
	export ARCH=$arch BIN_DIR
	mkdir -p "$BIN_DIR"
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build -trimpath -ldflags "$LDFLAGS" -o "$BIN_DIR/" \
		./cmd/vipkeeper-agent ./cmd/vipkeeper-hostsync ./cmd/vipctl
	for pkg in vipkeeper-agent vipkeeper-hostsync; do
		for format in $FORMATS; do
			"$nfpm" package --config "packaging/nfpm/$pkg.yaml" --packager "$format" --target "$DIST/" >/dev/null
		done
	done
done
rm -rf "$DIST/.build"

status=0
for f in "$DIST"/vipkeeper-agent[-_]*.{deb,rpm} "$DIST"/vipkeeper-hostsync[-_]*.{deb,rpm}; do
	[[ -e $f ]] || continue
	size=$(stat -c %s "$f")
	verdict=ok
	if ((size >= max_bytes)); then
		verdict="TOO BIG (limit 15 MB)"
		status=1
	fi
	awk -v f="${f##*/}" -v s="$size" -v v="$verdict" 'BEGIN { printf "  %-60s %6.2f MB  %s\n", f, s / 1048576, v }'
done
exit $status
