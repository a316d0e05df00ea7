"""Audience criteria: the canonical model, validation, the reference evaluator and the SQL compiler."""

from __future__ import annotations

from milepost.criteria.compile import CompileContext, compile_criteria, compile_many, to_sql
from milepost.criteria.document import References, references, resolve_audiences, to_json
from milepost.criteria.model import CalculatedAttribute, Criteria
from milepost.criteria.reference import Consent, EvalContext, UserData, evaluate
from milepost.criteria.validation import parse_calculated_attribute, parse_criteria

__all__ = [
    "CalculatedAttribute",
    "CompileContext",
    "Consent",
    "Criteria",
    "EvalContext",
    "References",
    "UserData",
    "compile_criteria",
    "compile_many",
    "evaluate",
    "parse_calculated_attribute",
    "parse_criteria",
    "references",
    "resolve_audiences",
    "to_json",
    "to_sql",
]
