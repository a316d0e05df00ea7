"""One criterion of an estimate, whatever `now` is: its SQL at any instant (compiled once, then
rendered from a template checked at a third instant) and how long a result computed at an instant
holds (`validity`). The journey root is a leaf of its own."""

from __future__ import annotations

from dataclasses import dataclass, replace

from milepost.audiences.attribute_leaves import AttributeLeaf, attribute_leaf
from milepost.audiences.event_leaves import EventPlan, event_plan
from milepost.audiences.sql_templates import Template, template
from milepost.audiences.validity import Instants
from milepost.criteria import CompileContext, Criteria, compile_criteria, to_sql
from milepost.criteria.core import lower
from milepost.criteria.values import DAY_MS

# Criteria whose durations are all a day or more are served up to this long after the instant they
# were computed at, even past a window boundary (see `audiences.estimator`).
TIME_SLACK_MS = 60_000
TEMPLATE_CHECK_MS = 7_919_993  # a third instant a template must render exactly before it is used


@dataclass(frozen=True)
class CompiledLeaf:
    sql: str
    attributes: AttributeLeaf | None  # set when the criterion reads user attributes only


class Leaf:
    """One criterion in one context, whatever `now` is: its SQL at any instant (compiled once,
    then rendered from a template) and how long a result computed at an instant holds."""

    def __init__(self, criteria: Criteria, ctx: CompileContext, spans: frozenset[int] | None) -> None:
        self.criteria = criteria
        self.ctx = ctx
        self.spans = spans  # None: time is read through what the sample does not hold
        positive = [d for d in spans or () if d > 0]
        self.slack_ms = TIME_SLACK_MS if spans is not None and min(positive, default=0) >= DAY_MS else 0
        self._last: tuple[int, CompiledLeaf] | None = None  # the latest compilation and its instant
        self._templates: tuple[Template, Template | None] | None = None
        self._tried = False
        # counts of events are evaluated in NumPy (`event_leaves`) rather than by the compiled query
        self.events: EventPlan | None = event_plan(lower(criteria, ctx.calculated))

    def _compile(self, now_ms: int) -> CompiledLeaf:
        tree = compile_criteria(self.criteria, replace(self.ctx, now_ms=now_ms))
        sql = to_sql(tree)
        return CompiledLeaf(sql, attribute_leaf(tree, sql))

    def compiled(self, now_ms: int) -> CompiledLeaf:
        if self._templates is not None:
            sql, attrs = self._templates
            return CompiledLeaf(
                sql.render(now_ms),
                None
                if attrs is None or self._last is None or self._last[1].attributes is None
                else AttributeLeaf(self._last[1].attributes.paths, attrs.render(now_ms)),
            )
        if self._last is not None and self._last[0] == now_ms:
            return self._last[1]
        found = self._compile(now_ms)
        if self._last is not None and not self._tried:
            self._tried = True
            self._templates = self._template(self._last, (now_ms, found))
        self._last = (now_ms, found)
        return found

    def _template(
        self, a: tuple[int, CompiledLeaf], b: tuple[int, CompiledLeaf]
    ) -> tuple[Template, Template | None] | None:
        (a_now, a_sql), (b_now, b_sql) = a, b
        sql = template(a_sql.sql, a_now, b_sql.sql, b_now)
        if sql is None:
            return None
        attrs: Template | None = None
        if a_sql.attributes is not None or b_sql.attributes is not None:
            if a_sql.attributes is None or b_sql.attributes is None:
                return None
            if a_sql.attributes.paths != b_sql.attributes.paths:
                return None
            attrs = template(a_sql.attributes.sql, a_now, b_sql.attributes.sql, b_now)
            if attrs is None:
                return None
        check_now = b_now + TEMPLATE_CHECK_MS
        check = self._compile(check_now)
        if sql.render(check_now) != check.sql:
            return None
        if attrs is not None and (
            check.attributes is None or attrs.render(check_now) != check.attributes.sql
        ):
            return None
        return sql, attrs

    def until(self, instants: Instants, now_ms: int) -> int:
        """Results computed at `now_ms` are served for any instant before this one."""
        if self.spans is None:
            return (now_ms // 1000 + 1) * 1000  # per second of `now`, as nothing bounds it better
        return max(instants.next_change(self.spans, now_ms), now_ms + self.slack_ms)


class RootLeaf(Leaf):
    """The journey root: users seen within the profile lifetime, on the journey's inputs."""

    def __init__(self, input_ids: tuple[int, ...], lifetime_ms: int) -> None:
        self.input_ids, self.lifetime_ms = input_ids, lifetime_ms
        self.spans = frozenset({lifetime_ms})
        self.slack_ms = TIME_SLACK_MS if lifetime_ms >= DAY_MS else 0
        self.events = None

    def compiled(self, now_ms: int) -> CompiledLeaf:
        ids = ",".join(str(int(i)) for i in self.input_ids) or "NULL"
        return CompiledLeaf(
            f"SELECT mpid FROM users WHERE last_seen IS NOT NULL AND last_seen > {int(now_ms - self.lifetime_ms)} "
            f"AND list_has_any(inputs, [{ids}]::INTEGER[])",
            None,
        )
