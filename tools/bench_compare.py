#!/usr/bin/env python3
"""Side by side: two benchmark outputs (JSON lines from `tweedie bench --model
... --json` and `tools/bench_torch.py ... --json`), matched by row name, with
the ratio per row (second / first: above 1, the first is faster).

    python3 tools/bench_compare.py tweedie.jsonl torch.jsonl
"""

import json
import sys


def load(path):
    rows = {}
    with open(path) as f:
        for line in f:
            if line.strip().startswith("{"):
                r = json.loads(line)
                rows[r["name"]] = r
    return rows


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = load(sys.argv[1]), load(sys.argv[2])
    if not a or not b:
        sys.exit("bench_compare: no JSON records in one of the files")
    first = lambda rows: next(iter(rows.values()))
    ea, eb = first(a), first(b)
    print(f"A: {ea['engine']} on {ea['device']} ({ea['precision']}, {ea['image_size']}px, batch {ea['batch']})")
    print(f"B: {eb['engine']} on {eb['device']} ({eb['precision']}, {eb['image_size']}px, batch {eb['batch']})")
    print(f"{'row':<44} {'A ms':>11} {'B ms':>11} {'B/A':>7}  {'A rate':>14}")
    for name, ra in a.items():
        rb = b.get(name)
        ma = ra.get("median_ms")
        mb = rb.get("median_ms") if rb else None
        ratio = f"{mb / ma:7.2f}" if ma and mb else "      -"
        rate = f"{ra['tflops']:.3f} TFLOP/s" if ra.get("tflops") else (f"{ra['gbps']:.1f} GB/s" if ra.get("gbps") else "-")
        fa = f"{ma:11.3f}" if ma else f"{'-':>11}"
        fb = f"{mb:11.3f}" if mb else f"{'-':>11}"
        print(f"{name:<44} {fa} {fb} {ratio}  {rate:>14}")
    for name in b:
        if name not in a:
            print(f"{name:<44} {'-':>11} {b[name].get('median_ms') or 0:11.3f}       -")


if __name__ == "__main__":
    main()
