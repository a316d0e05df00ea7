"""Deterministic synthetic mParticle-style batches for demos, tests and benchmarks."""

from __future__ import annotations

from milepost.synthetic.batches import generate, write_jsonl
from milepost.synthetic.benchmark_mixes import realistic_bulk_requests, single_user_requests
from milepost.synthetic.catalog_plan import InputPlan, WorkspacePlan, demo_layout
from milepost.synthetic.checks import batch_problems

__all__ = [
    "InputPlan",
    "WorkspacePlan",
    "batch_problems",
    "demo_layout",
    "generate",
    "realistic_bulk_requests",
    "single_user_requests",
    "write_jsonl",
]
