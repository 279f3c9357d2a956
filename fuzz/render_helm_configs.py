"""Prints (JSON list) the config files the Helm chart renders into its ConfigMaps, for its
default values and each example values file. Run by seed_corpus.py with the venv of
helm/tests (helm-python-sdk), reusing that checker's render function."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "helm" / "tests"))

import check_chart as c  # noqa: E402
import helm_python as helm  # noqa: E402

texts = []
with helm.Chart.load(c.CHART) as chart:
    for values in [None, *[c.load_values(p) for p in sorted(c.EXAMPLES.glob("*.yaml"))]]:
        for cm in c.by_kind(c.render(chart, values), "ConfigMap"):
            for key, text in cm.get("data", {}).items():
                if key in ("router.yaml", "worker.yaml", "controller.yaml"):
                    texts.append(text)
print(json.dumps(sorted(set(texts))))
