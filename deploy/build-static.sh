#!/usr/bin/env bash
# Builds the fully static release binary that the container image ships.
# deploy/Dockerfile runs this very script, so the image and CI build the
# binary with the same target, flags and checks.
#
# Target: the host's x86_64-unknown-linux-gnu toolchain with glibc linked
# statically (-C target-feature=+crt-static). It needs no extra Rust target
# to be downloaded, keeps glibc's allocator (faster than musl's under many
# threads), and the C code it links (bundled SQLite, ring, zstd) builds with
# the system gcc. The result has no dynamic loader and no shared libraries,
# so it runs on a distroless "static" or scratch base.
#
# Usage: bash deploy/build-static.sh [OUT]   (OUT: where to copy the binary)
# CARGO_TARGET_DIR is honoured. Prints the binary's path and size.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
BIN=llm-audit-proxy

host="$(rustc -vV | sed -n 's/^host: //p')"
if [ "$host" != "$TARGET" ]; then
    echo "build-static.sh: needs an $TARGET toolchain, found host $host" >&2
    exit 1
fi

# `file` verifies the result below; install it when missing (Debian).
if ! command -v file >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq file >/dev/null
fi

# --target is given explicitly so RUSTFLAGS reach only the binary, never the
# build scripts and proc-macros (which must stay dynamic to be loaded).
# Symbols are stripped: the image carries only what runs.
export RUSTFLAGS="-C target-feature=+crt-static"
export CARGO_PROFILE_RELEASE_STRIP=symbols
cargo build --release --locked --target "$TARGET" --bin "$BIN"

out_dir="${CARGO_TARGET_DIR:-target}/$TARGET/release"
bin="$out_dir/$BIN"

# Refuse anything that would need a loader or a shared library at run time.
desc="$(file -b "$bin")"
case "$desc" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *)
        echo "build-static.sh: $bin is not static: $desc" >&2
        exit 1
        ;;
esac
if readelf -d "$bin" 2>/dev/null | grep -q NEEDED; then
    echo "build-static.sh: $bin still needs shared libraries:" >&2
    readelf -d "$bin" | grep NEEDED >&2
    exit 1
fi
"$bin" --version

if [ $# -ge 1 ]; then
    install -D -m 0755 "$bin" "$1"
    bin="$1"
fi
echo "static binary: $bin ($(stat -c %s "$bin") bytes)"
