"""The example journeys in examples/ apply cleanly to a data directory with the demo layout."""

from __future__ import annotations

from pathlib import Path

from tests.journeys.conftest import EXAMPLES, local

from milepost.config import Config
from milepost.journeys.code import apply_plan, export_document, gather
from milepost.journeys.documents import DocMilestone, load_yaml


def test_the_three_examples_apply_cleanly_within_the_default_credit_limit(data_dir: Config) -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert [f.name for f in files] == [
        "churn-prevention.yaml",
        "gdpr-consent-split.yaml",
        "post-purchase-ltv.yaml",
    ]
    with local(data_dir) as backend:
        for path in files:
            plan = gather(load_yaml(path.read_text()), backend)
            assert not plan.problems, (path.name, plan.problems)
            assert not plan.warnings, (path.name, plan.warnings)
            apply_plan(plan, backend)
            assert gather(load_yaml(path.read_text()), backend).empty, path.name
        account = backend.account()
        assert account.activated == 6 <= account.audience_limit == 20
        assert "lifetime_value" in account.calculated_attributes
        ltv = export_document(backend, "Post-purchase LTV")
        assert [c["name"] for c in ltv.calculated_attributes] == ["lifetime_value"]
        churn = export_document(backend, "Churn prevention")
        assert churn.milestones[0].children[0].criteria == {
            "all": [
                {"type": "parent_entry", "op": "more_than_ago", "value": {"amount": 2, "unit": "days"}},
                {
                    "not": {
                        "type": "event",
                        "event": {"event_type": "custom_event", "name": "open_email"},
                        "having": {"fn": "count", "op": "greater_than", "value": 0},
                        "window": {"since_parent_entry": True},
                    }
                },
            ]
        }


def test_examples_are_the_documents_they_export_to(data_dir: Config) -> None:
    """Each example, once applied, exports to the same tree (modulo defaults such as `having`)."""
    with local(data_dir) as backend:
        for path in sorted(EXAMPLES.glob("*.yaml")):
            document = load_yaml(path.read_text())
            apply_plan(gather(document, backend), backend)
            exported = export_document(backend, document.name)
            assert exported.name == document.name
            assert document.inputs is None or exported.inputs == document.inputs
            assert _tree(exported.milestones) == _tree(document.milestones), path.name


def _tree(nodes: tuple[DocMilestone, ...]) -> list[object]:
    return [(m.name, m.remaining, m.criteria, m.connections, _tree(m.children)) for m in nodes]


def test_demo_loads_outputs_and_examples(tmp_path: Path) -> None:
    from tests.journeys.conftest import prepare

    from milepost.demo import example_journeys
    from milepost.runtime import Runtime

    config = prepare(tmp_path / "demo", outputs=False)
    runtime = Runtime.open(config)
    runtime.start(background=False)
    try:
        line = example_journeys(runtime, only_new=False)
        assert "3 applied" in line and "6 outputs created" in line and "6/20" in line, line
        again = example_journeys(runtime, only_new=True)
        assert "0 applied" in again and "0 outputs created" in again, again
    finally:
        runtime.close()
