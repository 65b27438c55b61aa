#!/usr/bin/env python3
"""Checks Autobahn TestSuite results against wspipe's expected failures.

Usage:
    autobahn_check.py [--expected FILE] [--markdown] INDEX_JSON...

Each INDEX_JSON is a reports/servers/index.json written by
`wstest -m fuzzingclient`; the cases of one agent may be spread over several.
Every case of every agent in them must pass: its `behavior` OK, NON-STRICT or
INFORMATIONAL and its `behaviorClose` OK or INFORMATIONAL. A case that does not pass is accepted only when the
expectations file lists it for that agent, with a reason, and (where the entry
says so) with the behavior and close code it is expected to end with.

The expectations file (autobahn/expected-failures.json) maps an agent name to
a list of entries:

    {"wspipe-text": [
        {"cases": ["1.2.1", "12.*"],        # exact ids, or * patterns
         "behavior": ["FAILED"],            # optional: allowed outcomes
         "remoteCloseCode": [1003],         # optional: allowed close codes
         "may_pass": true,                  # optional: a race decides
         "reason": "why this cannot pass"}  # required
    ]}

Listed cases that pass now are reported so the list stays honest, but do not
fail the run (entries with "may_pass" are only counted: whether they pass
depends on timing the reason explains). Exit status: 0 when every result is
as expected, 1 when some are not or results are missing, 2 when the
expectations file is unusable. The last line, "autobahn: N passed, M failed",
counts results as expected and not.
"""

import argparse
import json
import os
import re
import sys
from collections import OrderedDict

PASS_BEHAVIOR = ("OK", "NON-STRICT", "INFORMATIONAL")
PASS_CLOSE = ("OK", "INFORMATIONAL")
COLUMNS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
SECTION_NAMES = {
    "1": "framing",
    "2": "pings/pongs",
    "3": "reserved bits",
    "4": "opcodes",
    "5": "fragmentation",
    "6": "UTF-8",
    "7": "close handling",
    "9": "limits/performance",
    "10": "misc",
    "12": "permessage-deflate",
    "13": "permessage-deflate",
}


def case_key(case_id):
    return [int(p) if p.isdigit() else p for p in case_id.split(".")]


def pattern_regex(pattern):
    # Autobahn's own rule: '.' is literal, '*' matches anything.
    return re.compile(re.escape(pattern).replace(r"\*", ".*") + r"\Z")


class Expectation:
    def __init__(self, agent, entry, index):
        where = "%s entry %d" % (agent, index + 1)
        reason = entry.get("reason", "")
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("%s: every entry needs a reason" % where)
        cases = entry.get("cases")
        if not isinstance(cases, list) or not cases:
            raise ValueError("%s: 'cases' must be a non-empty list" % where)
        self.reason = reason.strip()
        self.patterns = [(c, pattern_regex(c)) for c in cases]
        self.behavior = entry.get("behavior")
        self.close_codes = entry.get("remoteCloseCode")
        self.may_pass = bool(entry.get("may_pass", False))

    def matches(self, case_id):
        return any(rx.match(case_id) for _, rx in self.patterns)

    def allows(self, result):
        """Why a failing result is not the failure this entry expects, or None."""
        if self.behavior is not None and outcome(result) not in self.behavior:
            return "expected %s" % "/".join(self.behavior)
        code = result.get("remoteCloseCode")
        if self.close_codes is not None and code not in self.close_codes:
            return "expected close code %s" % "/".join(
                "none" if c is None else str(c) for c in self.close_codes
            )
        return None


def load_expectations(path):
    with open(path) as f:
        data = json.load(f)
    table = {}
    for agent, entries in data.items():
        if agent.startswith("_"):
            continue  # comments
        if not isinstance(entries, list):
            raise ValueError("%s: expected a list of entries" % agent)
        table[agent] = [Expectation(agent, e, i) for i, e in enumerate(entries)]
    return table


