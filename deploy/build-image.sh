#!/usr/bin/env bash
# Builds a statically linked `spool` (glibc, crt-static) and the image around it
# (FROM scratch: nothing is pulled). IMAGE names the image (default spool:latest).
set -euo pipefail
cd "$(dirname "$0")/.."
image="${IMAGE:-spool:latest}"
target="x86_64-unknown-linux-gnu"
target_dir="${CARGO_TARGET_DIR:-${CARGO_BUILD_TARGET_DIR:-target}}"
cargo="${CARGO:-cargo}"

echo "== building a static spool binary (profile image, target $target)"
RUSTFLAGS="-C target-feature=+crt-static" \
    "$cargo" build --locked --profile image --target "$target" -p spool-cli
binary="$target_dir/$target/image/spool"
if ! ldd "$binary" 2>&1 | grep -qE "statically linked|not a dynamic executable"; then
    echo "error: $binary is dynamically linked" >&2
    exit 1
fi

context="$target_dir/image-context"
echo "== preparing the image context in $context"
rm -rf "$context"
mkdir -p "$context/data"
cp "$binary" "$context/spool"
cp deploy/Dockerfile "$context/Dockerfile"

echo "== building image $image"
docker build --tag "$image" "$context"
docker image ls "$image"
