#!/usr/bin/env bash
# Refreshes src/normalize/data/cn-geocoding.txt from the geocoding data that ships in the sources of
# the `phonenumber` crate (libphonenumber's assets/geocoding/zh/86.txt, Apache-2.0), keeping its
# licence header. Run after upgrading the crate.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$(cargo metadata --format-version 1 --locked | python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="phonenumber"))')
src="$(dirname "$version")/assets/geocoding/zh/86.txt"
out=src/normalize/data/cn-geocoding.txt
{ grep '^#' "$src"; echo "# Source: libphonenumber geocoding data, zh/86.txt, as shipped in the phonenumber crate's sources."; grep -v '^#' "$src" | grep -v '^$' | sed 's/^86//'; } > "$out"
echo "wrote $out ($(grep -vc '^#' "$out") prefixes)"
