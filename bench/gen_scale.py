"""A deterministic large snapshot for the default rule pack, written as Parquet by DuckDB.

    python bench/gen_scale.py OUT --members 1000000 --orders 10000000 --events 10000000

Every value is a fixed function of the row number (a multiplicative hash, no random
state), so the same sizes always give the same files. Columns and types are those of
rules/schema.yaml; timestamps lie around --as-of (some after it, as in a real export).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path

AS_OF = "2026-11-01T00:00:00+08:00"


def _u(column: str, salt: int) -> str:
    """A number in [0, 1) from a row number: two rounds of a multiplicative hash mod 2^32."""
    first = f"(({column} * 2654435761 + {salt * 97 + 13}) % 4294967296)"
    return f"((({first} * 1664525 + {salt * 31 + 7}) % 4294967296) / 4294967296.0)"


def _pick(column: str, salt: int, options: list[str]) -> str:
    items = ", ".join("'" + option.replace("'", "''") + "'" for option in options)
    return f"([{items}])[1 + CAST(floor({_u(column, salt)} * {len(options)}) AS INTEGER)]"


def generate(out: Path, members: int, orders: int, events: int, as_of: str = AS_OF, threads: int | None = None) -> dict:
    import duckdb

    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"threads": threads or 2, "preserve_insertion_order": False})
    con.execute("SET TimeZone = 'Asia/Shanghai'").fetchall()
    day = 86400
    width = max(6, len(str(members)))
    member_id = f"'M' || lpad(CAST({{i}} AS VARCHAR), {width}, '0')"
    base = f"epoch(CAST('{as_of}' AS TIMESTAMPTZ))"
    started = time.perf_counter()
    statements = {
        "member": f"""
            SELECT {member_id.format(i='i + 1')} AS member_id,
                   {_pick('i', 1, ['王伟', '李娜', '张敏', 'Emma Li', 'Lucas Tan', '陈静', "O'Neil"])} AS name,
                   to_timestamp({base} - 86400 - floor({_u('i', 2)} * 3 * 365 * {day})) AS registered_at,
                   CASE WHEN {_u('i', 3)} < 0.15 THEN NULL
                        ELSE CAST(DATE '1960-01-01' + CAST(floor({_u('i', 4)} * 16000) AS INTEGER) AS DATE) END
                        AS birthday,
                   CAST(floor(pow({_u('i', 5)}, 3) * 30000) AS BIGINT) AS growth_value,
                   CASE WHEN {_u('i', 6)} < 0.1 THEN NULL
                        ELSE {_pick('i', 7, ['normal', 'silver', 'gold', 'platinum'])} END AS tier,
                   {_u('i', 8)} < 0.6 AS opted_in_sms, {_u('i', 9)} < 0.7 AS opted_in_push,
                   {_u('i', 10)} < 0.4 AS opted_in_email,
                   CASE WHEN {_u('i', 11)} < 0.05 THEN ['vip'] WHEN {_u('i', 11)} < 0.1 THEN ['student', 'vip']
                        ELSE CAST([] AS VARCHAR[]) END AS tags,
                   {_pick('i', 12, ['上海', '北京', '广州', '深圳', '杭州', 'Singapore'])} AS city
            FROM range({members}) AS r(i)""",
        "orders": f"""
            SELECT {member_id.format(i=f'1 + CAST(floor(pow({_u("i", 20)}, 2) * {members}) AS BIGINT)')}
                       AS member_id,
                   'O' || lpad(CAST(i + 1 AS VARCHAR), 10, '0') AS order_id,
                   to_timestamp({base} + 2 * 86400 - floor(pow({_u('i', 21)}, 2) * 720 * {day})) AS placed_at,
                   CAST(round(1 + {_u('i', 22)} * {_u('i', 23)} * 2000, 2) AS DECIMAL(12, 2)) AS amount,
                   {_pick('i', 24, ['apparel', 'beauty', 'grocery', 'electronics', 'home', 'baby'])} AS category
            FROM range({orders}) AS r(i)""",
        "events": f"""
            SELECT {member_id.format(i=f'1 + CAST(floor(pow({_u("i", 30)}, 2) * {members}) AS BIGINT)')}
                       AS member_id,
                   to_timestamp({base} + 86400 - floor({_u('i', 31)} * 200 * {day})) AS at,
                   {_pick('i', 32, ['read', 'read', 'login', 'login', 'search', 'add_to_cart', 'share',
                                    'interact', 'refer'])} AS type
            FROM range({events}) AS r(i)""",
        "benefits": f"""
            SELECT {member_id.format(i=f'1 + (i % {max(members, 1)})')} AS member_id,
                   to_timestamp({base} - floor({_u('i', 40)} * 365 * {day})) AS granted_at,
                   {_pick('i', 41, ['free_shipping', 'coupon_20', 'coupon_50', 'double_points'])} AS kind,
                   to_timestamp({base} - 30 * 86400 + floor({_u('i', 42)} * 90 * {day})) AS expires_at,
                   CASE WHEN {_u('i', 43)} < 0.5 THEN to_timestamp({base} - floor({_u('i', 44)} * 30 * {day}))
                        END AS claimed_at,
                   CASE WHEN {_u('i', 45)} < 0.25 THEN to_timestamp({base} - floor({_u('i', 46)} * 20 * {day}))
                        END AS used_at
            FROM range({members}) AS r(i)""",
    }
    sizes = {}
    for table, select in statements.items():
        path = out / f"{table}.parquet"
        con.execute(f"COPY ({select}) TO '{path}' (FORMAT parquet, COMPRESSION zstd)").fetchall()
        sizes[table] = path.stat().st_size
    con.close()
    return {"seconds": time.perf_counter() - started, "bytes": sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=10_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--as-of", default=AS_OF)
    args = parser.parse_args()
    datetime.fromisoformat(args.as_of)
    result = generate(args.out, args.members, args.orders, args.events, args.as_of)
    total = sum(result["bytes"].values()) / 2 ** 20
    print(f"wrote {args.out}: {args.members:,} members, {args.orders:,} orders, {args.events:,} events "
          f"({total:.0f} MiB) in {result['seconds']:.1f} s")


if __name__ == "__main__":
    main()
