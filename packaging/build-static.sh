#!/usr/bin/env bash
# Builds a fully static x86_64 switchboard binary and checks it: `file` and `ldd` say static,
# `--version` runs, and `serve` starts on a temporary config, reports READY=1 and exits 0 on
# SIGTERM. musl is used when its Rust target is installed; otherwise glibc with crt-static
# (no toolchain can be downloaded here). The result is copied to packaging/build/switchboard.
set -euo pipefail
cd "$(dirname "$0")/.."

if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  target=x86_64-unknown-linux-musl
else
  target=x86_64-unknown-linux-gnu
fi
# An explicit --target keeps crt-static away from build scripts and proc macros.
export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
echo "build-static: cargo build --release --target $target (crt-static)"
cargo build --release --locked --target "$target"

target_dir="${CARGO_TARGET_DIR:-target}"
bin="$target_dir/$target/release/switchboard"
mkdir -p packaging/build
cp "$bin" packaging/build/switchboard
bin=packaging/build/switchboard

desc="$(file -b "$bin")"
echo "build-static: file: $desc"
case "$desc" in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) echo "build-static: not a static executable" >&2; exit 1 ;;
esac
ldd_out="$(ldd "$bin" 2>&1 || true)"
echo "build-static: ldd: $ldd_out"
case "$ldd_out" in
  *"not a dynamic executable"* | *"statically linked"*) ;;
  *) echo "build-static: ldd lists shared libraries" >&2; exit 1 ;;
esac

"$bin" --version
python3 packaging/servecheck.py "$bin" --runs 1 --idle 1 >/dev/null
echo "build-static: $bin starts, reports READY=1 and stops with exit code 0 on SIGTERM"
echo "build-static: size $(stat -c %s "$bin") bytes"
