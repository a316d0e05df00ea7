"""Every engine-specific SQL choice of the criteria compiler, in one place (DuckDB today).

A Spark dialect subclasses `Dialect` and overrides these builders; the compiler itself only
assembles portable sqlglot expressions.
"""

from __future__ import annotations

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
    json_numeric_types = ("BIGINT", "UBIGINT", "DOUBLE", "HUGEINT")
    json_string_type = "VARCHAR"
    json_bool_type = "BOOLEAN"
    json_array_type = "ARRAY"
    json_null_type = "NULL"

    def json_get(self, j: exp.Expr, key: str) -> exp.Expr:
        return call("json_extract", j, lit(json_pointer(key)))

    def json_type(self, j: exp.Expr) -> exp.Expr:
        return call("json_type", j)

    def json_text(self, j: exp.Expr) -> exp.Expr:
        """The text of a JSON scalar: strings unquoted, numbers and booleans as JSON text."""
        return call("json_extract_string", j, lit("$"))

    def json_elements(self, j: exp.Expr) -> exp.Expr:
        """A JSON array as a list of JSON values, for `unnest`."""
        return exp.cast(call("json_extract", j, lit("$[*]")), exp.DataType.build("JSON[]", dialect="duckdb"))

    def json_array_length(self, j: exp.Expr) -> exp.Expr:
        return call("json_array_length", j)

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
