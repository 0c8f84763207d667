#!/usr/bin/env python3
"""Writes N synthetic leads as JSON lines, the input of the normalization benchmark and its Python
baseline. The mix follows what Chinese lead sources send: mostly mobiles in assorted formats, some
landlines with extensions, full-width digits, masked numbers, international numbers, and emails
with mixed case, typos and junk.

    python3 scripts/bench/gen_leads.py 1000000 > /tmp/leads-1m.jsonl

Deterministic (fixed seed); needs only the standard library.
"""
import json
import random
import sys

rng = random.Random(7)
FULL = str.maketrans("0123456789+", "０１２３４５６７８９＋")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英"
DOMAINS = ["qq.com", "163.com", "126.com", "gmail.com", "outlook.com", "sina.com", "foxmail.com", "example.cn", "company.com.cn"]


def d(k):
    return "".join(rng.choice("0123456789") for _ in range(k))


def phone():
    r = rng.random()
    m = "1" + rng.choice("3456789") + d(9)
    if r < 0.35:
        return m
    if r < 0.50:
        return f"{m[:3]} {m[3:7]} {m[7:]}"
    if r < 0.60:
        return f"+86 {m}"
    if r < 0.65:
        return f"{m[:3]}-{m[3:7]}-{m[7:]}"
    if r < 0.70:
        return m.translate(FULL)
    if r < 0.78:
        return f"0{rng.choice(['10', '21', '755', '571'])}-{rng.choice('2345678')}{d(7)}" + (f" 转{d(3)}" if rng.random() < 0.3 else "")
    if r < 0.82:
        return m[:3] + "****" + m[7:]
    if r < 0.86:
        return rng.choice(["+1 650 253 " + d(4), "+44 20 7946 " + d(4), "+852 5123 " + d(4)])
    if r < 0.90:
        return "400-" + d(3) + "-" + d(4)
    return d(rng.choice([5, 8, 12]))  # junk


def email(name_py):
    r = rng.random()
    if r < 0.15:
        return None
    local = name_py + str(rng.randint(1, 9999))
    dom = rng.choice(DOMAINS)
    if r < 0.25:
        dom = dom.replace("qq", "qq").replace(".com", ".con")  # typo
    if r < 0.30:
        return local + "#" + dom  # junk
    if r < 0.45:
        return (local + "@" + dom).upper()
    return f"{local}@{dom}"


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    out = sys.stdout
    for i in range(n):
        name = rng.choice(SURNAMES) + rng.choice(GIVEN) + (rng.choice(GIVEN) if rng.random() < 0.5 else "")
        lead = {"name": name if rng.random() < 0.9 else " ".join(name), "phone": phone()}
        e = email("user" + str(i % 100000))
        if e:
            lead["email"] = e
        if rng.random() < 0.3:
            lead["company"] = rng.choice(["某某科技有限公司", "Acme Ltd.", "华夏实业（集团）股份有限公司"])
        out.write(json.dumps(lead, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
