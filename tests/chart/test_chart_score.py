"""kube-score on the chart rendered with each of its ci/ values: no CRITICAL finding but those kept on
purpose, each explained in the chart README's "kube-score findings"."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.helm_chart import CHART, CI_VALUES, Helm

#: kube-score's grade of a CRITICAL finding.
CRITICAL = 1
#: The CRITICAL findings kept, by values file: (kind, check id).
KEPT: dict[str, set[tuple[str, str]]] = {
    # The chart's defaults: the NetworkPolicy needs the API server's addresses, which only the
    # installer knows; IfNotPresent pulls an immutable tag or digest once per node.
    "minimal-values.yaml": {
        ("Deployment", "pod-networkpolicy"),
        ("Deployment", "container-image-pull-policy"),
    },
    "hardened-values.yaml": set(),
}


def critical_findings(kube_score: Path, manifests: str) -> set[tuple[str, str]]:
    result = subprocess.run(
        [str(kube_score), "score", "-", "--output-format", "json"],
        input=manifests,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout, result.stderr  # it exits 1 when it finds anything CRITICAL
    return {
        (scored["type_meta"]["kind"], check["check"]["id"])
        for scored in json.loads(result.stdout)
        for check in scored["checks"]
        if check["grade"] == CRITICAL and not check["skipped"]
    }


def test_every_ci_values_file_is_scored() -> None:
    assert KEPT.keys() == CI_VALUES.keys()


@pytest.mark.parametrize("name", sorted(CI_VALUES))
def test_no_critical_finding_but_those_kept_on_purpose(helm: Helm, kube_score: Path, name: str) -> None:
    manifests = helm.template(CI_VALUES[name]).stdout
    assert critical_findings(kube_score, manifests) == KEPT[name]


def test_the_readme_explains_each_finding_kept() -> None:
    readme = (CHART / "README.md").read_text()
    section = readme.split("## kube-score findings", 1)[1].split("\n## ", 1)[0]
    for kept in KEPT.values():
        for _, check in kept:
            assert f"`{check}`" in section
