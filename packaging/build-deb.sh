#!/usr/bin/env bash
# Builds packaging/build/switchboard_<version>-1_amd64.deb from the static binary that
# packaging/build-static.sh left in packaging/build/switchboard.
#
# The package is described once, in Cargo.toml [package.metadata.deb] (the format of
# `cargo deb`). This script reads that table and builds the same package with dpkg-deb, which
# every Debian system has: CI then needs no cargo-deb (building it from crates.io costs minutes
# on every fresh machine). With cargo-deb installed, `packaging/build-deb.sh --cargo-deb` uses
# it instead and writes packaging/build/cargo-deb/*.deb with the same contents (CI compares).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=packaging/build/switchboard
[ -x "$bin" ] || { echo "build-deb: $bin missing: run packaging/build-static.sh first" >&2; exit 1; }

# The packaged configuration: the repository's config.toml (every key at its default, commented)
# with the data directory that systemd's StateDirectory= provides.
sed 's|^data_dir = "\./data"$|data_dir = "/var/lib/switchboard"   # the package'"'"'s systemd StateDirectory|' \
  config.toml > packaging/build/config.toml
grep -q '^data_dir = "/var/lib/switchboard"' packaging/build/config.toml ||
  { echo "build-deb: config.toml has no data_dir = \"./data\" line to rewrite" >&2; exit 1; }
"$bin" check-config packaging/build/config.toml >/dev/null

if [ "${1:-}" = "--cargo-deb" ]; then
  target_dir="${CARGO_TARGET_DIR:-target}"
  mkdir -p "$target_dir/x86_64-unknown-linux-gnu/release"
  cmp -s "$bin" "$target_dir/x86_64-unknown-linux-gnu/release/switchboard" ||
    cp "$bin" "$target_dir/x86_64-unknown-linux-gnu/release/switchboard"
  mkdir -p packaging/build/cargo-deb
  cargo deb --no-build --no-strip --target x86_64-unknown-linux-gnu --output packaging/build/cargo-deb/
  exit 0
fi

python3 - "$bin" <<'PY'
import os, shutil, subprocess, sys, textwrap, tomllib

binary = sys.argv[1]
with open("Cargo.toml", "rb") as f:
    cargo = tomllib.load(f)
pkg = cargo["package"]
deb = pkg["metadata"]["deb"]
name = pkg["name"]
version = f'{pkg["version"]}-{deb.get("revision", "1")}'
out_dir = "packaging/build"
stage = os.path.join(out_dir, "deb-root")
shutil.rmtree(stage, ignore_errors=True)
os.makedirs(os.path.join(stage, "DEBIAN"))

for src, dest, mode in deb["assets"]:
    if src.startswith("target/release/"):
        src = binary  # the static build
    dest = dest.lstrip("/")
    if dest.endswith("/"):
        dest += os.path.basename(src)
    path = os.path.join(stage, dest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copyfile(src, path)
    os.chmod(path, int(mode, 8))

# The copyright file cargo-deb writes from the same fields.
doc = os.path.join(stage, "usr/share/doc", name, "copyright")
os.makedirs(os.path.dirname(doc), exist_ok=True)
with open(doc, "w") as f:
    f.write(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        f"Upstream-Name: {name}\n"
        f"Copyright: {deb['copyright']}\n"
        f"License: {pkg['license']}\n"
    )
os.chmod(doc, 0o644)

size_kib = 0
md5 = []
for root, dirs, files in os.walk(stage):
    dirs.sort()
    if os.path.relpath(root, stage).startswith("DEBIAN"):
        continue
    for fname in sorted(files):
        p = os.path.join(root, fname)
        size_kib += (os.path.getsize(p) + 1023) // 1024
        digest = subprocess.run(["md5sum", p], check=True, capture_output=True, text=True).stdout.split()[0]
        md5.append(f"{digest}  {os.path.relpath(p, stage)}")

summary = pkg["description"]
extended = "\n".join(
    " " + line for line in textwrap.wrap(" ".join(deb["extended-description"].split()), 78)
)
fields = [
    ("Package", name),
    ("Version", version),
    ("Architecture", "amd64"),
    ("Maintainer", deb["maintainer"]),
    ("Installed-Size", str(size_kib)),
    ("Depends", deb.get("depends", "")),
    ("Section", deb.get("section", "")),
    ("Priority", deb.get("priority", "optional")),
    ("Description", summary + "\n" + extended),
]
with open(os.path.join(stage, "DEBIAN", "control"), "w") as f:
    for k, v in fields:
        if v:
            f.write(f"{k}: {v}\n")
with open(os.path.join(stage, "DEBIAN", "conffiles"), "w") as f:
    for c in deb.get("conf-files", []):
        f.write(("/" + c.lstrip("/")) + "\n")
with open(os.path.join(stage, "DEBIAN", "md5sums"), "w") as f:
    f.write("\n".join(md5) + "\n")

deb_path = os.path.join(out_dir, f"{name}_{version}_amd64.deb")
subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", stage, deb_path], check=True,
               stdout=subprocess.DEVNULL)
print(deb_path)
PY
