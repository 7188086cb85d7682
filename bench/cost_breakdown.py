#!/usr/bin/env python3
"""Where a row of bench/proxy_cost.py spends its instructions, per request.

Reads the dumps `proxy_cost.py --dumps DIR` keeps (ROW.n after N requests,
ROW.3n after 3N more) straight from callgrind's format, and gives each
function's cost per request as (cost in ROW.3n - cost in ROW.n) / 2N, the
same marginal cost the bench reports:

  self       instructions in the function itself (these add up to the row's
             figure), the largest first, or their difference from a second
             row (--vs) to see what one build or one kind of request adds;
  inclusive  (--functions REGEX,...) the function and everything it calls,
             for the functions named (a function inlined into its caller
             has no cost of its own to show).

Usage: bench/cost_breakdown.py DIR/ROW [--vs DIR/OTHER_ROW] [-n N] [--top K]
                               [--functions REGEX,REGEX,...]
  e.g. bench/cost_breakdown.py /tmp/d/PAR-echo-tracked-rpc-body_key \\
         --vs /tmp/d/before-echo-tracked-rpc-body_key \\
         --functions 'session_hint$,Watch::feed$,Sessions::place$'
N is the bench's -n (default 800; 400 for the --conns 1 runs given as
examples in proxy_cost.py). --rename OLD=NEW reads the --vs row's function
names with OLD replaced (a module renamed between the two builds:
--rename ::fast::=::direct:: against a build before the direct path's
folder was named so).
"""

import argparse
import collections
import re


def costs(path):
    """(self, inclusive) cost of each function in one callgrind dump."""
    names = {}
    own, incl = collections.Counter(), collections.Counter()
    fn, call = None, False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if call:
                # The cost line after calls= is the callee's inclusive cost.
                call = False
                parts = line.split()
                if fn and len(parts) >= 2:
                    incl[fn] += int(parts[1])
                continue
            if line.startswith(("fn=", "cfn=")):
                m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
                if m:
                    if m.group(2):
                        names[m.group(1)] = m.group(2)
                    if line.startswith("fn="):
                        fn = names.get(m.group(1), m.group(1))
                continue
            if line.startswith("calls="):
                call = True
                continue
            if fn and line[:1] in "0123456789+-*":
                parts = line.split()
                if len(parts) >= 2:
                    own[fn] += int(parts[1])
                    incl[fn] += int(parts[1])
    return own, incl


def per_request(prefix, n):
    (own_n, incl_n), (own_3n, incl_3n) = costs(prefix + ".n"), costs(prefix + ".3n")

    def marginal(a, b):
        return {k: (b[k] - a[k]) / (2 * n) for k in set(a) | set(b)}

    return marginal(own_n, own_3n), marginal(incl_n, incl_3n)


def renamed(cost, old, new):
    """`cost` with `old` read as `new` in its function names (summed where two meet)."""
    out = collections.Counter()
    for k, v in cost.items():
        out[k.replace(old, new)] += v
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("row", help="a row's dumps without .n/.3n (DIR/PAR-echo-invoke)")
    ap.add_argument("--vs", help="a second row: show the difference")
    ap.add_argument("-n", type=int, default=800, help="the bench's -n (default 800)")
    ap.add_argument("--top", type=int, default=30, help="functions listed (default 30)")
    ap.add_argument("--functions", help="comma-separated regexes: the inclusive cost of the functions matching")
    ap.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                    help="in the --vs row's function names, read OLD as NEW (a module renamed between "
                         "the builds, e.g. '::fast::=::direct::'); may be given more than once")
    args = ap.parse_args()
    own, incl = per_request(args.row, args.n)
    other_own, other_incl = per_request(args.vs, args.n) if args.vs else ({}, {})
    for pair in args.rename:
        old, new = pair.split("=", 1)
        other_own, other_incl = (renamed(other_own, old, new), renamed(other_incl, old, new))
    total = sum(own.values())
    if args.vs:
        other = sum(other_own.values())
        print(f"{args.row}: {total:.0f} instructions per request; {args.vs}: {other:.0f} ({total - other:+.0f})")
    else:
        print(f"{args.row}: {total:.0f} instructions per request")
    diff = {k: own.get(k, 0) - other_own.get(k, 0) for k in set(own) | set(other_own)}
    print(f"\nself cost per request{' (difference)' if args.vs else ''}:")
    for k, v in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:args.top]:
        print(f"  {v:+9.0f}  {k[:160]}")
    if args.functions:
        print("\ninclusive cost per request:")
        for pat in args.functions.split(","):
            hits = {k: v for k, v in incl.items() if re.search(pat, k)}
            for k, v in sorted(hits.items(), key=lambda kv: -kv[1])[:3]:
                line = f"  {v:9.0f}"
                if args.vs:
                    line += f"  ({v - other_incl.get(k, 0):+.0f})"
                print(f"{line}  {k[:160]}")


if __name__ == "__main__":
    main()
