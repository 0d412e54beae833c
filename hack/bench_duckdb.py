#!/usr/bin/env python3
"""The baseline of benchmark P4 (docs/benchmarks.md): DuckDB settles the same month from CSV.

Run by operator/benches/settlement.rs, which writes the CSV files first:

    intervals.csv  department,provider,request,item,sku,type,quantity,from_s,to_s
    prices.csv     book,provider,sku,unit,per,price,from_s,until_s   (one row per book × SKU)
    discounts.csv  book,department,percent

Instants are Unix seconds; an empty to_s is an open interval, an empty until_s an open-ended
book. The query applies the engine's rules (operator/src/billing/mod.rs): clip to the period, an
open interval up to "now"; split at calendar months of the zone and at price changes; hourly
prices by the second, monthly prices prorated by the seconds of the month; the department
discount of the book in force; round half-up to the fen once per line; sum the rounded lines.

Prints one JSON object on stdout: the figures (line count, total and subtotals as "123.45"
strings), the timings of each variant, the DuckDB version and the SQL.
"""

import argparse
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb

# Money stays in integers so that nothing is rounded but the one half-up rounding per line: with
# quantity, price and discount at two decimals,
#   fen = q100 * p100 * seconds * (10000 - d100) / (denominator * 10^6)
# where the denominator is 3600 for hourly prices and the seconds of the piece's month for
# monthly ones. The numerator reaches ~1e22, so HUGEINT. (DuckDB divides DECIMALs as DOUBLE.)
SETTLEMENT_SQL = """
WITH clipped AS (
    -- The part of each interval inside the period; an open interval runs until now.
    SELECT i.department, i.provider, i.sku, i.type,{keep_i}
           CAST(i.quantity * 100 AS HUGEINT) AS q100,
           greatest(i.from_s, w.start_s) AS s,
           least(coalesce(i.to_s, w.now_s), w.end_s) AS e
    FROM {intervals} AS i, win AS w
),
pieces AS (
    -- One piece per (interval, price point in force, calendar month) that overlap.
    SELECT c.department, c.provider, c.type, c.q100,{keep_c}
           p.unit, p.p100,
           coalesce(d.d100, 0) AS d100,
           m.end_s - m.start_s AS month_s,
           greatest(c.s, p.from_s, m.start_s) AS ps,
           least(c.e, p.until_s, m.end_s) AS pe
    FROM clipped AS c
    JOIN price_points AS p
      ON p.provider = c.provider AND p.sku = c.sku AND p.from_s < c.e AND p.until_s > c.s
    JOIN months AS m ON m.start_s < c.e AND m.end_s > c.s
    LEFT JOIN discounts AS d ON d.book = p.book AND d.department = c.department
    WHERE c.s < c.e
),
lines AS (
    -- Half-up to the fen: floor((2n + d) / 2d) for n >= 0.
    SELECT department, provider, type,{keep}
           (2 * q100 * p100 * (pe - ps) * (10000 - d100) + den) // (2 * den) AS fen
    FROM (
        SELECT *, CAST(CASE unit WHEN 'hour' THEN 3600 ELSE month_s END AS HUGEINT) * 1000000 AS den
        FROM pieces
        WHERE ps < pe
    )
)
{final}
"""

TOTALS = """SELECT GROUPING(department, provider, type) AS level, department, provider, type,
       sum(fen) AS fen, count(*) AS lines
FROM lines
GROUP BY GROUPING SETS ((department), (provider), (type), ())"""

# Only for a diagnosis when the engine disagrees: the lines of some departments, each with the
# exact fraction num / den (in fen) it was rounded from.
LINES = "SELECT request, ps, pe, fen, num, den FROM lines ORDER BY request, ps"


def settlement_sql(intervals: str, lines: bool = False) -> str:
    """The timed query (totals), or with `lines` the per-line form of the same query."""
    if not lines:
        return SETTLEMENT_SQL.format(intervals=intervals, keep_i="", keep_c="", keep="", final=TOTALS)
    return SETTLEMENT_SQL.format(
        intervals=intervals,
        keep_i=" i.request,",
        keep_c=" c.request,",
        keep=" request, ps, pe, q100 * p100 * (pe - ps) * (10000 - d100) AS num, den,",
        final=LINES,
    )


INTERVAL_COLUMNS = {
    "department": "VARCHAR",
    "provider": "VARCHAR",
    "request": "VARCHAR",
    "item": "VARCHAR",
    "sku": "VARCHAR",
    "type": "VARCHAR",
    "quantity": "DECIMAL(18,2)",
    "from_s": "BIGINT",
    "to_s": "BIGINT",
}


def read_intervals_csv(path: Path) -> str:
    columns = ", ".join(f"'{k}': '{v}'" for k, v in INTERVAL_COLUMNS.items())
    return f"read_csv('{path}', header = true, columns = {{{columns}}})"


