//! The box's Postgres floor beside a run, as `../shared/bench/peers/physical.sh`
//! measures it: one `UPDATE … FROM unnest(…)` of 100,000 rows of an indexed
//! two-int table, and one `INSERT … SELECT unnest(…)` of 100,000 rows into one,
//! each its own durable commit, median of three. The 20,000
//! placements/s were set on the box of that script's README (0.62 s and 0.45 s);
//! these shared machines swing twofold within an hour, so each run also states
//! what that target is in its own window.

use sqlx::{Executor, PgConnection, PgPool};
use std::time::Instant;

/// The reference box's figures (`../shared/bench/peers/README.md`), seconds.
pub const REFERENCE_UPDATE_S: f64 = 0.62;
pub const REFERENCE_INSERT_S: f64 = 0.45;
/// The target on the reference box.
pub const TARGET_PLACEMENTS_PER_S: f64 = 20_000.0;

const ROWS: i32 = 100_000;
const RUNS: usize = 3;

#[derive(Debug, Clone, Copy)]
pub struct Floor {
    /// Median seconds of the 100,000-row update and insert.
    pub update_s: f64,
    pub insert_s: f64,
}

impl Floor {
    /// How much faster than the reference box this window writes rows.
    pub fn speed(&self) -> f64 {
        (REFERENCE_UPDATE_S + REFERENCE_INSERT_S) / (self.update_s + self.insert_s)
    }

    /// The mean of two measurements (before and after a run: the box's speed
    /// can change within a run).
    pub fn mean(&self, other: &Floor) -> Floor {
        Floor {
            update_s: (self.update_s + other.update_s) / 2.0,
            insert_s: (self.insert_s + other.insert_s) / 2.0,
        }
    }

    /// The target, scaled to this window.
    pub fn target(&self) -> f64 {
        TARGET_PLACEMENTS_PER_S * self.speed()
    }
}

/// Measure it in `pool`'s database, in tables of its own that it drops after.
pub async fn measure(pool: &PgPool) -> anyhow::Result<Floor> {
    let mut conn = pool.acquire().await?;
    conn.execute(
        format!(
            "DROP TABLE IF EXISTS floor_t, floor_ins;
             CREATE TABLE floor_t (id int PRIMARY KEY, v int NOT NULL);
             INSERT INTO floor_t SELECT g, 0 FROM generate_series(1, {ROWS}) g;
             CREATE TABLE floor_ins (id int PRIMARY KEY, v int NOT NULL);"
        )
        .as_str(),
    )
    .await?;
    conn.execute("VACUUM ANALYZE floor_t").await?;
    let ids: Vec<i32> = (1..=ROWS).collect();
    let mut update = Vec::new();
    let mut insert = Vec::new();
    for run in 1..=RUNS as i32 {
        let values: Vec<i32> = ids.iter().map(|id| id * run).collect();
        update.push(timed(&mut conn, UPDATE, &ids, &values).await?);
        conn.execute("TRUNCATE floor_ins").await?;
        insert.push(timed(&mut conn, INSERT, &ids, &values).await?);
    }
    conn.execute("DROP TABLE floor_t, floor_ins").await?;
    Ok(Floor {
        update_s: median(update),
        insert_s: median(insert),
    })
}

const UPDATE: &str =
    "UPDATE floor_t SET v = u.v FROM unnest($1::int[], $2::int[]) AS u(id, v) WHERE floor_t.id = u.id";
const INSERT: &str = "INSERT INTO floor_ins SELECT * FROM unnest($1::int[], $2::int[])";

/// Seconds `sql` takes over the two arrays, as its own (durable) commit.
async fn timed(
    conn: &mut PgConnection,
    sql: &str,
    ids: &[i32],
    values: &[i32],
) -> sqlx::Result<f64> {
    let began = Instant::now();
    sqlx::query(sql)
        .bind(ids)
        .bind(values)
        .execute(conn)
        .await?;
    Ok(began.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_scales_with_the_window() {
        let reference = Floor {
            update_s: REFERENCE_UPDATE_S,
            insert_s: REFERENCE_INSERT_S,
        };
        assert!((reference.target() - TARGET_PLACEMENTS_PER_S).abs() < 1e-6);
        let twice_as_fast = Floor {
            update_s: REFERENCE_UPDATE_S / 2.0,
            insert_s: REFERENCE_INSERT_S / 2.0,
        };
        assert!((twice_as_fast.target() - 2.0 * TARGET_PLACEMENTS_PER_S).abs() < 1e-6);
        let between = reference.mean(&twice_as_fast);
        assert!((between.update_s - 0.75 * REFERENCE_UPDATE_S).abs() < 1e-9);
        assert!((between.insert_s - 0.75 * REFERENCE_INSERT_S).abs() < 1e-9);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }
}
