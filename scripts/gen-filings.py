#!/usr/bin/env python3
"""Generate N realistic filings as JSON Lines for `icpgate registry import`.

    scripts/gen-filings.py N > filings.jsonl

Deterministic for a given N. Every status is present (most filings approved, as in
a real registry); about one in eight filings has two or three domains; one in
twenty is an IDN domain (Unicode labels under .中国 / .公司 / .cn, normalised by the
import); one in thirty accesses an existing filing (with its ICP number). ICP
numbers are valid: a province abbreviation, ICP备, an 8-digit entity number, 号-N.
Entities file several websites each, so certificate numbers repeat.
"""
import json
import sys

PROVINCES = "京津冀晋蒙辽吉黑沪苏浙皖闽赣鲁豫鄂湘粤桂琼渝川贵云藏陕甘青宁新"
SUFFIXES = ["cn", "com.cn", "com", "net", "org.cn", "net.cn", "top"]
IDN_SUFFIXES = ["中国", "公司", "cn"]
IDN_WORDS = "示例测试旺铺商城官网科技贸易网络文化服饰食品电器家居"
# Statuses in proportion: approved most, every other status present.
STATUSES = (["approved"] * 14 + ["initial_review", "authority_review", "rejected",
                                  "abandoned", "cancelled", "disconnected"])


def filing(i):
    status = STATUSES[i % len(STATUSES)]
    entity_no = i // 3  # an entity files about three websites
    province = PROVINCES[entity_no % len(PROVINCES)]
    if i % 20 == 7:
        a = IDN_WORDS[i % len(IDN_WORDS)]
        b = IDN_WORDS[(i // len(IDN_WORDS)) % len(IDN_WORDS)]
        domains = ["%s%s%d.%s" % (a, b, i, IDN_SUFFIXES[i % len(IDN_SUFFIXES)])]
    else:
        base = "shop%07d" % i
        domains = ["%s.%s" % (base, SUFFIXES[i % len(SUFFIXES)])]
        if i % 8 == 3:
            extra = 1 + i % 2
            domains += ["%s.%s" % (base, SUFFIXES[(i + k + 1) % len(SUFFIXES)]) for k in range(extra)]
    kind = "access_existing" if i % 30 == 11 else "new"
    record = {
        "kind": kind,
        "product": "corporate_site" if i % 3 == 0 else "storefront",
        "status": status,
        "domains": domains,
        "entity": {
            "name": "%s示例科技有限公司%d" % (province, entity_no),
            "type": "enterprise",
            "certificate_number": "913%05dMA%07dX" % (entity_no % 100000, entity_no % 10000000),
            "province": province,
        },
        "website": {"name": "示例旺铺%d" % i,
                    "owner": {"name": "李四", "phone": "139%08d" % (i % 10 ** 8),
                              "email": "web%d@example.cn" % i}},
    }
    if kind == "access_existing" or status in ("approved", "cancelled", "disconnected"):
        record["icp_number"] = "%sICP备%08d号-%d" % (province, 10000000 + entity_no % 90000000, 1 + i % 3)
    return record


def main():
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: gen-filings.py N > filings.jsonl")
    out = sys.stdout
    for i in range(int(sys.argv[1])):
        out.write(json.dumps(filing(i), ensure_ascii=False))
        out.write("\n")


if __name__ == "__main__":
    main()