def passes(result):
    return (
        result.get("behavior") in PASS_BEHAVIOR
        and result.get("behaviorClose") in PASS_CLOSE
    )


def outcome(result):
    """One word per case for the summary: its behavior, unless closing failed."""
    behavior = result.get("behavior")
    if behavior == "UNIMPLEMENTED":
        return "UNIMPLEMENTED"
    if passes(result):
        return behavior
    return "FAILED"


def describe(result, report_dir):
    """Autobahn's description of a case, from its per-case report."""
    name = result.get("reportfile")
    if not name:
        return ""
    try:
        with open(os.path.join(report_dir, name)) as f:
            text = json.load(f).get("description", "")
    except (OSError, ValueError):
        return ""
    text = re.sub(r"<br\s*/?>", " ", text)
    text = re.sub(r"<[^>]+>", "", text)
    return " ".join(text.split())


def summary_rows(agent, cases, unexpected):
    sections = OrderedDict()
    for case_id in sorted(cases, key=case_key):
        sec = case_id.split(".")[0]
        row = sections.setdefault(sec, dict.fromkeys(COLUMNS + ("unexpected",), 0))
        row[outcome(cases[case_id])] += 1
        if case_id in unexpected:
            row["unexpected"] += 1
    rows = []
    total = dict.fromkeys(COLUMNS + ("unexpected",), 0)
    for sec, row in sections.items():
        label = "%s %s" % (sec, SECTION_NAMES.get(sec, ""))
        rows.append((agent, label.strip(), row))
        for k in total:
            total[k] += row[k]
    rows.append((agent, "all", total))
    return rows


