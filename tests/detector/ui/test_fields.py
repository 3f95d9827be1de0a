"""Findings are read defensively: missing or wrongly typed keys show as absent, never an error."""
from __future__ import annotations

import json

import pytest

from detector.ui.context import explanation, from_finding
from detector.ui.fields import summary


@pytest.mark.parametrize("finding", [
    "not json", "[]", "null", json.dumps({"unmapped": [], "finding_info": "x", "src_endpoint": 5}),
    json.dumps({"evidences": [None, 3, {"data": []}], "finding_info": {"attacks": [None, {"technique": 7}]}}),
    json.dumps({"unmapped": {"score": "NaN", "count": "many", "top_destinations": [None, {"endpoint": None}]}}),
    json.dumps({"dst_endpoint": {"ip": "h"}, "unmapped": {"score": "x", "top_destinations": [{"endpoint": "a:1", "count": "2"},
                                                                                          {"endpoint": "b", "count": 1}]}}),
])
def test_broken_findings_show_as_absent(finding):
    row = {"id": "a1", "finding": finding, "src_ip": None, "severity_id": "high"}
    s = summary(row)
    assert s["id"] == "a1" and s["severity_id"] is None and s["techniques"] == [] and s["score"] is None
    f = json.loads(finding) if finding.startswith(("{", "[", "n")) and finding != "not json" else {}
    f = f if isinstance(f, dict) else {}
    why = explanation(f)
    assert why["predicates"] == [] and why["knowledge_techniques"] == []
    ctx = from_finding(f, [])
    assert ctx["source"] == "findings" and isinstance(ctx["graph"]["nodes"], list)


def test_enriched_finding_explanation():
    f = {"evidences": [{"data": {"knowledge": {
        "predicates": [{"name": "fan_out", "value": 0.8}, {"name": "syn_only", "value": 1.0}],
        "techniques": [{"id": "T1046", "name": "Network Service Discovery", "score": 0.71,
                        "predicates": [{"name": "fan_out", "value": 0.8, "confidence": 0.9}]}]}}}],
        "finding_info": {"attacks": [{"technique": {"uid": "T1046", "name": "Network Service Discovery"},
                                      "tactic": {"uid": "TA0007", "name": "Discovery"}}]},
        "unmapped": {"severity_points": {"impact": 1, "records": 2, "bad": "x"}, "technique": "T1046"}}
    why = explanation(f)
    assert why["predicates"] == [{"name": "fan_out", "value": 0.8}, {"name": "syn_only", "value": 1.0}]
    assert why["knowledge_techniques"] == [{"id": "T1046", "name": "Network Service Discovery", "score": 0.71,
                                            "predicates": "fan_out=0.8"}]
    assert why["severity_points"] == {"impact": 1, "records": 2}
    s = summary({"id": "x", "finding": json.dumps(f), "technique": "T1046"})
    assert s["techniques"] == [{"id": "T1046", "name": "Network Service Discovery", "tactics": ["Discovery"]}]


def test_ongoing_finding_window_counts_fill_the_timeline():
    f = {"finding_info": {"uid": "inc1"}, "src_endpoint": {"ip": "a"}, "dst_endpoint": {"ip": "b"},
         "unmapped": {"technique": "T1498", "window": {"start": 600.0, "end": 900.0},
                      "window_counts": {"0.000000": 4, "300.000000": 9, "600.000000": 2, "bad": 1}}}
    others = [{"id": "inc1", "window_start": 600.0, "window_end": 900.0, "technique": "T1498", "severity_id": 4,
               "score": 3.0, "count": 15}]
    t = from_finding(f, others)["timeline"]
    assert [(x["window_start"], x["flagged"], x["alert_id"]) for x in t] == [(0.0, 4, "inc1"), (300.0, 9, "inc1"),
                                                                             (600.0, 2, "inc1")]
    assert t[2]["max_score"] == 3.0
