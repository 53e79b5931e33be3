SET TIME ZONE 'Asia/Shanghai';

WITH orders_per_member AS (
  SELECT
    "e"."member_id" AS "_mr_key",
    MAX("e"."placed_at") FILTER(WHERE
      NOT (
        "e"."placed_at" IS NULL
      )) AS "_mr_orders_last_1",
    CAST(COUNT(*) FILTER(WHERE
      "e"."placed_at" > (
        CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) + (
          INTERVAL '1 MICROSECOND' * -CAST(2592000000000 AS BIGINT)
        )
      )) AS BIGINT) AS "_mr_orders_count_2",
    CAST(SUM("e"."amount") FILTER(WHERE
      "e"."placed_at" > (
        CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) + (
          INTERVAL '1 MICROSECOND' * -CAST(2592000000000 AS BIGINT)
        )
      )) AS DECIMAL(38, 18)) AS "_mr_orders_sum_3",
    CAST(COUNT(*) AS BIGINT) AS "_mr_orders_count_7"
  FROM "orders" AS e
  WHERE
    "e"."placed_at" <= CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
  GROUP BY
    "e"."member_id"
), events_per_member AS (
  SELECT
    "e"."member_id" AS "_mr_key",
    CAST(COUNT(*) FILTER(WHERE
      (
        "e"."at" > (
          CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) + (
            INTERVAL '1 MICROSECOND' * -CAST(2592000000000 AS BIGINT)
          )
        )
      )
      AND (
        "e"."type" IN ('read', 'login')
      )) AS BIGINT) AS "_mr_events_count_4",
    CAST(COUNT(*) FILTER(WHERE
      (
        "e"."at" > (
          CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) + (
            INTERVAL '1 MICROSECOND' * -CAST(2592000000000 AS BIGINT)
          )
        )
      )
      AND (
        "e"."type" IN ('search', 'add_to_cart', 'share')
      )) AS BIGINT) AS "_mr_events_count_5",
    CAST(COUNT(*) FILTER(WHERE
      (
        "e"."at" > (
          CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) + (
            INTERVAL '1 MICROSECOND' * -CAST(2592000000000 AS BIGINT)
          )
        )
      )
      AND (
        "e"."type" = 'interact'
      )) AS BIGINT) AS "_mr_events_count_6",
    CAST(COUNT(*) FILTER(WHERE
      (
        "e"."at" > (
          CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) + (
            INTERVAL '1 MICROSECOND' * -CAST(7776000000000 AS BIGINT)
          )
        )
      )
      AND (
        "e"."type" = 'share'
      )) AS BIGINT) AS "_mr_events_count_8"
  FROM "events" AS e
  WHERE
    "e"."at" <= CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
  GROUP BY
    "e"."member_id"
), members AS (
  SELECT
    "m"."member_id" AS "member_id",
    "m"."name" AS "name",
    "m"."registered_at" AS "registered_at",
    "m"."birthday" AS "birthday",
    "m"."growth_value" AS "growth_value",
    "m"."tier" AS "current_tier",
    "m"."opted_in_sms" AS "opted_in_sms",
    "m"."tags" AS "tags",
    "orders_per_member"."_mr_orders_last_1" AS "_mr_orders_last_1",
    COALESCE("orders_per_member"."_mr_orders_count_2", CAST(0 AS BIGINT)) AS "_mr_orders_count_2",
    COALESCE("orders_per_member"."_mr_orders_sum_3", CAST(0 AS DECIMAL(38, 18))) AS "_mr_orders_sum_3",
    COALESCE("orders_per_member"."_mr_orders_count_7", CAST(0 AS BIGINT)) AS "_mr_orders_count_7",
    COALESCE("events_per_member"."_mr_events_count_4", CAST(0 AS BIGINT)) AS "_mr_events_count_4",
    COALESCE("events_per_member"."_mr_events_count_5", CAST(0 AS BIGINT)) AS "_mr_events_count_5",
    COALESCE("events_per_member"."_mr_events_count_6", CAST(0 AS BIGINT)) AS "_mr_events_count_6",
    COALESCE("events_per_member"."_mr_events_count_8", CAST(0 AS BIGINT)) AS "_mr_events_count_8"
  FROM "member" AS m
  LEFT JOIN orders_per_member AS orders_per_member
    ON "orders_per_member"."_mr_key" = "m"."member_id"
  LEFT JOIN events_per_member AS events_per_member
    ON "events_per_member"."_mr_key" = "m"."member_id"
), step1_tier_index_metrics_segments AS (
  SELECT
    *,
    CAST("growth_value" AS BIGINT) AS "_mr_tier_by",
    CAST(CASE
      WHEN (
        CASE "current_tier" WHEN 'normal' THEN 0 WHEN 'silver' THEN 1 WHEN 'gold' THEN 2 END > CASE
          WHEN CAST("growth_value" AS BIGINT) >= CAST(5000 AS BIGINT)
          THEN 2
          WHEN CAST("growth_value" AS BIGINT) >= CAST(1000 AS BIGINT)
          THEN 1
          WHEN CAST("growth_value" AS BIGINT) >= CAST(0 AS BIGINT)
          THEN 0
          ELSE 0
        END
      )
      AND (
        NOT COALESCE(
          (
            CAST(EXTRACT(DOY FROM CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)) AS BIGINT) = 1
          ),
          FALSE
        )
      )
      THEN CASE "current_tier" WHEN 'normal' THEN 0 WHEN 'silver' THEN 1 WHEN 'gold' THEN 2 END
      ELSE CASE
        WHEN CAST("growth_value" AS BIGINT) >= CAST(5000 AS BIGINT)
        THEN 2
        WHEN CAST("growth_value" AS BIGINT) >= CAST(1000 AS BIGINT)
        THEN 1
        WHEN CAST("growth_value" AS BIGINT) >= CAST(0 AS BIGINT)
        THEN 0
        ELSE 0
      END
    END AS BIGINT) AS "_mr_tier_index",
    CAST(CAST(EXTRACT(epoch FROM CAST(CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE) AS TIMESTAMP) - CAST(CAST("_mr_orders_last_1" AS DATE) AS TIMESTAMP)) / 86400 AS BIGINT) AS BIGINT) AS "recency_days",
    CAST("_mr_orders_count_2" AS BIGINT) AS "frequency",
    CAST("_mr_orders_sum_3" AS DECIMAL(38, 18)) AS "monetary",
    COALESCE(
      CASE
        WHEN (
          'vip' IS NULL
        ) OR (
          "tags" IS NULL
        )
        THEN CAST(NULL AS BOOLEAN)
        WHEN CASE WHEN 'vip' IS NULL THEN NULL ELSE COALESCE('vip' = ANY(
          "tags"
        ), FALSE) END
        THEN TRUE
        WHEN ARRAY_LENGTH(ARRAY(SELECT
          x
        FROM UNNEST("tags") AS _t1(x)
        WHERE
          NOT (
            x IS NULL
          )), 1) < ARRAY_LENGTH("tags", 1)
        THEN CAST(NULL AS BOOLEAN)
        ELSE FALSE
      END,
      FALSE
    ) AS "vip",
    COALESCE((
      "_mr_events_count_8" >= 5
    ), FALSE) AS "seed_user"
  FROM members
), step2_metrics_tier_classes AS (
  SELECT
    *,
    CAST((
      SELECT
        CAST(CAST(DIV(
          (
            CAST(TRUNC(CAST(SUM("monetary") AS DECIMAL(38, 18))) AS DECIMAL(1000, 0)) * CAST(1000000000000000000 AS DECIMAL(1000, 0))
          ) + CAST((
            CAST(SUM("monetary") AS DECIMAL(38, 18)) - TRUNC(CAST(SUM("monetary") AS DECIMAL(38, 18)))
          ) * CAST(1000000000000000000 AS DECIMAL(1000, 0)) AS DECIMAL(1000, 0)),
          NULLIF(CAST(COUNT("monetary") AS DECIMAL(1000, 0)), 0)
        ) AS DECIMAL(38, 0)) * CAST('0.000000000000000001' AS DECIMAL(38, 18)) AS DECIMAL(38, 18))
      FROM step1_tier_index_metrics_segments
      WHERE
        (
          "frequency" > 0
        )
    ) AS DECIMAL(38, 18)) AS "avg_spend",
    CAST(CAST((
      CAST((
        CAST((
          CAST(1 AS BIGINT) * "_mr_events_count_4"
        ) AS BIGINT) + (
          CAST(3 AS BIGINT) * "_mr_events_count_5"
        )
      ) AS BIGINT) + (
        CAST(5 AS BIGINT) * "_mr_events_count_6"
      )
    ) AS BIGINT) + (
      CAST(5 AS BIGINT) * "frequency"
    ) AS BIGINT) AS "activity",
    CASE "_mr_tier_index" WHEN 0 THEN 'normal' WHEN 1 THEN 'silver' WHEN 2 THEN 'gold' END AS "tier",
    CASE "_mr_tier_index" WHEN 0 THEN 'silver' WHEN 1 THEN 'gold' END AS "next_tier",
    CAST(CASE
      WHEN (
        "_mr_tier_by" IS NULL
      )
      OR (
        CASE "_mr_tier_index"
          WHEN 0
          THEN CAST(1000 AS BIGINT)
          WHEN 1
          THEN CAST(5000 AS BIGINT)
        END IS NULL
      )
      THEN NULL
      WHEN (
        CASE "_mr_tier_index"
          WHEN 0
          THEN CAST(1000 AS BIGINT)
          WHEN 1
          THEN CAST(5000 AS BIGINT)
        END - "_mr_tier_by"
      ) < 0
      THEN CAST(0 AS BIGINT)
      ELSE CASE "_mr_tier_index"
        WHEN 0
        THEN CAST(1000 AS BIGINT)
        WHEN 1
        THEN CAST(5000 AS BIGINT)
      END - "_mr_tier_by"
    END AS BIGINT) AS "tier_gap",
    CAST(CASE
      WHEN (
        "_mr_tier_by" IS NULL
      )
      OR (
        CASE "_mr_tier_index"
          WHEN 0
          THEN CAST(1000 AS BIGINT)
          WHEN 1
          THEN CAST(5000 AS BIGINT)
        END IS NULL
      )
      THEN NULL
      WHEN "_mr_tier_by" <= CASE "_mr_tier_index"
        WHEN 0
        THEN CAST(0 AS BIGINT)
        WHEN 1
        THEN CAST(1000 AS BIGINT)
        WHEN 2
        THEN CAST(5000 AS BIGINT)
      END
      THEN CAST('0' AS DECIMAL(38, 18))
      WHEN "_mr_tier_by" >= CASE "_mr_tier_index"
        WHEN 0
        THEN CAST(1000 AS BIGINT)
        WHEN 1
        THEN CAST(5000 AS BIGINT)
      END
      THEN CAST('1' AS DECIMAL(38, 18))
      ELSE CAST(CAST((
        DIV(
          DIV(
            CAST((
              "_mr_tier_by" - CASE "_mr_tier_index"
                WHEN 0
                THEN CAST(0 AS BIGINT)
                WHEN 1
                THEN CAST(1000 AS BIGINT)
                WHEN 2
                THEN CAST(5000 AS BIGINT)
              END
            ) AS DECIMAL(1000, 0)) * CAST(1000000000000000000 AS DECIMAL(1000, 0)),
            NULLIF(
              CAST(CASE "_mr_tier_index"
                WHEN 0
                THEN CAST(1000 AS BIGINT)
                WHEN 1
                THEN CAST(4000 AS BIGINT)
              END AS DECIMAL(1000, 0)),
              0
            )
          ),
          100000000000000
        ) * 100000000000000
      ) AS DECIMAL(38, 0)) * CAST('0.000000000000000001' AS DECIMAL(38, 18)) AS DECIMAL(38, 18))
    END AS DECIMAL(38, 18)) AS "_mr_tier_progress",
    CAST(NULL AS BIGINT) AS "_mr_days_to_next_tier",
    CASE
      WHEN (
        "registered_at" >= (
          CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) + (
            INTERVAL '1 MICROSECOND' * -CAST(2592000000000 AS BIGINT)
          )
        )
      )
      AND (
        "_mr_orders_count_7" = 0
      )
      THEN 'new'
      WHEN "recency_days" <= 30
      THEN 'active'
      WHEN "recency_days" <= 90
      THEN 'silent'
      WHEN "recency_days" <= 180
      THEN 'dormant'
      WHEN "recency_days" > 180
      THEN 'churned'
      ELSE 'potential'
    END AS "lifecycle"
  FROM step1_tier_index_metrics_segments
), step3_classes AS (
  SELECT
    *,
    CASE
      WHEN (
        (
          "recency_days" <= 15
        ) AND (
          "frequency" >= 8
        )
      )
      AND (
        "monetary" >= "avg_spend"
      )
      THEN 'best'
      WHEN (
        "frequency" < 8
      ) AND (
        "monetary" >= "avg_spend"
      )
      THEN 'breakthrough'
      WHEN (
        "frequency" >= 8
      ) AND (
        "monetary" < "avg_spend"
      )
      THEN 'maintain'
      WHEN (
        (
          "recency_days" > 15
        ) AND (
          "frequency" < 8
        )
      )
      AND (
        "monetary" < "avg_spend"
      )
      THEN 'general'
      ELSE 'unclassified'
    END AS "rfm"
  FROM step2_metrics_tier_classes
)
SELECT
  "member_id" AS "member_id",
  "tier" AS "tier",
  "next_tier" AS "next_tier",
  "tier_gap" AS "tier_gap",
  "_mr_tier_progress" AS "tier_progress",
  "_mr_days_to_next_tier" AS "days_to_next_tier",
  "rfm" AS "rfm",
  "lifecycle" AS "lifecycle",
  ARRAY(SELECT
    x
  FROM UNNEST(ARRAY[CASE WHEN "vip" THEN 'vip' END, CASE WHEN "seed_user" THEN 'seed_user' END]) AS _t0(x)
  WHERE
    NOT (
      x IS NULL
    )) AS "segments"
FROM step3_classes
ORDER BY
  "member_id";
