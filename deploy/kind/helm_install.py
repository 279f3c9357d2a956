#!/usr/bin/env python3
"""`helm upgrade --install --wait` through helm-python-sdk, for machines with no helm binary.

    helm_install.py CHART RELEASE --namespace NS --kube-context CTX [-f VALUES]... [--set K=V]...

Values files merge like Helm's -f: maps key by key, the later file winning, anything else
replaced whole; --set expressions (Helm's syntax, parsed by Helm's own strvals) go on top.
The release is upgraded when it exists (in any state) and installed otherwise, and the call
returns once every object is ready (Helm's "watcher" wait) or fails after --timeout.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import helm_python as helm
import yaml


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("chart")
    p.add_argument("release")
    p.add_argument("--namespace", required=True)
    p.add_argument("--kube-context")
    p.add_argument("-f", "--values", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--timeout", type=int, default=600, help="seconds")
    p.add_argument("--dry-run", action="store_true", help="render on the client, change nothing")
    args = p.parse_args()

    values: dict[str, Any] = {}
    for path in args.values:
        with open(path) as f:
            values = merge(values, yaml.safe_load(f) or {})
    for expression in args.set:
        values = merge(values, helm.parse_set_string(expression))

    helm.validate_release_name(args.release)
    with helm.Config(namespace=args.namespace, kube_context=args.kube_context) as cfg:
        common = dict(values=values, namespace=args.namespace, timeout=args.timeout)
        if args.dry_run:
            release = cfg.install(args.chart, args.release, **common, dry_run="client", create_namespace=True)
        else:
            exists = any(r["name"] == args.release
                         for r in cfg.list(all_states=True, name_filter=f"^{args.release}$"))
            if exists:
                release = cfg.upgrade(args.chart, args.release, **common, wait="watcher")
            else:
                release = cfg.install(args.chart, args.release, **common, wait="watcher", create_namespace=True)
    print(f"release {release['name']} in {release['namespace']}: revision {release['revision']}, {release['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
