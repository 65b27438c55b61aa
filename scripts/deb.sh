#!/usr/bin/env bash
# Builds the Debian package: target/debian/wspipe_VERSION-1_ARCH.deb.
#
#   scripts/deb.sh            # release build, assets, cargo deb
#
# The man page and the completions come from the binary itself
# (`wspipe --generate ...`, from the clap definitions), the units from
# deploy/systemd with the packaged binary's path. Needs cargo-deb
# (`cargo install cargo-deb --locked`; .ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bin wspipe
bin=target/release/wspipe
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/systemd"

"$bin" --generate man | gzip -9n > "$assets/wspipe.1.gz"
"$bin" --generate complete-bash > "$assets/wspipe.bash"
"$bin" --generate complete-zsh > "$assets/_wspipe"
"$bin" --generate complete-fish > "$assets/wspipe.fish"
# The units name /usr/local/bin/wspipe for a hand install; the package's
# binary is /usr/bin/wspipe.
for unit in wspipe.service wspipe.socket; do
  sed 's|/usr/local/bin/wspipe|/usr/bin/wspipe|g' "deploy/systemd/$unit" > "$assets/systemd/$unit"
done

cargo deb --no-build --output target/debian/
ls -l target/debian/*.deb
