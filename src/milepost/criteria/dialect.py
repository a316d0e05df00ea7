"""Every engine-specific SQL choice of the criteria compiler, in one place: DuckDB and Spark.

`SparkDialect` subclasses `Dialect` and overrides these builders; the compiler itself only
assembles portable sqlglot expressions, so both engines run the same compiled criteria.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlglot import exp

from milepost.criteria.values import DATE_ONLY_PATTERN, OFFSET_SUFFIX_PATTERN


def call(name: str, *args: exp.Expr) -> exp.Expr:
    """A function call rendered verbatim, so no dialect rewrite changes its meaning."""
    return exp.Anonymous(this=name, expressions=list(args))


def lit(v: str | int | float) -> exp.Expr:
    return exp.convert(v)


def json_pointer(name: str) -> str:
    """RFC 6901 pointer to one key: no JSONPath quoting rules to get wrong."""
    return "/" + name.replace("~", "~0").replace("/", "~1")


class Dialect:
    """DuckDB: JSON columns, RE2 regexes, lists and `unnest`."""

    name = "duckdb"
    # json_type() names of JSON scalars
    json_numeric_types: tuple[str, ...] = ("BIGINT", "UBIGINT", "DOUBLE", "HUGEINT")
    json_string_type = "VARCHAR"
    json_bool_type = "BOOLEAN"
    json_array_type = "ARRAY"
    json_null_type = "NULL"

    def json_get(self, j: exp.Expr, key: str) -> exp.Expr:
        return call("json_extract", j, lit(json_pointer(key)))

    @staticmethod
    def _keyed(j: exp.Expr) -> tuple[exp.Expr, exp.Expr] | None:
        """(document, pointer) of a `json_get`: reading through the pointer parses the document
        once, where reading the extracted value first writes it out and parses it again."""
        if isinstance(j, exp.Anonymous) and j.name == "json_extract" and len(j.expressions) == 2:
            doc, ptr = j.expressions
            if ptr.is_string and ptr.name.startswith("/"):
                return doc, ptr
        return None

    def json_type(self, j: exp.Expr) -> exp.Expr:
        keyed = self._keyed(j)
        return call("json_type", *(x.copy() for x in keyed)) if keyed else call("json_type", j)

    def json_text(self, j: exp.Expr) -> exp.Expr:
        """The text of a JSON scalar: strings unquoted, numbers and booleans as JSON text."""
        keyed = self._keyed(j)
        if keyed:
            return call("json_extract_string", *(x.copy() for x in keyed))
        return call("json_extract_string", j, lit("$"))

    # The text `json_text` gives an array or object is its JSON (starting with `[` or `{`), so a
    # test for equality with any other text needs no separate type test.
    container_text_is_json = True

    def json_elements(self, j: exp.Expr) -> exp.Expr:
        """A JSON array as a list of JSON values, for `unnest`."""
        return exp.cast(call("json_extract", j, lit("$[*]")), exp.DataType.build("JSON[]", dialect="duckdb"))

    def json_array_length(self, j: exp.Expr) -> exp.Expr:
        return call("json_array_length", j)

    def exists_element(self, values: exp.Expr, alias: str, pred: Callable[[exp.Expr], exp.Expr]) -> exp.Expr:
        """Some element of the list `values` passes `pred` (given the element as an expression)."""
        sub = exp.select("1").from_(self.unnest(values, alias, "x")).where(pred(exp.column("x", table=alias)))
        return exp.Exists(this=sub)

    def list_has_any(self, items: exp.Expr, values: Sequence[int]) -> exp.Expr:
        """The integer list `items` shares an element with `values`: one `list_contains` per value,
        which DuckDB tests several times faster than `list_has_any` against a list constant (a
        sixth of a full calculation's root filter over a million users)."""
        if not values:
            return exp.false()
        tests = [call("list_contains", items.copy(), lit(int(v))) for v in values]
        return tests[0] if len(tests) == 1 else exp.Paren(this=exp.or_(*tests))

    def unnest(self, values: exp.Expr, alias: str, column: str) -> exp.Expr:
        """`unnest(values) AS alias(column)` as a FROM item."""
        return exp.Unnest(
            expressions=[values],
            alias=exp.TableAlias(this=exp.to_identifier(alias), columns=[exp.to_identifier(column)]),
        )

    def full_match(self, s: exp.Expr, pattern: str) -> exp.Expr:
        return call("regexp_full_match", s, lit(pattern))

    def search_ci(self, s: exp.Expr, pattern: str) -> exp.Expr:
        """RE2 search anywhere in the value, case-insensitive."""
        return call("regexp_matches", s, lit(pattern), lit("i"))

    def lower(self, s: exp.Expr) -> exp.Expr:
        return exp.Lower(this=s)

    def like(self, s: exp.Expr, pattern: str) -> exp.Expr:
        return exp.Escape(this=exp.Like(this=s, expression=lit(pattern)), expression=lit("\\"))

    def contains(self, s: exp.Expr, needle: str) -> exp.Expr:
        return call("contains", s, lit(needle))

    def starts_with(self, s: exp.Expr, prefix: str) -> exp.Expr:
        return call("starts_with", s, lit(prefix))

    def ends_with(self, s: exp.Expr, suffix: str) -> exp.Expr:
        return call("suffix", s, lit(suffix))

    def try_cast(self, e: exp.Expr, to: str) -> exp.Expr:
        return exp.TryCast(this=e, to=exp.DataType.build(to, dialect="duckdb"))

    def cast(self, e: exp.Expr, to: str) -> exp.Expr:
        return exp.Cast(this=e, to=exp.DataType.build(to, dialect="duckdb"))

    def iso_epoch_ms(self, s: exp.Expr) -> exp.Expr:
        """Epoch ms of an ISO-8601 string already checked against ISO_PATTERN; no offset = UTC."""
        normalized = exp.Case(
            ifs=[
                exp.If(
                    this=self.full_match(s, DATE_ONLY_PATTERN),
                    true=exp.DPipe(this=s, expression=lit("T00:00:00+00:00")),
                ),
                exp.If(this=call("regexp_matches", s, lit(OFFSET_SUFFIX_PATTERN)), true=s),
            ],
            default=exp.DPipe(this=s, expression=lit("+00:00")),
        )
        return call("epoch_ms", self.try_cast(normalized, "TIMESTAMPTZ"))

    def floor_bigint(self, e: exp.Expr) -> exp.Expr:
        return self.cast(exp.Floor(this=e), "BIGINT")

    def distinct_list(self, e: exp.Expr) -> exp.Expr:
        return call("list", exp.Distinct(expressions=[e]))

    def list_sort(self, e: exp.Expr) -> exp.Expr:
        return call("list_sort", e)

    def empty_list(self) -> exp.Expr:
        return self.cast(exp.Array(expressions=[]), "VARCHAR[]")

    def list_length(self, e: exp.Expr) -> exp.Expr:
        return call("len", e)

    def decimal_type(self) -> str:
        return "DECIMAL(38,9)"


DUCKDB = Dialect()

# Spark SQL: JSON columns are read as VARIANT (`parse_json` when the view is registered), lists
# are arrays with higher-order functions, regexes run on java.util.regex (see docs/scale-out.md
# for the RE2 subset where both agree).
SPARK_NUMERIC_TYPES = ("BIGINT", "INT", "SMALLINT", "TINYINT", "DECIMAL", "DOUBLE", "FLOAT")


class SparkDialect(Dialect):
    """Spark 4 SQL over the same tables, with JSON as VARIANT."""

    name = "spark"
    json_numeric_types = SPARK_NUMERIC_TYPES
    json_string_type = "STRING"
    json_bool_type = "BOOLEAN"
    json_array_type = "ARRAY"
    json_null_type = "VOID"

    def _variant_as(self, j: exp.Expr, type_: str) -> exp.Expr:
        return call("try_variant_get", j, lit("$"), lit(type_))

    def json_get(self, j: exp.Expr, key: str) -> exp.Expr:
        # Through a map rather than a path: any key works, quotes and dots included.
        return call("try_element_at", self._variant_as(j, "map<string,variant>"), lit(key))

    def json_type(self, j: exp.Expr) -> exp.Expr:
        # schema_of_variant says e.g. DECIMAL(2,1) or ARRAY<BIGINT>; the leading word is the kind.
        return call("regexp_extract", call("schema_of_variant", j), lit("^[A-Z]+"), lit(0))

    def json_text(self, j: exp.Expr) -> exp.Expr:
        return self._variant_as(j, "string")

    container_text_is_json = False

    def json_elements(self, j: exp.Expr) -> exp.Expr:
        return self._variant_as(j, "array<variant>")

    def json_array_length(self, j: exp.Expr) -> exp.Expr:
        return call("array_size", self.json_elements(j))

    def exists_element(self, values: exp.Expr, alias: str, pred: Callable[[exp.Expr], exp.Expr]) -> exp.Expr:
        body = pred(exp.column(alias))
        return call("exists", values, exp.Lambda(this=body, expressions=[exp.to_identifier(alias)]))

    def list_has_any(self, items: exp.Expr, values: Sequence[int]) -> exp.Expr:
        return call("arrays_overlap", items, call("array", *[lit(int(v)) for v in values]))

    def full_match(self, s: exp.Expr, pattern: str) -> exp.Expr:
        # `\z`, not `$`: java's `$` also matches before a final line break, RE2's does not.
        return call("rlike", s, lit(f"^(?:{pattern})\\z"))

    def search_ci(self, s: exp.Expr, pattern: str) -> exp.Expr:
        # Unicode-aware case-insensitive, as RE2's (?i).
        return call("rlike", s, lit(f"(?iu){pattern}"))

    def contains(self, s: exp.Expr, needle: str) -> exp.Expr:
        return call("contains", s, lit(needle))

    def starts_with(self, s: exp.Expr, prefix: str) -> exp.Expr:
        return call("startswith", s, lit(prefix))

    def ends_with(self, s: exp.Expr, suffix: str) -> exp.Expr:
        return call("endswith", s, lit(suffix))

    def try_cast(self, e: exp.Expr, to: str) -> exp.Expr:
        # `safe`: rendered as TRY_CAST, so ANSI mode (Spark's default) never raises on bad text.
        return exp.TryCast(this=e, to=exp.DataType.build(to, dialect="duckdb"), safe=True)

    def iso_epoch_ms(self, s: exp.Expr) -> exp.Expr:
        """As DuckDB's: Spark wants the seconds, so `HH:MM` gets `:00` before the cast."""
        with_seconds = call(
            "regexp_replace", s, lit("^([0-9-]{10}[T ][0-9]{2}:[0-9]{2})(Z|[+-]|$)"), lit("$1:00$2")
        )
        normalized = exp.Case(
            ifs=[
                exp.If(
                    this=self.full_match(s, DATE_ONLY_PATTERN),
                    true=exp.DPipe(this=s, expression=lit("T00:00:00+00:00")),
                ),
                exp.If(this=call("rlike", s, lit(OFFSET_SUFFIX_PATTERN)), true=with_seconds),
            ],
            default=exp.DPipe(this=with_seconds.copy(), expression=lit("+00:00")),
        )
        return call("unix_millis", self.try_cast(normalized, "TIMESTAMPTZ"))  # Spark TIMESTAMP: with zone

    def distinct_list(self, e: exp.Expr) -> exp.Expr:
        return call("collect_set", e)

    def list_sort(self, e: exp.Expr) -> exp.Expr:
        return call("array_sort", e)

    def empty_list(self) -> exp.Expr:
        return exp.Cast(this=call("array"), to=exp.DataType.build("ARRAY<STRING>", dialect="spark"))

    def list_length(self, e: exp.Expr) -> exp.Expr:
        return call("array_size", e)


SPARK = SparkDialect()
