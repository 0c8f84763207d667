#!/usr/bin/env python3
"""The Python baseline for the normalization benchmark: what a marketing-ops engineer would write
with the reference libraries (phonenumbers + email-validator, deliverability checks off).

    pip install phonenumbers==9.0.43 email-validator==2.4.0
    python3 scripts/bench/baseline.py /tmp/leads-1m.jsonl [LIMIT]
"""
import json
import sys
import time

import phonenumbers
from email_validator import EmailNotValidError, validate_email


def normalize(lead):
    out = {"issues": []}
    raw = lead.get("phone")
    if raw:
        try:
            n = phonenumbers.parse(raw, "CN")
            if phonenumbers.is_valid_number(n):
                out["phone"] = phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
                out["phone_type"] = phonenumbers.number_type(n)
            else:
                out["issues"].append("phone.invalid")
        except phonenumbers.NumberParseException:
            out["issues"].append("phone.invalid")
    raw = lead.get("email")
    if raw:
        try:
            out["email"] = validate_email(raw.strip(), check_deliverability=False).normalized
        except EmailNotValidError:
            out["issues"].append("email.invalid")
    out["name"] = " ".join((lead.get("name") or "").split())
    return out


def main():
    path = sys.argv[1]
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else None
    with open(path, encoding="utf-8") as f:
        leads = [json.loads(line) for i, line in zip(range(limit or 10**12), f)]
    start = time.perf_counter()
    valid = 0
    for lead in leads:
        valid += "phone" in normalize(lead) or 0
    elapsed = time.perf_counter() - start
    print(f"python baseline: {len(leads)} leads in {elapsed:.2f}s = {len(leads) / elapsed:,.0f} leads/s ({valid} valid phones)")


if __name__ == "__main__":
    main()
