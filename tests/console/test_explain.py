"""Every finding type giftsync records is explained in the console."""

from __future__ import annotations

import re
from typing import get_args

from app.console.explain import EXPLANATIONS, evidence_rows
from app.sync.omni.merge import FindingType
from app.sync.reconcile.common import OMNI_FINDINGS, SHADOW_FINDINGS
from tests.conftest import ROOT


def test_every_recorded_finding_type_has_an_explanation() -> None:
    recorded = set(get_args(FindingType)) | set(OMNI_FINDINGS) | set(SHADOW_FINDINGS)
    for path in (ROOT / "app").rglob("*.py"):
        recorded |= set(re.findall(r'finding_type="([a-z_]+)"', path.read_text()))
    assert recorded - set(EXPLANATIONS) == set()


def test_evidence_shows_money_as_money() -> None:
    assert evidence_rows(
        {
            "base_minor": 5000,
            "balances": {"shopify": 5000, "lightspeed": 7000},
            "disabled": ["shopify"],
            "reloaded": [],
            "run_id": None,
            "amount": "12.50",
        }
    ) == [
        ("base", "50.00"),
        ("balances", "shopify 50.00, lightspeed 70.00"),
        ("disabled", "shopify"),
        ("reloaded", "none"),
        ("run id", "—"),
        ("amount", "12.50"),
    ]
