#!/usr/bin/env python3
"""Refreshes src/normalize/data/countries.tsv: every ISO 3166-1 country with its codes, its
English names and its Chinese names (simplified and traditional), from the iso-codes data that
PyPI's `pycountry` ships (LGPL-2.1; data only, the licence is noted in the output's header).

    python3 scripts/data/update-countries.py            # downloads pycountry==24.6.1 first

Columns: alpha-2, alpha-3, numeric, then the names a lead's country field may hold, separated by
`|` (English name, common and official names, zh_CN, zh_TW and zh_HK translations).
"""
import gettext
import json
import os
import subprocess
import sys
import tempfile
import zipfile

VERSION = "24.6.1"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "src/normalize/data/countries.tsv")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", f"pycountry=={VERSION}", "--no-deps",
             "-q", "-d", tmp],
            check=True,
        )
        wheel = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl"))
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
        base = os.path.join(tmp, "pycountry")
        with open(os.path.join(base, "databases/iso3166-1.json"), encoding="utf-8") as f:
            countries = json.load(f)["3166-1"]
        translations = []
        for locale in ("zh_CN", "zh_TW", "zh_HK"):
            mo = os.path.join(base, "locales", locale, "LC_MESSAGES", "iso3166-1.mo")
            with open(mo, "rb") as f:
                translations.append(gettext.GNUTranslations(f))
    rows = []
    for c in sorted(countries, key=lambda c: c["alpha_2"]):
        english = [c["name"]] + [c[k] for k in ("common_name", "official_name") if k in c]
        names = list(english)
        for t in translations:
            for n in english:
                local = t.gettext(n)
                if local != n:
                    names.append(local)
        seen = []
        for n in names:
            if n not in seen and "|" not in n and "\t" not in n:
                seen.append(n)
        rows.append("\t".join([c["alpha_2"], c["alpha_3"], c["numeric"], "|".join(seen)]))
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(f"# ISO 3166-1 countries, from iso-codes as shipped in pycountry {VERSION} (LGPL-2.1).\n")
        f.write("# Written by scripts/data/update-countries.py; do not edit by hand.\n")
        f.write("# alpha-2\talpha-3\tnumeric\tnames (|-separated)\n")
        f.write("\n".join(rows) + "\n")
    print(f"wrote {OUT} ({len(rows)} countries)")


if __name__ == "__main__":
    main()