def print_table(rows, markdown):
    head = ("agent", "section") + COLUMNS + ("unexpected",)
    body = [
        (agent, sec) + tuple(str(row[c]) for c in COLUMNS + ("unexpected",))
        for agent, sec, row in rows
    ]
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
        for line in body:
            cells = list(line)
            if cells[1] == "all":
                cells = ["**%s**" % c for c in cells]
            print("| " + " | ".join(cells) + " |")
        return
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    for n, line in enumerate([head] + body):
        print(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_expected = os.path.join(here, "..", "autobahn", "expected-failures.json")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--expected", default=default_expected, help="expectations file")
    ap.add_argument("--markdown", action="store_true", help="summary as a Markdown table")
    ap.add_argument("index", nargs="+", help="reports/servers/index.json from wstest")
    args = ap.parse_args()

    try:
        expectations = load_expectations(args.expected)
    except (OSError, ValueError) as e:
        print("autobahn_check: %s: %s" % (args.expected, e), file=sys.stderr)
        return 2

    rows = []
    unexpected = []  # (agent, case id, result, why, report dir)
    expected_failures = []  # (agent, case id, outcome, reason)
    now_passing = []  # (agent, case id, reason)
    racy_passed = []  # (agent, case id): listed with may_pass, passed this time
    missing = False
    # agent -> case id -> (result, directory of its report); one agent's cases
    # may come from several index files (scripts/autobahn.sh runs shards).
    merged = OrderedDict()
    for index in args.index:
        report_dir = os.path.dirname(os.path.abspath(index))
        try:
            with open(index) as f:
                agents = json.load(f)
        except (OSError, ValueError) as e:
            print("autobahn_check: no results in %s: %s" % (index, e), file=sys.stderr)
            missing = True
            continue
        if not agents:
            print("autobahn_check: %s has no agents" % index, file=sys.stderr)
            missing = True
        for agent in sorted(agents):
            cases = merged.setdefault(agent, {})
            for case_id, result in agents[agent].items():
                if case_id in cases:
                    print(
                        "autobahn_check: %s %s is in two index files" % (agent, case_id),
                        file=sys.stderr,
                    )
                    missing = True
                cases[case_id] = (result, report_dir)

    for agent, cases in merged.items():
        listed = expectations.get(agent, [])
        if not cases:
            print("autobahn_check: %s ran no case" % agent, file=sys.stderr)
            missing = True
        bad = set()
        for case_id in sorted(cases, key=case_key):
            result, report_dir = cases[case_id]
            entry = next((e for e in listed if e.matches(case_id)), None)
            if passes(result):
                if entry is not None and entry.may_pass:
                    racy_passed.append((agent, case_id))
                elif entry is not None:
                    now_passing.append((agent, case_id, entry.reason))
                continue
            if entry is None:
                why = "not in the expected failures"
            else:
                why = entry.allows(result)
            if why is None:
                expected_failures.append((agent, case_id, outcome(result), entry.reason))
            else:
                bad.add(case_id)
                unexpected.append((agent, case_id, result, why, report_dir))
        rows.extend(summary_rows(agent, {c: r for c, (r, _) in cases.items()}, bad))

    print_table(rows, args.markdown)
    print()

    if expected_failures:
        by_reason = OrderedDict()
        for agent, case_id, out, reason in expected_failures:
            by_reason.setdefault((agent, reason), []).append(case_id)
        print("Expected failures (%s): %d" % (os.path.relpath(args.expected), len(expected_failures)))
        for (agent, reason), ids in by_reason.items():
            print("  %s, %d case(s): %s" % (agent, len(ids), compact(ids)))
            print("    because: %s" % reason)
        print()

    if racy_passed:
        print(
            "Listed with may_pass and passed this time: %s"
            % ", ".join("%s %s" % r for r in racy_passed)
        )
        print()

    if now_passing:
        print("Listed as expected failures but passing now (remove them from the list):")
        for agent, case_id, reason in now_passing:
            print("  %s %s (listed because: %s)" % (agent, case_id, reason))
        print()

    total = sum(sum(row[c] for c in COLUMNS) for _, sec, row in rows if sec == "all")
    as_expected = total - len(unexpected)
    if unexpected:
        print("UNEXPECTED RESULTS: %d" % len(unexpected))
        for agent, case_id, r, why, report_dir in unexpected:
            print(
                "  %s %s: behavior %s, close %s, close code %s (%s)"
                % (
                    agent,
                    case_id,
                    r.get("behavior"),
                    r.get("behaviorClose"),
                    r.get("remoteCloseCode"),
                    why,
                )
            )
            desc = describe(r, report_dir)
            if desc:
                print("    case: %s" % desc[:300])
            if r.get("reportfile"):
                print("    report: %s" % os.path.join(report_dir, r["reportfile"]))
        print()
    if missing:
        print("Results are missing: see the messages above.")
    print(
        "Autobahn: %d of %d results as expected (%d pass, %d listed expected failures, "
        "%d listed now passing); %d unexpected"
        % (
            as_expected,
            total,
            as_expected - len(expected_failures),
            len(expected_failures),
            len(now_passing),
            len(unexpected),
        )
    )
    # The plain closing line CI logs are read for: "passed" counts the
    # results that are as expected, "failed" the unexpected ones.
    print("autobahn: %d passed, %d failed" % (as_expected, len(unexpected) + int(missing)))
    return 1 if unexpected or missing else 0


def compact(ids):
    """'1.2.1 1.2.2 ... 1.2.8' -> '1.2.1-1.2.8' where ids are consecutive."""
    out = []
    run = []

    def flush():
        if len(run) > 2:
            out.append("%s..%s" % (run[0], run[-1]))
        else:
            out.extend(run)

    for cid in ids:
        if run:
            prev = run[-1].split(".")
            cur = cid.split(".")
            consecutive = (
                prev[:-1] == cur[:-1]
                and prev[-1].isdigit()
                and cur[-1].isdigit()
                and int(cur[-1]) == int(prev[-1]) + 1
            )
            if not consecutive:
                flush()
                run = []
        run.append(cid)
    if run:
        flush()
    return ", ".join(out)


if __name__ == "__main__":
    sys.exit(main())
