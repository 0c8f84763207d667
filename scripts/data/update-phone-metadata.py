#!/usr/bin/env python3
"""Writes src/normalize/data/PhoneNumberMetadata.xml, libphonenumber's phone number metadata in
its own XML schema, from the metadata that PyPI's `phonenumbers` ships (a port of libphonenumber;
Apache-2.0). The `phonenumber` crate's own loader (`Database::parse`) reads the file, so leadgate
validates numbers by current metadata rather than the release the crate was built with.

    python3 -m venv /tmp/pm && /tmp/pm/bin/pip install phonenumbers==9.0.43
    /tmp/pm/bin/python scripts/data/update-phone-metadata.py

Then regenerate tests/fixtures/phones.jsonl with the same version (scripts/fixtures/gen_phones.py)
and bump VERSION here and REFERENCE there together.
"""
import os
import re
import sys
from xml.sax.saxutils import escape, quoteattr

import phonenumbers
from phonenumbers import PhoneMetadata

VERSION = "9.0.43"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "src/normalize/data/PhoneNumberMetadata.xml")

DESCRIPTORS = [
    ("generalDesc", "general_desc"), ("fixedLine", "fixed_line"), ("mobile", "mobile"),
    ("tollFree", "toll_free"), ("premiumRate", "premium_rate"), ("sharedCost", "shared_cost"),
    ("personalNumber", "personal_number"), ("voip", "voip"), ("pager", "pager"), ("uan", "uan"),
    ("voicemail", "voicemail"), ("noInternationalDialling", "no_international_dialling"),
]


def groups(rule):
    """Python's group references (`\\1`) as libphonenumber's XML writes them (`$1`)."""
    return None if rule is None else re.sub(r"\\(\d)", r"$\1", rule)


def attrs(pairs):
    return "".join(f" {k}={quoteattr(str(v))}" for k, v in pairs if v is not None)


def lengths(values):
    return ",".join(str(v) for v in sorted(set(values)) if v >= 0)


def descriptor(tag, desc, out):
    if desc is None or desc.national_number_pattern is None:
        return
    if tuple(desc.possible_length or ()) == (-1,):
        return
    out.append(f"      <{tag}>")
    national = lengths(desc.possible_length or ())
    local = lengths(desc.possible_length_local_only or ())
    # libphonenumber's XML gives no lengths for generalDesc (its build tool computes them from
    # the types), and the crate's parser depends on that: keep the XML's shape.
    if (national or local) and tag != "generalDesc":
        out.append(f"        <possibleLengths{attrs([('national', national or None), ('localOnly', local or None)])}/>")
    if desc.example_number:
        out.append(f"        <exampleNumber>{escape(desc.example_number)}</exampleNumber>")
    out.append(f"        <nationalNumberPattern>{escape(desc.national_number_pattern)}</nationalNumberPattern>")
    out.append(f"      </{tag}>")


def bool_attr(v):
    return "true" if v else None


def territory(m, out):
    out.append("    <territory" + attrs([
        ("id", m.id),
        ("countryCode", m.country_code),
        ("mainCountryForCode", bool_attr(m.main_country_for_code)),
        ("leadingDigits", m.leading_digits),
        ("internationalPrefix", m.international_prefix),
        ("preferredInternationalPrefix", m.preferred_international_prefix),
        ("nationalPrefix", m.national_prefix),
        ("nationalPrefixForParsing", m.national_prefix_for_parsing),
        ("nationalPrefixTransformRule", groups(m.national_prefix_transform_rule)),
        ("preferredExtnPrefix", m.preferred_extn_prefix),
        ("mobileNumberPortableRegion", bool_attr(m.mobile_number_portable_region)),
    ]) + ">")
    if m.number_format:
        out.append("      <availableFormats>")
        for f in m.number_format:
            out.append("        <numberFormat" + attrs([
                ("pattern", f.pattern),
                ("nationalPrefixFormattingRule", groups(f.national_prefix_formatting_rule)),
                ("nationalPrefixOptionalWhenFormatting", bool_attr(f.national_prefix_optional_when_formatting)),
                ("carrierCodeFormattingRule", groups(f.domestic_carrier_code_formatting_rule)),
            ]) + ">")
            for ld in f.leading_digits_pattern or ():
                out.append(f"          <leadingDigits>{escape(ld)}</leadingDigits>")
            out.append(f"          <format>{escape(groups(f.format))}</format>")
            out.append("        </numberFormat>")
        out.append("      </availableFormats>")
    for tag, attr in DESCRIPTORS:
        descriptor(tag, getattr(m, attr, None), out)
    out.append("    </territory>")


def main():
    if phonenumbers.__version__ != VERSION:
        sys.exit(f"phonenumbers {phonenumbers.__version__} is installed; this script writes {VERSION}")
    out = [
        f"<!-- libphonenumber's phone number metadata {VERSION}, as shipped in PyPI's phonenumbers",
        "     (Apache-2.0, (c) the libphonenumber authors). Written by",
        "     scripts/data/update-phone-metadata.py; do not edit by hand. -->",
        "<phoneNumberMetadata>",
        "  <territories>",
    ]
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        territory(PhoneMetadata.metadata_for_region(region), out)
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        territory(PhoneMetadata.metadata_for_nongeo_region(code), out)
    out += ["  </territories>", "</phoneNumberMetadata>", ""]
    with open(OUT, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
