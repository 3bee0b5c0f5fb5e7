#!/usr/bin/env bash
# Builds the Debian package `evs`: evsd, dvs-controller and dvsctl, their systemd units, man pages,
# shell completions, the default config and the examples.
#
#   scripts/build-deb.sh [--profile release|dev] [--prebuilt] [--out DIR]
#
# --profile dev packages the test build (target/debug; what tests/tests/package.rs installs) without
# a release build. --prebuilt packages the binaries already in the profile's directory without
# running cargo (`cargo test --workspace` builds all four with the test build's features, which
# `cargo build -p ...` would not reuse: a second build of 15 crates). Prints the path of the .deb on
# its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=release
OUT=target/deb
PREBUILT=0
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) PROFILE=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --prebuilt) PREBUILT=1; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "build-deb.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$PROFILE" in
    release) BIN=target/release ;;
    dev) BIN=target/debug ;;
    *) echo "build-deb.sh: --profile release|dev, not $PROFILE" >&2; exit 2 ;;
esac
for tool in dpkg-deb gzip strip; do
    command -v $tool >/dev/null || { echo "build-deb.sh: $tool is missing (apt-get install dpkg binutils)" >&2; exit 1; }
done

if [ "$PREBUILT" = 1 ]; then
    for b in evsd dvs-controller dvsctl evs-docgen; do
        [ -x "$BIN/$b" ] || { echo "build-deb.sh: --prebuilt, but $BIN/$b is missing (cargo test --workspace, or leave out --prebuilt)" >&2; exit 1; }
    done
else
    cargo build --profile "$PROFILE" -p evsd -p dvs-controller -p dvsctl -p evs-docgen >&2
fi

NAME=evs
ARCH=$(dpkg --print-architecture)
BASE=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
VERSION="$BASE+git$(git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || date +%Y%m%d).$REV"
[ "$PROFILE" = release ] || VERSION="$VERSION.$PROFILE"

ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
install -d "$ROOT/DEBIAN" "$ROOT/usr/bin" "$ROOT/lib/systemd/system" "$ROOT/etc/evs" \
    "$ROOT/etc/default" "$ROOT/usr/share/man/man1" "$ROOT/usr/share/doc/$NAME/examples" \
    "$ROOT/usr/share/bash-completion/completions" "$ROOT/usr/share/zsh/vendor-completions" \
    "$ROOT/usr/share/fish/vendor_completions.d"
for b in evsd dvs-controller dvsctl; do
    install -m 0755 "$BIN/$b" "$ROOT/usr/bin/$b"
    # The release profile keeps line tables for profiling; the package does not need them.
    strip --strip-debug "$ROOT/usr/bin/$b"
done
install -m 0644 packaging/systemd/evsd.service packaging/systemd/dvs-controller.service \
    "$ROOT/lib/systemd/system/"
install -m 0644 packaging/etc/evs/evsd.toml "$ROOT/etc/evs/evsd.toml"
install -m 0644 packaging/etc/default/dvs-controller "$ROOT/etc/default/dvs-controller"

GEN="$ROOT/gen"
"$BIN/evs-docgen" "$GEN"
for m in "$GEN"/man/man1/*.1; do
    gzip -9n < "$m" > "$ROOT/usr/share/man/man1/$(basename "$m").gz"
done
for b in evsd dvs-controller dvsctl; do
    install -m 0644 "$GEN/completions/bash/$b" "$ROOT/usr/share/bash-completion/completions/$b"
    install -m 0644 "$GEN/completions/zsh/_$b" "$ROOT/usr/share/zsh/vendor-completions/_$b"
    install -m 0644 "$GEN/completions/fish/$b.fish" "$ROOT/usr/share/fish/vendor_completions.d/$b.fish"
done
rm -rf "$GEN"

DOC="$ROOT/usr/share/doc/$NAME"
install -m 0644 examples/evsd.toml "$DOC/examples/evsd.toml"
install -m 0644 docs/grafana/evsd.json "$DOC/examples/grafana-evsd.json"
install -m 0644 packaging/README.Debian "$DOC/README.Debian"
cat > "$DOC/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: evs
Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPY

# Depends: the packages that hold the shared libraries the binaries load (DPDK's librte_*, libc, ...).
DEPENDS=$(for b in evsd dvs-controller dvsctl; do ldd "$ROOT/usr/bin/$b"; done \
    | awk '/=> \//{print $3}' | sort -u \
    | while read -r lib; do dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib" 2>/dev/null || true; done \
    | cut -d: -f1 | sort -u | paste -sd, | sed 's/,/, /g')
[ -n "$DEPENDS" ] || { echo "build-deb.sh: found no package for the binaries' libraries" >&2; exit 1; }

cat > "$ROOT/DEBIAN/control" <<CTRL
Package: $NAME
Version: $VERSION
Architecture: $ARCH
Maintainer: EVS developers <evs@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
Depends: $DEPENDS
Recommends: dpdk
Section: net
Priority: optional
Homepage: https://github.com/evs-switch/evs
Description: EVS userspace virtual switch (DPDK) and its distributed controller
 evsd forwards between vhost-user guests and DPDK uplinks with port groups, security groups,
 conntrack, meters and storm control; dvs-controller and dvsctl define one distributed
 virtual switch across many hosts. Includes systemd units, man pages and completions.
CTRL
printf '/etc/evs/evsd.toml\n/etc/default/dvs-controller\n' > "$ROOT/DEBIAN/conffiles"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$ROOT/DEBIAN/"

mkdir -p "$OUT"
DEB="$OUT/${NAME}_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$DEB" >&2
echo "$DEB"
