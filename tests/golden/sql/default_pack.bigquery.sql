SET @@time_zone = 'Asia/Shanghai';

WITH orders_per_member AS (
  SELECT
    `e`.`member_id` AS `_mr_key`,
    MAX(IF(NOT (
      `e`.`placed_at` IS NULL
    ), `e`.`placed_at`, NULL)) AS `_mr_orders_last_1`,
    CAST(COUNTIF(
      `e`.`placed_at` > TIMESTAMP_ADD(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP), INTERVAL -CAST(2592000000000 AS INT64) MICROSECOND)
    ) AS INT64) AS `_mr_orders_count_2`,
    CAST(SUM(
      IF(
        `e`.`placed_at` > TIMESTAMP_ADD(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP), INTERVAL -CAST(2592000000000 AS INT64) MICROSECOND),
        `e`.`amount`,
        NULL
      )
    ) AS BIGNUMERIC) AS `_mr_orders_sum_3`,
    CAST(COUNT(*) AS INT64) AS `_mr_orders_count_4`,
    CAST(SUM(
      IF(
        `e`.`placed_at` > TIMESTAMP_ADD(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP), INTERVAL -CAST(7776000000000 AS INT64) MICROSECOND),
        `e`.`amount`,
        NULL
      )
    ) AS BIGNUMERIC) AS `_mr_orders_sum_5`,
    CAST(SUM(
      IF(
        (
          CAST(`e`.`placed_at` AS DATE) = CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE)
        ),
        `e`.`amount`,
        NULL
      )
    ) AS BIGNUMERIC) AS `_mr_orders_sum_6`
  FROM `orders` AS e
  WHERE
    `e`.`placed_at` <= CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP)
  GROUP BY
    `e`.`member_id`
), events_per_member AS (
  SELECT
    `e`.`member_id` AS `_mr_key`,
    CAST(COUNTIF(
      (
        `e`.`at` > TIMESTAMP_ADD(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP), INTERVAL -CAST(2592000000000 AS INT64) MICROSECOND)
      )
      AND (
        `e`.`type` IN ('read', 'login')
      )
    ) AS INT64) AS `_mr_events_count_7`,
    CAST(COUNTIF(
      (
        `e`.`at` > TIMESTAMP_ADD(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP), INTERVAL -CAST(2592000000000 AS INT64) MICROSECOND)
      )
      AND (
        `e`.`type` IN ('search', 'add_to_cart', 'share')
      )
    ) AS INT64) AS `_mr_events_count_8`,
    CAST(COUNTIF(
      (
        `e`.`at` > TIMESTAMP_ADD(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP), INTERVAL -CAST(2592000000000 AS INT64) MICROSECOND)
      )
      AND (
        `e`.`type` = 'interact'
      )
    ) AS INT64) AS `_mr_events_count_9`,
    CAST(COUNTIF(
      (
        `e`.`at` > TIMESTAMP_ADD(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP), INTERVAL -CAST(7776000000000 AS INT64) MICROSECOND)
      )
      AND (
        `e`.`type` = 'share'
      )
    ) AS INT64) AS `_mr_events_count_11`,
    CAST(COUNTIF(
      (
        `e`.`at` > TIMESTAMP_ADD(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP), INTERVAL -CAST(7776000000000 AS INT64) MICROSECOND)
      )
      AND (
        `e`.`type` = 'refer'
      )
    ) AS INT64) AS `_mr_events_count_12`
  FROM `events` AS e
  WHERE
    `e`.`at` <= CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP)
  GROUP BY
    `e`.`member_id`
), benefits_per_member AS (
  SELECT
    `e`.`member_id` AS `_mr_key`,
    CAST(COUNTIF(
      (
        (
          (
            `e`.`used_at` IS NULL
          )
          AND (
            `e`.`expires_at` > CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP)
          )
        )
        AND (
          `e`.`expires_at` <= TIMESTAMP_ADD(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP), INTERVAL (CAST(259200000000 AS INT64)) MICROSECOND)
        )
      )
    ) AS INT64) AS `_mr_benefits_count_14`,
    CAST(COUNTIF(
      (
        (
          (
            `e`.`claimed_at` IS NULL
          ) AND (
            `e`.`used_at` IS NULL
          )
        )
        AND (
          `e`.`expires_at` > CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP)
        )
      )
    ) AS INT64) AS `_mr_benefits_count_15`
  FROM `benefits` AS e
  WHERE
    `e`.`granted_at` <= CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP)
  GROUP BY
    `e`.`member_id`
), members AS (
  SELECT
    `m`.`member_id` AS `member_id`,
    `m`.`name` AS `name`,
    `m`.`registered_at` AS `registered_at`,
    `m`.`birthday` AS `birthday`,
    `m`.`growth_value` AS `growth_value`,
    `m`.`tier` AS `current_tier`,
    `m`.`opted_in_sms` AS `opted_in_sms`,
    `m`.`opted_in_push` AS `opted_in_push`,
    `m`.`opted_in_email` AS `opted_in_email`,
    `m`.`tags` AS `tags`,
    `m`.`city` AS `city`,
    `orders_per_member`.`_mr_orders_last_1` AS `_mr_orders_last_1`,
    COALESCE(`orders_per_member`.`_mr_orders_count_2`, CAST(0 AS INT64)) AS `_mr_orders_count_2`,
    COALESCE(`orders_per_member`.`_mr_orders_sum_3`, CAST(0 AS BIGNUMERIC)) AS `_mr_orders_sum_3`,
    COALESCE(`orders_per_member`.`_mr_orders_count_4`, CAST(0 AS INT64)) AS `_mr_orders_count_4`,
    COALESCE(`orders_per_member`.`_mr_orders_sum_5`, CAST(0 AS BIGNUMERIC)) AS `_mr_orders_sum_5`,
    COALESCE(`orders_per_member`.`_mr_orders_sum_6`, CAST(0 AS BIGNUMERIC)) AS `_mr_orders_sum_6`,
    COALESCE(`orders_per_member`.`_mr_orders_count_2`, CAST(0 AS INT64)) AS `_mr_orders_count_10`,
    COALESCE(`events_per_member`.`_mr_events_count_7`, CAST(0 AS INT64)) AS `_mr_events_count_7`,
    COALESCE(`events_per_member`.`_mr_events_count_8`, CAST(0 AS INT64)) AS `_mr_events_count_8`,
    COALESCE(`events_per_member`.`_mr_events_count_9`, CAST(0 AS INT64)) AS `_mr_events_count_9`,
    COALESCE(`events_per_member`.`_mr_events_count_11`, CAST(0 AS INT64)) AS `_mr_events_count_11`,
    COALESCE(`events_per_member`.`_mr_events_count_12`, CAST(0 AS INT64)) AS `_mr_events_count_12`,
    COALESCE(`events_per_member`.`_mr_events_count_12`, CAST(0 AS INT64)) AS `_mr_events_count_13`,
    COALESCE(`benefits_per_member`.`_mr_benefits_count_14`, CAST(0 AS INT64)) AS `_mr_benefits_count_14`,
    COALESCE(`benefits_per_member`.`_mr_benefits_count_15`, CAST(0 AS INT64)) AS `_mr_benefits_count_15`
  FROM `member` AS m
  LEFT JOIN orders_per_member AS orders_per_member
    ON `orders_per_member`.`_mr_key` = `m`.`member_id`
  LEFT JOIN events_per_member AS events_per_member
    ON `events_per_member`.`_mr_key` = `m`.`member_id`
  LEFT JOIN benefits_per_member AS benefits_per_member
    ON `benefits_per_member`.`_mr_key` = `m`.`member_id`
), step1_metrics_segments AS (
  SELECT
    *,
    CAST(DATE_DIFF(
      CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE),
      CAST(`_mr_orders_last_1` AS DATE),
      DAY
    ) AS INT64) AS `recency_days`,
    CAST(`_mr_orders_count_2` AS INT64) AS `frequency`,
    CAST(`_mr_orders_sum_3` AS BIGNUMERIC) AS `monetary`,
    CAST(`_mr_orders_count_4` AS INT64) AS `orders_total`,
    CAST(`_mr_orders_sum_5` AS BIGNUMERIC) AS `spend_90d`,
    CAST(`_mr_orders_sum_6` AS BIGNUMERIC) AS `spend_today`,
    CAST(`_mr_events_count_7` AS INT64) AS `light_events`,
    CAST(`_mr_events_count_8` AS INT64) AS `medium_events`,
    CAST(CAST(`_mr_events_count_9` AS INT64) + `_mr_orders_count_10` AS INT64) AS `core_events`,
    CAST(`_mr_events_count_11` AS INT64) AS `recent_shares`,
    CAST(`_mr_events_count_12` AS INT64) AS `recent_referrals`,
    CAST(CAST(CAST(1 AS BIGNUMERIC) * CAST(`_mr_orders_sum_5` AS BIGNUMERIC) AS BIGNUMERIC) + CAST((
      CAST(50 AS INT64) * `_mr_events_count_13`
    ) AS BIGNUMERIC) AS BIGNUMERIC) AS `growth_90d`,
    CAST(DATE_DIFF(
      CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE),
      CAST(`registered_at` AS DATE),
      DAY
    ) AS INT64) AS `days_since_registration`,
    CAST(DATE_DIFF(
      CASE
        WHEN DATE(
          CAST(EXTRACT(YEAR FROM CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE)) AS INT64),
          CAST(EXTRACT(MONTH FROM `birthday`) AS INT64),
          CASE
            WHEN (
              (
                CAST(EXTRACT(MONTH FROM `birthday`) AS INT64) = 2
              )
              AND (
                CAST(EXTRACT(DAY FROM `birthday`) AS INT64) = 29
              )
            )
            AND (
              NOT (
                (
                  (
                    (
                      MOD(
                        CAST(EXTRACT(YEAR FROM CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE)) AS INT64),
                        4
                      )
                    ) = 0
                  )
                  AND (
                    (
                      MOD(
                        CAST(EXTRACT(YEAR FROM CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE)) AS INT64),
                        100
                      )
                    ) <> 0
                  )
                )
                OR (
                  (
                    MOD(
                      CAST(EXTRACT(YEAR FROM CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE)) AS INT64),
                      400
                    )
                  ) = 0
                )
              )
            )
            THEN 28
            ELSE CAST(EXTRACT(DAY FROM `birthday`) AS INT64)
          END
        ) < CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE)
        THEN DATE(
          CAST(EXTRACT(YEAR FROM CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE)) AS INT64) + 1,
          CAST(EXTRACT(MONTH FROM `birthday`) AS INT64),
          CASE
            WHEN (
              (
                CAST(EXTRACT(MONTH FROM `birthday`) AS INT64) = 2
              )
              AND (
                CAST(EXTRACT(DAY FROM `birthday`) AS INT64) = 29
              )
            )
            AND (
              NOT (
                (
                  (
                    (
                      MOD(
                        CAST(EXTRACT(YEAR FROM CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE)) AS INT64) + 1,
                        4
                      )
                    ) = 0
                  )
                  AND (
                    (
                      MOD(
                        CAST(EXTRACT(YEAR FROM CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE)) AS INT64) + 1,
                        100
                      )
                    ) <> 0
                  )
                )
                OR (
                  (
                    MOD(
                      CAST(EXTRACT(YEAR FROM CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE)) AS INT64) + 1,
                      400
                    )
                  ) = 0
                )
              )
            )
            THEN 28
            ELSE CAST(EXTRACT(DAY FROM `birthday`) AS INT64)
          END
        )
        ELSE DATE(
          CAST(EXTRACT(YEAR FROM CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE)) AS INT64),
          CAST(EXTRACT(MONTH FROM `birthday`) AS INT64),
          CASE
            WHEN (
              (
                CAST(EXTRACT(MONTH FROM `birthday`) AS INT64) = 2
              )
              AND (
                CAST(EXTRACT(DAY FROM `birthday`) AS INT64) = 29
              )
            )
            AND (
              NOT (
                (
                  (
                    (
                      MOD(
                        CAST(EXTRACT(YEAR FROM CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE)) AS INT64),
                        4
                      )
                    ) = 0
                  )
                  AND (
                    (
                      MOD(
                        CAST(EXTRACT(YEAR FROM CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE)) AS INT64),
                        100
                      )
                    ) <> 0
                  )
                )
                OR (
                  (
                    MOD(
                      CAST(EXTRACT(YEAR FROM CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE)) AS INT64),
                      400
                    )
                  ) = 0
                )
              )
            )
            THEN 28
            ELSE CAST(EXTRACT(DAY FROM `birthday`) AS INT64)
          END
        )
      END,
      CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE),
      DAY
    ) AS INT64) AS `days_to_birthday`,
    CAST(`_mr_benefits_count_14` AS INT64) AS `benefits_expiring_soon`,
    CAST(`_mr_benefits_count_15` AS INT64) AS `benefits_unclaimed`,
    COALESCE((
      (
        `opted_in_sms` OR `opted_in_push`
      ) OR `opted_in_email`
    ), FALSE) AS `reachable`
  FROM members
), step2_tier_index_metrics_classes_segments AS (
  SELECT
    s.*,
    CAST(`growth_value` AS INT64) AS `_mr_tier_by`,
    CAST(CASE
      WHEN (
        CASE `current_tier`
          WHEN 'normal'
          THEN 0
          WHEN 'silver'
          THEN 1
          WHEN 'gold'
          THEN 2
          WHEN 'platinum'
          THEN 3
        END > CASE
          WHEN CAST(`growth_value` AS INT64) >= CAST(20000 AS INT64)
          THEN 3
          WHEN CAST(`growth_value` AS INT64) >= CAST(5000 AS INT64)
          THEN 2
          WHEN CAST(`growth_value` AS INT64) >= CAST(1000 AS INT64)
          THEN 1
          WHEN CAST(`growth_value` AS INT64) >= CAST(0 AS INT64)
          THEN 0
          ELSE 0
        END
      )
      AND (
        NOT COALESCE(
          (
            CAST(EXTRACT(DAYOFYEAR FROM CAST(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP) AS DATE)) AS INT64) = 1
          ),
          FALSE
        )
      )
      THEN CASE `current_tier`
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
        WHEN CAST(`growth_value` AS INT64) >= CAST(20000 AS INT64)
        THEN 3
        WHEN CAST(`growth_value` AS INT64) >= CAST(5000 AS INT64)
        THEN 2
        WHEN CAST(`growth_value` AS INT64) >= CAST(1000 AS INT64)
        THEN 1
        WHEN CAST(`growth_value` AS INT64) >= CAST(0 AS INT64)
        THEN 0
        ELSE 0
      END
    END AS INT64) AS `_mr_tier_index`,
    CAST(`growth_90d` AS BIGNUMERIC) AS `_mr_tier_earned`,
    CAST((
      SELECT
        CAST(CAST(DIV(
          (
            CAST(TRUNC(CAST(SUM(`monetary`) AS BIGNUMERIC)) AS BIGNUMERIC) * CAST(1000000000000000000 AS BIGNUMERIC)
          ) + CAST((
            CAST(SUM(`monetary`) AS BIGNUMERIC) - TRUNC(CAST(SUM(`monetary`) AS BIGNUMERIC))
          ) * CAST(1000000000000000000 AS BIGNUMERIC) AS BIGNUMERIC),
          NULLIF(CAST(COUNT(`monetary`) AS BIGNUMERIC), 0)
        ) AS BIGNUMERIC) * CAST('0.000000000000000001' AS BIGNUMERIC) AS BIGNUMERIC)
      FROM step1_metrics_segments
      WHERE
        (
          `frequency` > 0
        )
    ) AS BIGNUMERIC) AS `avg_spend`,
    CAST(COALESCE(
      CAST(6 AS INT64) - CASE
        WHEN `recency_days` IS NULL
        THEN CAST(NULL AS INT64)
        ELSE CAST(DIV(
          (
            (
              5 * CAST(`_mr_w`.`_mr_w2` AS INT64)
            ) + CAST(`_mr_w`.`_mr_w1` AS INT64)
          ) - 1,
          CAST(`_mr_w`.`_mr_w1` AS INT64)
        ) AS INT64)
      END,
      1
    ) AS INT64) AS `r_score`,
    CAST(COALESCE(
      CASE
        WHEN CASE WHEN `frequency` = 0 THEN NULL ELSE `frequency` END IS NULL
        THEN CAST(NULL AS INT64)
        ELSE CAST(DIV(
          (
            (
              5 * CAST(`_mr_w`.`_mr_w4` AS INT64)
            ) + CAST(`_mr_w`.`_mr_w3` AS INT64)
          ) - 1,
          CAST(`_mr_w`.`_mr_w3` AS INT64)
        ) AS INT64)
      END,
      1
    ) AS INT64) AS `f_score`,
    CAST(COALESCE(
      CASE
        WHEN CASE WHEN `monetary` = CAST(0 AS BIGNUMERIC) THEN NULL ELSE `monetary` END IS NULL
        THEN CAST(NULL AS INT64)
        ELSE CAST(DIV(
          (
            (
              5 * CAST(`_mr_w`.`_mr_w6` AS INT64)
            ) + CAST(`_mr_w`.`_mr_w5` AS INT64)
          ) - 1,
          CAST(`_mr_w`.`_mr_w5` AS INT64)
        ) AS INT64)
      END,
      1
    ) AS INT64) AS `m_score`,
    CAST((
      SELECT
        MIN(`_mr_v`)
      FROM (
        SELECT
          `_mr_v`,
          COUNT(*) OVER (ORDER BY `_mr_v` RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS `_mr_c`,
          COUNT(*) OVER () AS `_mr_n`
        FROM (
          SELECT
            `spend_90d` AS `_mr_v`
          FROM step1_metrics_segments
          WHERE
            (
              `spend_90d` > 0
            ) AND (
              NOT (
                `spend_90d` IS NULL
              )
            )
        ) AS _mr_values
      ) AS _mr_ranked
      WHERE
        (
          `_mr_c` >= CEIL(CAST('0.8' AS BIGNUMERIC) * `_mr_n`)
        ) AND (
          `_mr_c` >= 1
        )
    ) AS BIGNUMERIC) AS `spend_90d_top20`,
    CAST(CAST((
      CAST((
        CAST(1 AS INT64) * `light_events`
      ) AS INT64) + (
        CAST(3 AS INT64) * `medium_events`
      )
    ) AS INT64) + (
      CAST(5 AS INT64) * `core_events`
    ) AS INT64) AS `activity`,
    CAST(CASE
      WHEN `growth_90d` IS NULL
      THEN CAST(NULL AS INT64)
      ELSE CAST(`_mr_w`.`_mr_w7` AS INT64)
    END AS INT64) AS `leaderboard_rank`,
    CASE
      WHEN (
        `registered_at` > TIMESTAMP_ADD(CAST('2026-11-01T00:00:00+08:00' AS TIMESTAMP), INTERVAL -CAST(2592000000000 AS INT64) MICROSECOND)
      )
      AND (
        `orders_total` = 0
      )
      THEN 'new'
      WHEN COALESCE(`recency_days`, 9999) <= 30
      THEN 'active'
      WHEN COALESCE(`recency_days`, 9999) <= 90
      THEN 'silent'
      WHEN COALESCE(`recency_days`, 9999) <= 180
      THEN 'dormant'
      WHEN (
        NOT (
          `recency_days` IS NULL
        )
      ) AND (
        `recency_days` > 180
      )
      THEN 'churned'
      ELSE 'potential'
    END AS `lifecycle`,
    COALESCE((
      (
        `recent_shares` >= 5
      ) OR (
        `recent_referrals` >= 2
      )
    ), FALSE) AS `seed_user`,
    COALESCE((
      COALESCE(`days_to_birthday`, 999) <= 6
    ), FALSE) AS `birthday_this_week`,
    COALESCE((
      `benefits_expiring_soon` > 0
    ), FALSE) AS `benefit_expiring`,
    COALESCE((
      `benefits_unclaimed` > 0
    ), FALSE) AS `benefit_unclaimed`,
    COALESCE((
      `spend_90d` >= 3000
    ), FALSE) AS `high_value`,
    COALESCE((
      `orders_total` >= 2
    ), FALSE) AS `repurchaser`
  FROM step1_metrics_segments AS s
  JOIN (
    SELECT
      `member_id` AS `_mr_w_key`,
      COUNT(`recency_days`) OVER () AS `_mr_w1`,
      COUNT(`recency_days`) OVER (ORDER BY `recency_days` ASC RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS `_mr_w2`,
      COUNT(CASE WHEN `frequency` = 0 THEN NULL ELSE `frequency` END) OVER () AS `_mr_w3`,
      COUNT(CASE WHEN `frequency` = 0 THEN NULL ELSE `frequency` END) OVER (
        ORDER BY CASE WHEN `frequency` = 0 THEN NULL ELSE `frequency` END ASC
        RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
      ) AS `_mr_w4`,
      COUNT(CASE WHEN `monetary` = CAST(0 AS BIGNUMERIC) THEN NULL ELSE `monetary` END) OVER () AS `_mr_w5`,
      COUNT(CASE WHEN `monetary` = CAST(0 AS BIGNUMERIC) THEN NULL ELSE `monetary` END) OVER (
        ORDER BY CASE WHEN `monetary` = CAST(0 AS BIGNUMERIC) THEN NULL ELSE `monetary` END ASC
        RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
      ) AS `_mr_w6`,
      RANK() OVER (ORDER BY `growth_90d` DESC) AS `_mr_w7`
    FROM step1_metrics_segments
  ) AS _mr_w
    ON `_mr_w`.`_mr_w_key` = `s`.`member_id`
), step3_metrics_tier_classes_segments AS (
  SELECT
    *,
    COALESCE(`monetary` >= `avg_spend`, FALSE) AS `above_avg_spend`,
    CAST(CAST((
      CAST((
        CAST(`r_score` AS INT64) * 100
      ) AS INT64) + (
        CAST(`f_score` AS INT64) * 10
      )
    ) AS INT64) + `m_score` AS INT64) AS `rfm_cell`,
    CASE `_mr_tier_index`
      WHEN 0
      THEN 'normal'
      WHEN 1
      THEN 'silver'
      WHEN 2
      THEN 'gold'
      WHEN 3
      THEN 'platinum'
    END AS `tier`,
    CASE `_mr_tier_index`
      WHEN 0
      THEN 'silver'
      WHEN 1
      THEN 'gold'
      WHEN 2
      THEN 'platinum'
    END AS `next_tier`,
    CAST(CASE
      WHEN (
        `_mr_tier_by` IS NULL
      )
      OR (
        CASE `_mr_tier_index`
          WHEN 0
          THEN CAST(1000 AS INT64)
          WHEN 1
          THEN CAST(5000 AS INT64)
          WHEN 2
          THEN CAST(20000 AS INT64)
        END IS NULL
      )
      THEN NULL
      WHEN (
        CASE `_mr_tier_index`
          WHEN 0
          THEN CAST(1000 AS INT64)
          WHEN 1
          THEN CAST(5000 AS INT64)
          WHEN 2
          THEN CAST(20000 AS INT64)
        END - `_mr_tier_by`
      ) < 0
      THEN CAST(0 AS INT64)
      ELSE CASE `_mr_tier_index`
        WHEN 0
        THEN CAST(1000 AS INT64)
        WHEN 1
        THEN CAST(5000 AS INT64)
        WHEN 2
        THEN CAST(20000 AS INT64)
      END - `_mr_tier_by`
    END AS INT64) AS `tier_gap`,
    CAST(CASE
      WHEN (
        `_mr_tier_by` IS NULL
      )
      OR (
        CASE `_mr_tier_index`
          WHEN 0
          THEN CAST(1000 AS INT64)
          WHEN 1
          THEN CAST(5000 AS INT64)
          WHEN 2
          THEN CAST(20000 AS INT64)
        END IS NULL
      )
      THEN NULL
      WHEN `_mr_tier_by` <= CASE `_mr_tier_index`
        WHEN 0
        THEN CAST(0 AS INT64)
        WHEN 1
        THEN CAST(1000 AS INT64)
        WHEN 2
        THEN CAST(5000 AS INT64)
        WHEN 3
        THEN CAST(20000 AS INT64)
      END
      THEN CAST('0' AS BIGNUMERIC)
      WHEN `_mr_tier_by` >= CASE `_mr_tier_index`
        WHEN 0
        THEN CAST(1000 AS INT64)
        WHEN 1
        THEN CAST(5000 AS INT64)
        WHEN 2
        THEN CAST(20000 AS INT64)
      END
      THEN CAST('1' AS BIGNUMERIC)
      ELSE CAST(CAST((
        DIV(
          DIV(
            CAST((
              `_mr_tier_by` - CASE `_mr_tier_index`
                WHEN 0
                THEN CAST(0 AS INT64)
                WHEN 1
                THEN CAST(1000 AS INT64)
                WHEN 2
                THEN CAST(5000 AS INT64)
                WHEN 3
                THEN CAST(20000 AS INT64)
              END
            ) AS BIGNUMERIC) * CAST(1000000000000000000 AS BIGNUMERIC),
            NULLIF(
              CAST(CASE `_mr_tier_index`
                WHEN 0
                THEN CAST(1000 AS INT64)
                WHEN 1
                THEN CAST(4000 AS INT64)
                WHEN 2
                THEN CAST(15000 AS INT64)
              END AS BIGNUMERIC),
              0
            )
          ),
          100000000000000
        ) * 100000000000000
      ) AS BIGNUMERIC) * CAST('0.000000000000000001' AS BIGNUMERIC) AS BIGNUMERIC)
    END AS BIGNUMERIC) AS `_mr_tier_progress`,
    CASE
      WHEN (
        `_mr_tier_earned` > 0
      )
      AND (
        NOT (
          CASE
            WHEN (
              `_mr_tier_by` IS NULL
            )
            OR (
              CASE `_mr_tier_index`
                WHEN 0
                THEN CAST(1000 AS INT64)
                WHEN 1
                THEN CAST(5000 AS INT64)
                WHEN 2
                THEN CAST(20000 AS INT64)
              END IS NULL
            )
            THEN NULL
            WHEN (
              CASE `_mr_tier_index`
                WHEN 0
                THEN CAST(1000 AS INT64)
                WHEN 1
                THEN CAST(5000 AS INT64)
                WHEN 2
                THEN CAST(20000 AS INT64)
              END - `_mr_tier_by`
            ) < 0
            THEN CAST(0 AS INT64)
            ELSE CASE `_mr_tier_index`
              WHEN 0
              THEN CAST(1000 AS INT64)
              WHEN 1
              THEN CAST(5000 AS INT64)
              WHEN 2
              THEN CAST(20000 AS INT64)
            END - `_mr_tier_by`
          END IS NULL
        )
      )
      THEN CAST(DIV(
        (
          (
            (
              CAST(CASE
                WHEN (
                  `_mr_tier_by` IS NULL
                )
                OR (
                  CASE `_mr_tier_index`
                    WHEN 0
                    THEN CAST(1000 AS INT64)
                    WHEN 1
                    THEN CAST(5000 AS INT64)
                    WHEN 2
                    THEN CAST(20000 AS INT64)
                  END IS NULL
                )
                THEN NULL
                WHEN (
                  CASE `_mr_tier_index`
                    WHEN 0
                    THEN CAST(1000 AS INT64)
                    WHEN 1
                    THEN CAST(5000 AS INT64)
                    WHEN 2
                    THEN CAST(20000 AS INT64)
                  END - `_mr_tier_by`
                ) < 0
                THEN CAST(0 AS INT64)
                ELSE CASE `_mr_tier_index`
                  WHEN 0
                  THEN CAST(1000 AS INT64)
                  WHEN 1
                  THEN CAST(5000 AS INT64)
                  WHEN 2
                  THEN CAST(20000 AS INT64)
                END - `_mr_tier_by`
              END AS BIGNUMERIC) * CAST(1000000000000000000 AS BIGNUMERIC)
            ) * 90
          ) + (
            (
              (
                CAST(TRUNC(CAST(`_mr_tier_earned` AS BIGNUMERIC)) AS BIGNUMERIC) * CAST(1000000000000000000 AS BIGNUMERIC)
              ) + CAST((
                CAST(`_mr_tier_earned` AS BIGNUMERIC) - TRUNC(CAST(`_mr_tier_earned` AS BIGNUMERIC))
              ) * CAST(1000000000000000000 AS BIGNUMERIC) AS BIGNUMERIC)
            ) * 1
          )
        ) - 1,
        (
          (
            CAST(TRUNC(CAST(`_mr_tier_earned` AS BIGNUMERIC)) AS BIGNUMERIC) * CAST(1000000000000000000 AS BIGNUMERIC)
          ) + CAST((
            CAST(`_mr_tier_earned` AS BIGNUMERIC) - TRUNC(CAST(`_mr_tier_earned` AS BIGNUMERIC))
          ) * CAST(1000000000000000000 AS BIGNUMERIC) AS BIGNUMERIC)
        ) * 1
      ) AS INT64)
      ELSE CAST(NULL AS INT64)
    END AS `_mr_days_to_next_tier`,
    CASE
      WHEN `activity` >= 60
      THEN 'loyal'
      WHEN `activity` >= 10
      THEN 'general'
      WHEN `activity` > 0
      THEN 'one_time'
      ELSE 'silent'
    END AS `activity_level`,
    CASE
      WHEN (
        (
          `r_score` >= 4
        ) AND (
          `f_score` >= 4
        )
      )
      AND (
        `m_score` >= 4
      )
      THEN 'champions'
      WHEN `f_score` >= 4
      THEN 'loyal_customers'
      WHEN `r_score` >= 4
      THEN 'promising'
      WHEN `r_score` = 3
      THEN 'needs_attention'
      ELSE 'hibernating'
    END AS `rfm_quintile`,
    COALESCE(
      (
        (
          `orders_total` >= 3
        ) AND (
          `lifecycle` IN ('silent', 'dormant')
        )
      ),
      FALSE
    ) AS `at_risk`,
    COALESCE((
      (
        `leaderboard_rank` <= 10
      ) AND (
        `growth_90d` >= 1000
      )
    ), FALSE) AS `leaderboard_top`
  FROM step2_tier_index_metrics_classes_segments
), step4_classes_segments AS (
  SELECT
    *,
    CASE
      WHEN (
        (
          COALESCE(`recency_days`, 9999) <= 15
        ) AND (
          `frequency` >= 8
        )
      )
      AND `above_avg_spend`
      THEN 'best'
      WHEN (
        `frequency` < 8
      ) AND `above_avg_spend`
      THEN 'breakthrough'
      WHEN (
        `frequency` >= 8
      ) AND (
        NOT `above_avg_spend`
      )
      THEN 'maintain'
      WHEN (
        (
          COALESCE(`recency_days`, 9999) > 15
        ) AND (
          `frequency` < 8
        )
      )
      AND (
        NOT `above_avg_spend`
      )
      THEN 'general'
      ELSE 'unclassified'
    END AS `rfm`,
    COALESCE(
      (
        CASE
          WHEN (
            'vip' IS NULL
          ) OR (
            `tags` IS NULL
          )
          THEN CAST(NULL AS BOOL)
          WHEN EXISTS(
            SELECT
              1
            FROM UNNEST(`tags`) AS _col
            WHERE
              _col = 'vip'
          )
          THEN TRUE
          WHEN ARRAY_LENGTH(ARRAY(SELECT
            x
          FROM UNNEST(`tags`) AS x
          WHERE
            NOT (
              x IS NULL
            ))) < ARRAY_LENGTH(`tags`)
          THEN CAST(NULL AS BOOL)
          ELSE FALSE
        END
        OR (
          `tier` = 'platinum'
        )
      ),
      FALSE
    ) AS `vip`,
    COALESCE(
      (
        (
          NOT (
            `tier_gap` IS NULL
          )
        ) AND (
          `tier_gap` <= 500
        )
      ),
      FALSE
    ) AS `near_next_tier`
  FROM step3_metrics_tier_classes_segments
)
SELECT
  `member_id` AS `member_id`,
  `tier` AS `tier`,
  `next_tier` AS `next_tier`,
  `tier_gap` AS `tier_gap`,
  `_mr_tier_progress` AS `tier_progress`,
  `_mr_days_to_next_tier` AS `days_to_next_tier`,
  `rfm` AS `rfm`,
  `lifecycle` AS `lifecycle`,
  `activity_level` AS `activity_level`,
  `rfm_quintile` AS `rfm_quintile`,
  ARRAY(
    SELECT
      x
    FROM UNNEST([
      CASE WHEN `vip` THEN 'vip' END,
      CASE WHEN `seed_user` THEN 'seed_user' END,
      CASE WHEN `birthday_this_week` THEN 'birthday_this_week' END,
      CASE WHEN `benefit_expiring` THEN 'benefit_expiring' END,
      CASE WHEN `benefit_unclaimed` THEN 'benefit_unclaimed' END,
      CASE WHEN `high_value` THEN 'high_value' END,
      CASE WHEN `at_risk` THEN 'at_risk' END,
      CASE WHEN `repurchaser` THEN 'repurchaser' END,
      CASE WHEN `reachable` THEN 'reachable' END,
      CASE WHEN `near_next_tier` THEN 'near_next_tier' END,
      CASE WHEN `leaderboard_top` THEN 'leaderboard_top' END
    ]) AS x
    WHERE
      NOT (
        x IS NULL
      )
  ) AS `segments`,
  `recency_days` AS `recency_days`,
  `frequency` AS `frequency`,
  `monetary` AS `monetary`,
  `avg_spend` AS `avg_spend`,
  `r_score` AS `r_score`,
  `f_score` AS `f_score`,
  `m_score` AS `m_score`,
  `rfm_cell` AS `rfm_cell`,
  `orders_total` AS `orders_total`,
  `spend_90d` AS `spend_90d`,
  `spend_90d_top20` AS `spend_90d_top20`,
  `activity` AS `activity`,
  `recent_shares` AS `recent_shares`,
  `recent_referrals` AS `recent_referrals`,
  `growth_90d` AS `growth_90d`,
  `leaderboard_rank` AS `leaderboard_rank`,
  `days_to_birthday` AS `days_to_birthday`,
  `benefits_expiring_soon` AS `benefits_expiring_soon`,
  `benefits_unclaimed` AS `benefits_unclaimed`
FROM step4_classes_segments
ORDER BY
  `member_id`;