def month_starts(zone: str, first_year: int, last_year: int):
    """(year, month, start) for each month, start the Unix second of local midnight of the 1st.

    zoneinfo, not the engine's calendar, so the baseline doesn't borrow the code it checks.
    Zones that skip midnight on the 1st (none in use here) would need the engine's gap rule.
    """
    tz = ZoneInfo(zone)
    for year in range(first_year, last_year + 1):
        for month in range(1, 13):
            yield year, month, int(datetime(year, month, 1, tzinfo=tz).timestamp())


def setup(con, data: Path, zone: str, period: str, now: int) -> None:
    year, month = (int(x) for x in period.split("-"))
    starts = list(month_starts(zone, year - 2, year + 2))
    months = [(s, starts[i + 1][2]) for i, (_, _, s) in enumerate(starts[:-1])]
    con.execute("CREATE TABLE months (start_s BIGINT, end_s BIGINT)")
    con.executemany("INSERT INTO months VALUES (?, ?)", months)
    (window,) = [(s, e) for (y, m, s), (_, e) in zip(starts, months) if (y, m) == (year, month)]
    con.execute(
        "CREATE TABLE win AS SELECT ?::BIGINT AS start_s, ?::BIGINT AS end_s, ?::BIGINT AS now_s",
        [window[0], window[1], now],
    )
    # An open-ended book runs to the largest instant; prices and percents become hundredths.
    con.execute(
        f"""CREATE TABLE price_points AS
            SELECT book, provider, sku, unit,
                   CAST(price * 100 AS HUGEINT) AS p100,
                   from_s, coalesce(until_s, 9223372036854775807) AS until_s
            FROM read_csv('{data / "prices.csv"}', header = true, columns = {{
                'book': 'VARCHAR', 'provider': 'VARCHAR', 'sku': 'VARCHAR', 'unit': 'VARCHAR',
                'per': 'VARCHAR', 'price': 'DECIMAL(15,2)', 'from_s': 'BIGINT', 'until_s': 'BIGINT'}})"""
    )
    con.execute(
        f"""CREATE TABLE discounts AS
            SELECT book, department, CAST(percent * 100 AS HUGEINT) AS d100
            FROM read_csv('{data / "discounts.csv"}', header = true, columns = {{
                'book': 'VARCHAR', 'department': 'VARCHAR', 'percent': 'DECIMAL(5,2)'}})"""
    )


def money(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def figures(rows) -> dict:
    """The query's rows as the engine reports them."""
    out = {"lines": 0, "total": None, "by_department": {}, "by_provider": {}, "by_type": {}}
    for level, department, provider, type_, fen, lines in rows:
        fen = int(fen)
        if level == 0b111:
            out["total"], out["lines"] = money(fen), int(lines)
        elif department is not None:
            out["by_department"][department] = money(fen)
        elif provider is not None:
            out["by_provider"][provider] = money(fen)
        else:
            out["by_type"][type_] = money(fen)
    return out


def timed(con, sql: str, runs: int):
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        rows = con.execute(sql).fetchall()
        times.append((time.perf_counter() - start) * 1e3)
        got = figures(rows)
        if result is not None and got != result:
            sys.exit("DuckDB gave different results on two runs of the same query")
        result = got
    return times, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="directory with the CSV files")
    ap.add_argument("--period", required=True, help="calendar month YYYY-MM")
    ap.add_argument("--zone", default="Asia/Shanghai")
    ap.add_argument("--now", type=int, required=True, help="the clock, Unix seconds")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--lines-for",
        metavar="DEPT,...",
        help="print these departments' lines (untimed, for a diagnosis) instead of timing",
    )
    args = ap.parse_args()
    data = args.data.resolve()
    intervals_csv = read_intervals_csv(data / "intervals.csv")

    con = duckdb.connect()
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    setup(con, data, args.zone, args.period, args.now)

    if args.lines_for:
        departments = ", ".join(f"'{d}'" for d in args.lines_for.split(","))
        only = f"(SELECT * FROM {intervals_csv} WHERE department IN ({departments}))"
        rows = con.execute(settlement_sql(only, lines=True)).fetchall()
        keys = ("request", "from_s", "to_s", "fen", "num", "den")
        json.dump([{k: str(v) if isinstance(v, int) and k in ("num", "den") else v
                    for k, v in zip(keys, row)} for row in rows], sys.stdout)
        return

    variants = {}
    variants["csv"], result = timed(con, settlement_sql(intervals_csv), args.runs)
    con.execute(f"CREATE TABLE intervals AS SELECT * FROM {intervals_csv}")
    variants["table"], again = timed(con, settlement_sql("intervals"), args.runs)
    con.execute("SET threads = 1")
    variants["table_1_thread"], once_more = timed(con, settlement_sql("intervals"), args.runs)
    if again != result or once_more != result:
        sys.exit("DuckDB's results differ between reading the CSV and reading the table")

    json.dump(
        {
            "duckdb_version": duckdb.__version__,
            "threads": threads,
            "figures": result,
            "variants": {
                name: {"runs_ms": [round(t, 1) for t in times], "median_ms": statistics.median(times)}
                for name, times in variants.items()
            },
            "sql": settlement_sql("read_csv('intervals.csv', ...)"),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
