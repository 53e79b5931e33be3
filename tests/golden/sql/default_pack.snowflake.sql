ALTER SESSION SET TIMEZONE = 'Asia/Shanghai';

WITH orders_per_member AS (
  SELECT
    "e"."member_id" AS "_mr_key",
    MAX(IFF(NOT (
      "e"."placed_at" IS NULL
    ), "e"."placed_at", NULL)) AS "_mr_orders_last_1",
    CAST(COUNT_IF(
      "e"."placed_at" > TIMESTAMPADD(
        MICROSECOND,
        -CAST(2592000000000 AS BIGINT),
        CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
      )
    ) AS BIGINT) AS "_mr_orders_count_2",
    CAST(SUM(
      IFF(
        "e"."placed_at" > TIMESTAMPADD(
          MICROSECOND,
          -CAST(2592000000000 AS BIGINT),
          CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
        ),
        "e"."amount",
        NULL
      )
    ) AS DECIMAL(38, 18)) AS "_mr_orders_sum_3",
    CAST(COUNT(*) AS BIGINT) AS "_mr_orders_count_4",
    CAST(SUM(
      IFF(
        "e"."placed_at" > TIMESTAMPADD(
          MICROSECOND,
          -CAST(7776000000000 AS BIGINT),
          CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
        ),
        "e"."amount",
        NULL
      )
    ) AS DECIMAL(38, 18)) AS "_mr_orders_sum_5",
    CAST(SUM(
      IFF(
        (
          CAST("e"."placed_at" AS DATE) = CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)
        ),
        "e"."amount",
        NULL
      )
    ) AS DECIMAL(38, 18)) AS "_mr_orders_sum_6"
  FROM "orders" AS e
  WHERE
    "e"."placed_at" <= CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
  GROUP BY
    "e"."member_id"
), events_per_member AS (
  SELECT
    "e"."member_id" AS "_mr_key",
    CAST(COUNT_IF(
      (
        "e"."at" > TIMESTAMPADD(
          MICROSECOND,
          -CAST(2592000000000 AS BIGINT),
          CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
        )
      )
      AND (
        "e"."type" IN ('read', 'login')
      )
    ) AS BIGINT) AS "_mr_events_count_7",
    CAST(COUNT_IF(
      (
        "e"."at" > TIMESTAMPADD(
          MICROSECOND,
          -CAST(2592000000000 AS BIGINT),
          CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
        )
      )
      AND (
        "e"."type" IN ('search', 'add_to_cart', 'share')
      )
    ) AS BIGINT) AS "_mr_events_count_8",
    CAST(COUNT_IF(
      (
        "e"."at" > TIMESTAMPADD(
          MICROSECOND,
          -CAST(2592000000000 AS BIGINT),
          CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
        )
      )
      AND (
        "e"."type" = 'interact'
      )
    ) AS BIGINT) AS "_mr_events_count_9",
    CAST(COUNT_IF(
      (
        "e"."at" > TIMESTAMPADD(
          MICROSECOND,
          -CAST(7776000000000 AS BIGINT),
          CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
        )
      )
      AND (
        "e"."type" = 'share'
      )
    ) AS BIGINT) AS "_mr_events_count_11",
    CAST(COUNT_IF(
      (
        "e"."at" > TIMESTAMPADD(
          MICROSECOND,
          -CAST(7776000000000 AS BIGINT),
          CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
        )
      )
      AND (
        "e"."type" = 'refer'
      )
    ) AS BIGINT) AS "_mr_events_count_12"
  FROM "events" AS e
  WHERE
    "e"."at" <= CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
  GROUP BY
    "e"."member_id"
), benefits_per_member AS (
  SELECT
    "e"."member_id" AS "_mr_key",
    CAST(COUNT_IF(
      (
        (
          (
            "e"."used_at" IS NULL
          )
          AND (
            "e"."expires_at" > CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
          )
        )
        AND (
          "e"."expires_at" <= TIMESTAMPADD(
            MICROSECOND,
            CAST(259200000000 AS BIGINT),
            CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
          )
        )
      )
    ) AS BIGINT) AS "_mr_benefits_count_14",
    CAST(COUNT_IF(
      (
        (
          (
            "e"."claimed_at" IS NULL
          ) AND (
            "e"."used_at" IS NULL
          )
        )
        AND (
          "e"."expires_at" > CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
        )
      )
    ) AS BIGINT) AS "_mr_benefits_count_15"
  FROM "benefits" AS e
  WHERE
    "e"."granted_at" <= CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
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
    "m"."opted_in_push" AS "opted_in_push",
    "m"."opted_in_email" AS "opted_in_email",
    "m"."tags" AS "tags",
    "m"."city" AS "city",
    "orders_per_member"."_mr_orders_last_1" AS "_mr_orders_last_1",
    COALESCE("orders_per_member"."_mr_orders_count_2", CAST(0 AS BIGINT)) AS "_mr_orders_count_2",
    COALESCE("orders_per_member"."_mr_orders_sum_3", CAST(0 AS DECIMAL(38, 18))) AS "_mr_orders_sum_3",
    COALESCE("orders_per_member"."_mr_orders_count_4", CAST(0 AS BIGINT)) AS "_mr_orders_count_4",
    COALESCE("orders_per_member"."_mr_orders_sum_5", CAST(0 AS DECIMAL(38, 18))) AS "_mr_orders_sum_5",
    COALESCE("orders_per_member"."_mr_orders_sum_6", CAST(0 AS DECIMAL(38, 18))) AS "_mr_orders_sum_6",
    COALESCE("orders_per_member"."_mr_orders_count_2", CAST(0 AS BIGINT)) AS "_mr_orders_count_10",
    COALESCE("events_per_member"."_mr_events_count_7", CAST(0 AS BIGINT)) AS "_mr_events_count_7",
    COALESCE("events_per_member"."_mr_events_count_8", CAST(0 AS BIGINT)) AS "_mr_events_count_8",
    COALESCE("events_per_member"."_mr_events_count_9", CAST(0 AS BIGINT)) AS "_mr_events_count_9",
    COALESCE("events_per_member"."_mr_events_count_11", CAST(0 AS BIGINT)) AS "_mr_events_count_11",
    COALESCE("events_per_member"."_mr_events_count_12", CAST(0 AS BIGINT)) AS "_mr_events_count_12",
    COALESCE("events_per_member"."_mr_events_count_12", CAST(0 AS BIGINT)) AS "_mr_events_count_13",
    COALESCE("benefits_per_member"."_mr_benefits_count_14", CAST(0 AS BIGINT)) AS "_mr_benefits_count_14",
    COALESCE("benefits_per_member"."_mr_benefits_count_15", CAST(0 AS BIGINT)) AS "_mr_benefits_count_15"
  FROM "member" AS m
  LEFT JOIN orders_per_member AS orders_per_member
    ON "orders_per_member"."_mr_key" = "m"."member_id"
  LEFT JOIN events_per_member AS events_per_member
    ON "events_per_member"."_mr_key" = "m"."member_id"
  LEFT JOIN benefits_per_member AS benefits_per_member
    ON "benefits_per_member"."_mr_key" = "m"."member_id"
), step1_metrics_segments AS (
  SELECT
    *,
    CAST(DATEDIFF(
      DAY,
      CAST("_mr_orders_last_1" AS DATE),
      CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)
    ) AS BIGINT) AS "recency_days",
    CAST("_mr_orders_count_2" AS BIGINT) AS "frequency",
    CAST("_mr_orders_sum_3" AS DECIMAL(38, 18)) AS "monetary",
    CAST("_mr_orders_count_4" AS BIGINT) AS "orders_total",
    CAST("_mr_orders_sum_5" AS DECIMAL(38, 18)) AS "spend_90d",
    CAST("_mr_orders_sum_6" AS DECIMAL(38, 18)) AS "spend_today",
    CAST("_mr_events_count_7" AS BIGINT) AS "light_events",
    CAST("_mr_events_count_8" AS BIGINT) AS "medium_events",
    CAST(CAST("_mr_events_count_9" AS BIGINT) + "_mr_orders_count_10" AS BIGINT) AS "core_events",
    CAST("_mr_events_count_11" AS BIGINT) AS "recent_shares",
    CAST("_mr_events_count_12" AS BIGINT) AS "recent_referrals",
    CAST(CAST(CAST(1 AS DECIMAL(38, 0)) * CAST("_mr_orders_sum_5" AS DECIMAL(38, 18)) AS DECIMAL(38, 18)) + CAST((
      CAST(50 AS BIGINT) * "_mr_events_count_13"
    ) AS DECIMAL(38, 18)) AS DECIMAL(38, 18)) AS "growth_90d",
    CAST(DATEDIFF(
      DAY,
      CAST("registered_at" AS DATE),
      CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)
    ) AS BIGINT) AS "days_since_registration",
    CAST(DATEDIFF(
      DAY,
      CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE),
      CASE
        WHEN DATE_FROM_PARTS(
          CAST(DATE_PART(YEAR, CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)) AS INT),
          CAST(DATE_PART(MONTH, "birthday") AS INT),
          CASE
            WHEN (
              (
                CAST(DATE_PART(MONTH, "birthday") AS INT) = 2
              )
              AND (
                CAST(DATE_PART(DAY, "birthday") AS INT) = 29
              )
            )
            AND (
              NOT (
                (
                  (
                    (
                      CAST(DATE_PART(YEAR, CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)) AS INT) % 4
                    ) = 0
                  )
                  AND (
                    (
                      CAST(DATE_PART(YEAR, CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)) AS INT) % 100
                    ) <> 0
                  )
                )
                OR (
                  (
                    CAST(DATE_PART(YEAR, CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)) AS INT) % 400
                  ) = 0
                )
              )
            )
            THEN 28
            ELSE CAST(DATE_PART(DAY, "birthday") AS INT)
          END
        ) < CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)
        THEN DATE_FROM_PARTS(
          CAST(DATE_PART(YEAR, CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)) AS INT) + 1,
          CAST(DATE_PART(MONTH, "birthday") AS INT),
          CASE
            WHEN (
              (
                CAST(DATE_PART(MONTH, "birthday") AS INT) = 2
              )
              AND (
                CAST(DATE_PART(DAY, "birthday") AS INT) = 29
              )
            )
            AND (
              NOT (
                (
                  (
                    (
                      (
                        CAST(DATE_PART(YEAR, CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)) AS INT) + 1
                      ) % 4
                    ) = 0
                  )
                  AND (
                    (
                      (
                        CAST(DATE_PART(YEAR, CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)) AS INT) + 1
                      ) % 100
                    ) <> 0
                  )
                )
                OR (
                  (
                    (
                      CAST(DATE_PART(YEAR, CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)) AS INT) + 1
                    ) % 400
                  ) = 0
                )
              )
            )
            THEN 28
            ELSE CAST(DATE_PART(DAY, "birthday") AS INT)
          END
        )
        ELSE DATE_FROM_PARTS(
          CAST(DATE_PART(YEAR, CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)) AS INT),
          CAST(DATE_PART(MONTH, "birthday") AS INT),
          CASE
            WHEN (
              (
                CAST(DATE_PART(MONTH, "birthday") AS INT) = 2
              )
              AND (
                CAST(DATE_PART(DAY, "birthday") AS INT) = 29
              )
            )
            AND (
              NOT (
                (
                  (
                    (
                      CAST(DATE_PART(YEAR, CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)) AS INT) % 4
                    ) = 0
                  )
                  AND (
                    (
                      CAST(DATE_PART(YEAR, CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)) AS INT) % 100
                    ) <> 0
                  )
                )
                OR (
                  (
                    CAST(DATE_PART(YEAR, CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)) AS INT) % 400
                  ) = 0
                )
              )
            )
            THEN 28
            ELSE CAST(DATE_PART(DAY, "birthday") AS INT)
          END
        )
      END
    ) AS BIGINT) AS "days_to_birthday",
    CAST("_mr_benefits_count_14" AS BIGINT) AS "benefits_expiring_soon",
    CAST("_mr_benefits_count_15" AS BIGINT) AS "benefits_unclaimed",
    COALESCE((
      (
        "opted_in_sms" OR "opted_in_push"
      ) OR "opted_in_email"
    ), FALSE) AS "reachable"
  FROM members
), step2_tier_index_metrics_classes_segments AS (
  SELECT
    s.*,
    CAST("growth_value" AS BIGINT) AS "_mr_tier_by",
    CAST(CASE
      WHEN (
        CASE "current_tier"
          WHEN 'normal'
          THEN 0
          WHEN 'silver'
          THEN 1
          WHEN 'gold'
          THEN 2
          WHEN 'platinum'
          THEN 3
        END > CASE
          WHEN CAST("growth_value" AS BIGINT) >= CAST(20000 AS BIGINT)
          THEN 3
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
            CAST(DAYOFYEAR(CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ) AS DATE)) AS BIGINT) = 1
          ),
          FALSE
        )
      )
      THEN CASE "current_tier"
        WHEN 'normal'
        THEN 0
        WHEN 'silver'
        THEN 1
        WHEN 'gold'
        THEN 2
        WHEN 'platinum'
        THEN 3
      END
      ELSE CASE
        WHEN CAST("growth_value" AS BIGINT) >= CAST(20000 AS BIGINT)
        THEN 3
        WHEN CAST("growth_value" AS BIGINT) >= CAST(5000 AS BIGINT)
        THEN 2
        WHEN CAST("growth_value" AS BIGINT) >= CAST(1000 AS BIGINT)
        THEN 1
        WHEN CAST("growth_value" AS BIGINT) >= CAST(0 AS BIGINT)
        THEN 0
        ELSE 0
      END
    END AS BIGINT) AS "_mr_tier_index",
    CAST("growth_90d" AS DECIMAL(38, 18)) AS "_mr_tier_earned",
    CAST((
      SELECT
        CAST(CAST((
          CAST(CAST(SUM("monetary") AS DECIMAL(38, 18)) * CAST(1000000000000000000 AS DECIMAL(38, 0)) AS DECIMAL(38, 0)) - (
            CAST(CAST(SUM("monetary") AS DECIMAL(38, 18)) * CAST(1000000000000000000 AS DECIMAL(38, 0)) AS DECIMAL(38, 0)) % NULLIF(CAST(COUNT("monetary") AS DECIMAL(38, 0)), 0)
          )
        ) / NULLIF(CAST(COUNT("monetary") AS DECIMAL(38, 0)), 0) AS DECIMAL(38, 0)) * CAST('0.000000000000000001' AS DECIMAL(38, 18)) AS DECIMAL(38, 18))
      FROM step1_metrics_segments
      WHERE
        (
          "frequency" > 0
        )
    ) AS DECIMAL(38, 18)) AS "avg_spend",
    CAST(COALESCE(
      CAST(6 AS BIGINT) - CASE
        WHEN "recency_days" IS NULL
        THEN CAST(NULL AS BIGINT)
        ELSE CAST(CAST((
          (
            (
              (
                5 * CAST("_mr_w"."_mr_w2" AS BIGINT)
              ) + CAST("_mr_w"."_mr_w1" AS BIGINT)
            ) - 1
          ) - (
            (
              (
                (
                  5 * CAST("_mr_w"."_mr_w2" AS BIGINT)
                ) + CAST("_mr_w"."_mr_w1" AS BIGINT)
              ) - 1
            ) % CAST("_mr_w"."_mr_w1" AS BIGINT)
          )
        ) / CAST("_mr_w"."_mr_w1" AS BIGINT) AS DECIMAL(38, 0)) AS BIGINT)
      END,
      1
    ) AS BIGINT) AS "r_score",
    CAST(COALESCE(
      CASE
        WHEN CASE WHEN "frequency" = 0 THEN NULL ELSE "frequency" END IS NULL
        THEN CAST(NULL AS BIGINT)
        ELSE CAST(CAST((
          (
            (
              (
                5 * CAST("_mr_w"."_mr_w4" AS BIGINT)
              ) + CAST("_mr_w"."_mr_w3" AS BIGINT)
            ) - 1
          ) - (
            (
              (
                (
                  5 * CAST("_mr_w"."_mr_w4" AS BIGINT)
                ) + CAST("_mr_w"."_mr_w3" AS BIGINT)
              ) - 1
            ) % CAST("_mr_w"."_mr_w3" AS BIGINT)
          )
        ) / CAST("_mr_w"."_mr_w3" AS BIGINT) AS DECIMAL(38, 0)) AS BIGINT)
      END,
      1
    ) AS BIGINT) AS "f_score",
    CAST(COALESCE(
      CASE
        WHEN CASE WHEN "monetary" = CAST(0 AS DECIMAL(38, 18)) THEN NULL ELSE "monetary" END IS NULL
        THEN CAST(NULL AS BIGINT)
        ELSE CAST(CAST((
          (
            (
              (
                5 * CAST("_mr_w"."_mr_w6" AS BIGINT)
              ) + CAST("_mr_w"."_mr_w5" AS BIGINT)
            ) - 1
          ) - (
            (
              (
                (
                  5 * CAST("_mr_w"."_mr_w6" AS BIGINT)
                ) + CAST("_mr_w"."_mr_w5" AS BIGINT)
              ) - 1
            ) % CAST("_mr_w"."_mr_w5" AS BIGINT)
          )
        ) / CAST("_mr_w"."_mr_w5" AS BIGINT) AS DECIMAL(38, 0)) AS BIGINT)
      END,
      1
    ) AS BIGINT) AS "m_score",
    CAST((
      SELECT
        MIN("_mr_v")
      FROM (
        SELECT
          "_mr_v",
          COUNT(*) OVER (ORDER BY "_mr_v" RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS "_mr_c",
          COUNT(*) OVER () AS "_mr_n"
        FROM (
          SELECT
            "spend_90d" AS "_mr_v"
          FROM step1_metrics_segments
          WHERE
            (
              "spend_90d" > 0
            ) AND (
              NOT (
                "spend_90d" IS NULL
              )
            )
        ) AS _mr_values
      ) AS _mr_ranked
      WHERE
        (
          "_mr_c" >= CEIL(CAST('0.8' AS DECIMAL(38, 18)) * "_mr_n")
        )
        AND (
          "_mr_c" >= 1
        )
    ) AS DECIMAL(38, 18)) AS "spend_90d_top20",
    CAST(CAST((
      CAST((
        CAST(1 AS BIGINT) * "light_events"
      ) AS BIGINT) + (
        CAST(3 AS BIGINT) * "medium_events"
      )
    ) AS BIGINT) + (
      CAST(5 AS BIGINT) * "core_events"
    ) AS BIGINT) AS "activity",
    CAST(CASE
      WHEN "growth_90d" IS NULL
      THEN CAST(NULL AS BIGINT)
      ELSE CAST("_mr_w"."_mr_w7" AS BIGINT)
    END AS BIGINT) AS "leaderboard_rank",
    CASE
      WHEN (
        "registered_at" > TIMESTAMPADD(
          MICROSECOND,
          -CAST(2592000000000 AS BIGINT),
          CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMPTZ)
        )
      )
      AND (
        "orders_total" = 0
      )
      THEN 'new'
      WHEN COALESCE("recency_days", 9999) <= 30
      THEN 'active'
      WHEN COALESCE("recency_days", 9999) <= 90
      THEN 'silent'
      WHEN COALESCE("recency_days", 9999) <= 180
      THEN 'dormant'
      WHEN (
        NOT (
          "recency_days" IS NULL
        )
      ) AND (
        "recency_days" > 180
      )
      THEN 'churned'
      ELSE 'potential'
    END AS "lifecycle",
    COALESCE((
      (
        "recent_shares" >= 5
      ) OR (
        "recent_referrals" >= 2
      )
    ), FALSE) AS "seed_user",
    COALESCE((
      COALESCE("days_to_birthday", 999) <= 6
    ), FALSE) AS "birthday_this_week",
    COALESCE((
      "benefits_expiring_soon" > 0
    ), FALSE) AS "benefit_expiring",
    COALESCE((
      "benefits_unclaimed" > 0
    ), FALSE) AS "benefit_unclaimed",
    COALESCE((
      "spend_90d" >= 3000
    ), FALSE) AS "high_value",
    COALESCE((
      "orders_total" >= 2
    ), FALSE) AS "repurchaser"
  FROM step1_metrics_segments AS s
  JOIN (
    SELECT
      "member_id" AS "_mr_w_key",
      COUNT("recency_days") OVER () AS "_mr_w1",
      COUNT("recency_days") OVER (ORDER BY "recency_days" ASC RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS "_mr_w2",
      COUNT(CASE WHEN "frequency" = 0 THEN NULL ELSE "frequency" END) OVER () AS "_mr_w3",
      COUNT(CASE WHEN "frequency" = 0 THEN NULL ELSE "frequency" END) OVER (
        ORDER BY CASE WHEN "frequency" = 0 THEN NULL ELSE "frequency" END ASC
        RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
      ) AS "_mr_w4",
      COUNT(CASE WHEN "monetary" = CAST(0 AS DECIMAL(38, 18)) THEN NULL ELSE "monetary" END) OVER () AS "_mr_w5",
      COUNT(CASE WHEN "monetary" = CAST(0 AS DECIMAL(38, 18)) THEN NULL ELSE "monetary" END) OVER (
        ORDER BY CASE WHEN "monetary" = CAST(0 AS DECIMAL(38, 18)) THEN NULL ELSE "monetary" END ASC
        RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
      ) AS "_mr_w6",
      RANK() OVER (ORDER BY "growth_90d" DESC NULLS LAST) AS "_mr_w7"
    FROM step1_metrics_segments
  ) AS _mr_w
    ON "_mr_w"."_mr_w_key" = "s"."member_id"
), step3_metrics_tier_classes_segments AS (
  SELECT
    *,
    COALESCE("monetary" >= "avg_spend", FALSE) AS "above_avg_spend",
    CAST(CAST((
      CAST((
        CAST("r_score" AS BIGINT) * 100
      ) AS BIGINT) + (
        CAST("f_score" AS BIGINT) * 10
      )
    ) AS BIGINT) + "m_score" AS BIGINT) AS "rfm_cell",
    CASE "_mr_tier_index"
      WHEN 0
      THEN 'normal'
      WHEN 1
      THEN 'silver'
      WHEN 2
      THEN 'gold'
      WHEN 3
      THEN 'platinum'
    END AS "tier",
    CASE "_mr_tier_index"
      WHEN 0
      THEN 'silver'
      WHEN 1
      THEN 'gold'
      WHEN 2
      THEN 'platinum'
    END AS "next_tier",
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
          WHEN 2
          THEN CAST(20000 AS BIGINT)
        END IS NULL
      )
      THEN NULL
      WHEN (
        CASE "_mr_tier_index"
          WHEN 0
          THEN CAST(1000 AS BIGINT)
          WHEN 1
          THEN CAST(5000 AS BIGINT)
          WHEN 2
          THEN CAST(20000 AS BIGINT)
        END - "_mr_tier_by"
      ) < 0
      THEN CAST(0 AS BIGINT)
      ELSE CASE "_mr_tier_index"
        WHEN 0
        THEN CAST(1000 AS BIGINT)
        WHEN 1
        THEN CAST(5000 AS BIGINT)
        WHEN 2
        THEN CAST(20000 AS BIGINT)
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
          WHEN 2
          THEN CAST(20000 AS BIGINT)
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
        WHEN 3
        THEN CAST(20000 AS BIGINT)
      END
      THEN CAST('0' AS DECIMAL(38, 18))
      WHEN "_mr_tier_by" >= CASE "_mr_tier_index"
        WHEN 0
        THEN CAST(1000 AS BIGINT)
        WHEN 1
        THEN CAST(5000 AS BIGINT)
        WHEN 2
        THEN CAST(20000 AS BIGINT)
      END
      THEN CAST('1' AS DECIMAL(38, 18))
      ELSE CAST(CAST((
        CAST((
          CAST((
            (
              CAST((
                "_mr_tier_by" - CASE "_mr_tier_index"
                  WHEN 0
                  THEN CAST(0 AS BIGINT)
                  WHEN 1
                  THEN CAST(1000 AS BIGINT)
                  WHEN 2
                  THEN CAST(5000 AS BIGINT)
                  WHEN 3
                  THEN CAST(20000 AS BIGINT)
                END
              ) AS DECIMAL(38, 0)) * CAST(1000000000000000000 AS DECIMAL(38, 0))
            ) - (
              (
                CAST((
                  "_mr_tier_by" - CASE "_mr_tier_index"
                    WHEN 0
                    THEN CAST(0 AS BIGINT)
                    WHEN 1
                    THEN CAST(1000 AS BIGINT)
                    WHEN 2
                    THEN CAST(5000 AS BIGINT)
                    WHEN 3
                    THEN CAST(20000 AS BIGINT)
                  END
                ) AS DECIMAL(38, 0)) * CAST(1000000000000000000 AS DECIMAL(38, 0))
              ) % NULLIF(
                CAST(CASE "_mr_tier_index"
                  WHEN 0
                  THEN CAST(1000 AS BIGINT)
                  WHEN 1
                  THEN CAST(4000 AS BIGINT)
                  WHEN 2
                  THEN CAST(15000 AS BIGINT)
                END AS DECIMAL(38, 0)),
                0
              )
            )
          ) / NULLIF(
            CAST(CASE "_mr_tier_index"
              WHEN 0
              THEN CAST(1000 AS BIGINT)
              WHEN 1
              THEN CAST(4000 AS BIGINT)
              WHEN 2
              THEN CAST(15000 AS BIGINT)
            END AS DECIMAL(38, 0)),
            0
          ) AS DECIMAL(38, 0)) - (
            CAST((
              (
                CAST((
                  "_mr_tier_by" - CASE "_mr_tier_index"
                    WHEN 0
                    THEN CAST(0 AS BIGINT)
                    WHEN 1
                    THEN CAST(1000 AS BIGINT)
                    WHEN 2
                    THEN CAST(5000 AS BIGINT)
                    WHEN 3
                    THEN CAST(20000 AS BIGINT)
                  END
                ) AS DECIMAL(38, 0)) * CAST(1000000000000000000 AS DECIMAL(38, 0))
              ) - (
                (
                  CAST((
                    "_mr_tier_by" - CASE "_mr_tier_index"
                      WHEN 0
                      THEN CAST(0 AS BIGINT)
                      WHEN 1
                      THEN CAST(1000 AS BIGINT)
                      WHEN 2
                      THEN CAST(5000 AS BIGINT)
                      WHEN 3
                      THEN CAST(20000 AS BIGINT)
                    END
                  ) AS DECIMAL(38, 0)) * CAST(1000000000000000000 AS DECIMAL(38, 0))
                ) % NULLIF(
                  CAST(CASE "_mr_tier_index"
                    WHEN 0
                    THEN CAST(1000 AS BIGINT)
                    WHEN 1
                    THEN CAST(4000 AS BIGINT)
                    WHEN 2
                    THEN CAST(15000 AS BIGINT)
                  END AS DECIMAL(38, 0)),
                  0
                )
              )
            ) / NULLIF(
              CAST(CASE "_mr_tier_index"
                WHEN 0
                THEN CAST(1000 AS BIGINT)
                WHEN 1
                THEN CAST(4000 AS BIGINT)
                WHEN 2
                THEN CAST(15000 AS BIGINT)
              END AS DECIMAL(38, 0)),
              0
            ) AS DECIMAL(38, 0)) % 100000000000000
          )
        ) / 100000000000000 AS DECIMAL(38, 0)) * 100000000000000
      ) AS DECIMAL(38, 0)) * CAST('0.000000000000000001' AS DECIMAL(38, 18)) AS DECIMAL(38, 18))
    END AS DECIMAL(38, 18)) AS "_mr_tier_progress",
    CASE
      WHEN (
        "_mr_tier_earned" > 0
      )
      AND (
        NOT (
          CASE
            WHEN (
              "_mr_tier_by" IS NULL
            )
            OR (
              CASE "_mr_tier_index"
                WHEN 0
                THEN CAST(1000 AS BIGINT)
                WHEN 1
                THEN CAST(5000 AS BIGINT)
                WHEN 2
                THEN CAST(20000 AS BIGINT)
              END IS NULL
            )
            THEN NULL
            WHEN (
              CASE "_mr_tier_index"
                WHEN 0
                THEN CAST(1000 AS BIGINT)
                WHEN 1
                THEN CAST(5000 AS BIGINT)
                WHEN 2
                THEN CAST(20000 AS BIGINT)
              END - "_mr_tier_by"
            ) < 0
            THEN CAST(0 AS BIGINT)
            ELSE CASE "_mr_tier_index"
              WHEN 0
              THEN CAST(1000 AS BIGINT)
              WHEN 1
              THEN CAST(5000 AS BIGINT)
              WHEN 2
              THEN CAST(20000 AS BIGINT)
            END - "_mr_tier_by"
          END IS NULL
        )
      )
      THEN CAST(CAST((
        (
          (
            (
              (
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
                      WHEN 2
                      THEN CAST(20000 AS BIGINT)
                    END IS NULL
                  )
                  THEN NULL
                  WHEN (
                    CASE "_mr_tier_index"
                      WHEN 0
                      THEN CAST(1000 AS BIGINT)
                      WHEN 1
                      THEN CAST(5000 AS BIGINT)
                      WHEN 2
                      THEN CAST(20000 AS BIGINT)
                    END - "_mr_tier_by"
                  ) < 0
                  THEN CAST(0 AS BIGINT)
                  ELSE CASE "_mr_tier_index"
                    WHEN 0
                    THEN CAST(1000 AS BIGINT)
                    WHEN 1
                    THEN CAST(5000 AS BIGINT)
                    WHEN 2
                    THEN CAST(20000 AS BIGINT)
                  END - "_mr_tier_by"
                END AS DECIMAL(38, 0)) * CAST(1000000000000000000 AS DECIMAL(38, 0))
              ) * 90
            ) + (
              CAST(CAST("_mr_tier_earned" AS DECIMAL(38, 18)) * CAST(1000000000000000000 AS DECIMAL(38, 0)) AS DECIMAL(38, 0)) * 1
            )
          ) - 1
        ) - (
          (
            (
              (
                (
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
                        WHEN 2
                        THEN CAST(20000 AS BIGINT)
                      END IS NULL
                    )
                    THEN NULL
                    WHEN (
                      CASE "_mr_tier_index"
                        WHEN 0
                        THEN CAST(1000 AS BIGINT)
                        WHEN 1
                        THEN CAST(5000 AS BIGINT)
                        WHEN 2
                        THEN CAST(20000 AS BIGINT)
                      END - "_mr_tier_by"
                    ) < 0
                    THEN CAST(0 AS BIGINT)
                    ELSE CASE "_mr_tier_index"
                      WHEN 0
                      THEN CAST(1000 AS BIGINT)
                      WHEN 1
                      THEN CAST(5000 AS BIGINT)
                      WHEN 2
                      THEN CAST(20000 AS BIGINT)
                    END - "_mr_tier_by"
                  END AS DECIMAL(38, 0)) * CAST(1000000000000000000 AS DECIMAL(38, 0))
                ) * 90
              ) + (
                CAST(CAST("_mr_tier_earned" AS DECIMAL(38, 18)) * CAST(1000000000000000000 AS DECIMAL(38, 0)) AS DECIMAL(38, 0)) * 1
              )
            ) - 1
          ) % (
            CAST(CAST("_mr_tier_earned" AS DECIMAL(38, 18)) * CAST(1000000000000000000 AS DECIMAL(38, 0)) AS DECIMAL(38, 0)) * 1
          )
        )
      ) / (
        CAST(CAST("_mr_tier_earned" AS DECIMAL(38, 18)) * CAST(1000000000000000000 AS DECIMAL(38, 0)) AS DECIMAL(38, 0)) * 1
      ) AS DECIMAL(38, 0)) AS BIGINT)
      ELSE CAST(NULL AS BIGINT)
    END AS "_mr_days_to_next_tier",
    CASE
      WHEN "activity" >= 60
      THEN 'loyal'
      WHEN "activity" >= 10
      THEN 'general'
      WHEN "activity" > 0
      THEN 'one_time'
      ELSE 'silent'
    END AS "activity_level",
    CASE
      WHEN (
        (
          "r_score" >= 4
        ) AND (
          "f_score" >= 4
        )
      )
      AND (
        "m_score" >= 4
      )
      THEN 'champions'
      WHEN "f_score" >= 4
      THEN 'loyal_customers'
      WHEN "r_score" >= 4
      THEN 'promising'
      WHEN "r_score" = 3
      THEN 'needs_attention'
      ELSE 'hibernating'
    END AS "rfm_quintile",
    COALESCE(
      (
        (
          "orders_total" >= 3
        ) AND (
          "lifecycle" IN ('silent', 'dormant')
        )
      ),
      FALSE
    ) AS "at_risk",
    COALESCE((
      (
        "leaderboard_rank" <= 10
      ) AND (
        "growth_90d" >= 1000
      )
    ), FALSE) AS "leaderboard_top"
  FROM step2_tier_index_metrics_classes_segments
), step4_classes_segments AS (
  SELECT
    *,
    CASE
      WHEN (
        (
          COALESCE("recency_days", 9999) <= 15
        ) AND (
          "frequency" >= 8
        )
      )
      AND "above_avg_spend"
      THEN 'best'
      WHEN (
        "frequency" < 8
      ) AND "above_avg_spend"
      THEN 'breakthrough'
      WHEN (
        "frequency" >= 8
      ) AND (
        NOT "above_avg_spend"
      )
      THEN 'maintain'
      WHEN (
        (
          COALESCE("recency_days", 9999) > 15
        ) AND (
          "frequency" < 8
        )
      )
      AND (
        NOT "above_avg_spend"
      )
      THEN 'general'
      ELSE 'unclassified'
    END AS "rfm",
    COALESCE(
      (
        CASE
          WHEN (
            'vip' IS NULL
          ) OR (
            "tags" IS NULL
          )
          THEN CAST(NULL AS BOOLEAN)
          WHEN ARRAY_CONTAINS(CAST('vip' AS VARIANT), "tags")
          THEN TRUE
          WHEN ARRAY_SIZE(FILTER("tags", x -> NOT (
            x IS NULL
          ))) < ARRAY_SIZE("tags")
          THEN CAST(NULL AS BOOLEAN)
          ELSE FALSE
        END
        OR (
          "tier" = 'platinum'
        )
      ),
      FALSE
    ) AS "vip",
    COALESCE(
      (
        (
          NOT (
            "tier_gap" IS NULL
          )
        ) AND (
          "tier_gap" <= 500
        )
      ),
      FALSE
    ) AS "near_next_tier"
  FROM step3_metrics_tier_classes_segments
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
  "activity_level" AS "activity_level",
  "rfm_quintile" AS "rfm_quintile",
  FILTER(
    [
      CASE WHEN "vip" THEN 'vip' END,
      CASE WHEN "seed_user" THEN 'seed_user' END,
      CASE WHEN "birthday_this_week" THEN 'birthday_this_week' END,
      CASE WHEN "benefit_expiring" THEN 'benefit_expiring' END,
      CASE WHEN "benefit_unclaimed" THEN 'benefit_unclaimed' END,
      CASE WHEN "high_value" THEN 'high_value' END,
      CASE WHEN "at_risk" THEN 'at_risk' END,
      CASE WHEN "repurchaser" THEN 'repurchaser' END,
      CASE WHEN "reachable" THEN 'reachable' END,
      CASE WHEN "near_next_tier" THEN 'near_next_tier' END,
      CASE WHEN "leaderboard_top" THEN 'leaderboard_top' END
    ],
    x -> NOT (
      x IS NULL
    )
  ) AS "segments",
  "recency_days" AS "recency_days",
  "frequency" AS "frequency",
  "monetary" AS "monetary",
  "avg_spend" AS "avg_spend",
  "r_score" AS "r_score",
  "f_score" AS "f_score",
  "m_score" AS "m_score",
  "rfm_cell" AS "rfm_cell",
  "orders_total" AS "orders_total",
  "spend_90d" AS "spend_90d",
  "spend_90d_top20" AS "spend_90d_top20",
  "activity" AS "activity",
  "recent_shares" AS "recent_shares",
  "recent_referrals" AS "recent_referrals",
  "growth_90d" AS "growth_90d",
  "leaderboard_rank" AS "leaderboard_rank",
  "days_to_birthday" AS "days_to_birthday",
  "benefits_expiring_soon" AS "benefits_expiring_soon",
  "benefits_unclaimed" AS "benefits_unclaimed"
FROM step4_classes_segments
ORDER BY
  "member_id";
