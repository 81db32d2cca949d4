"""``python -m bench {overhead,latency,dispatch,events,scaling,memory,ssh,all} [--json] [--quick]``

Each benchmark prints one JSON object with its figures (``--json``) or a short
table. ``all`` runs every benchmark and writes ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from typing import Any

NAMES = ("overhead", "latency", "dispatch", "events", "scaling", "memory")


def run_one(name: str, *, quick: bool) -> dict[str, Any]:
    module = importlib.import_module(f"bench.{name}")
    t0 = time.monotonic()
    out: dict[str, Any] = module.run(quick=quick)
    out["seconds"] = round(time.monotonic() - t0, 1)
    out["command"] = f"python -m bench {name} --json" + (" --quick" if quick else "")
    return out


def _print_human(out: dict[str, Any]) -> None:
    print(f"== {out['benchmark']} ({out['seconds']} s)")
    for key, value in out["figures"].items():
        print(f"  {key}: {value}")
    for t in out["targets"]:
        mark = "met" if t["met"] else "MISSED"
        print(f"  target {t['what']}: {t['value']} (target {t['target']}) {mark}")
    for note in out.get("notes", []):
        print(f"  note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=[*NAMES, "ssh", "all", "peers-venv", "report"])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument("--output", default="docs/benchmarks.md", help="report written by `all`")
    args = parser.parse_args(argv)
    from deploystream import logs

    logs.configure("warning")
    if args.name == "peers-venv":
        from bench import peers_env

        print(peers_env.ensure())
        return 0
    if args.name == "report":  # rewrite the report from the raw figures of the last `all`
        from bench import report

        saved = json.loads(report.raw_path(args.output).read_text())
        print(report.write(saved["results"], args.output, quick=saved["quick"]))
        return 0
    if args.name != "all":
        out = run_one(args.name, quick=args.quick)
        if args.json:
            print(json.dumps(out))
        else:
            _print_human(out)
        return 0
    from bench import report

    results: list[dict[str, Any]] = []
    for name in NAMES:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        out = run_one(name, quick=args.quick)
        results.append(out)
        if not args.json:
            _print_human(out)
    report.raw_path(args.output).write_text(
        json.dumps({"quick": args.quick, "results": results}, indent=1) + "\n"
    )
    path = report.write(results, args.output, quick=args.quick)
    if args.json:
        print(json.dumps({"report": str(path), "results": results}))
    else:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
