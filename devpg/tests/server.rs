use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn fresh_databases_are_migrated_and_separate() {
    let a = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .unwrap();
    let b = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .unwrap();
    assert_ne!(a, b);
    let mut conn = PgConnection::connect(&a).await.unwrap();
    sqlx::query("INSERT INTO machines (id, name, address, cpu_milli, memory, disk) VALUES (gen_random_uuid(), 'm1', 'http://x', 1000, 1, 1)")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut other = PgConnection::connect(&b).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM machines")
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert_eq!(n, 0, "a test database must start empty");
}
