//! The event cursor against a real Postgres: a reader never skips an event
//! whose transaction commits after a later one's, and resumes where it stopped.

use borg_store::{EventCursor, Store};
use sqlx::postgres::PgPoolOptions;

async fn store() -> Store {
    let url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .expect("a fresh database");
    Store::from_pool(
        PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("connecting"),
    )
}

async fn insert(conn: &mut sqlx::PgConnection, reason: &str) {
    sqlx::query("INSERT INTO events (kind, to_state, reason) VALUES ('machine', 'up', $1)")
        .bind(reason)
        .execute(conn)
        .await
        .unwrap();
}

/// Read from `after` until `n` events came back (in as many pages as it takes).
async fn read_until(store: &Store, after: EventCursor, n: usize) -> borg_store::EventPage {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut all = borg_store::EventPage {
        events: vec![],
        next: after,
    };
    while all.events.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "only {:?} arrived",
            reasons(&all)
        );
        let page = store.events_after(all.next, 100).await.unwrap();
        all.next = page.next;
        all.events.extend(page.events);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    all
}

fn reasons(page: &borg_store::EventPage) -> Vec<String> {
    page.events
        .iter()
        .map(|e| e.reason.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn an_event_that_commits_late_is_not_skipped() {
    let store = store().await;
    let pool = store.pool();

    // `early` takes its id first but commits last.
    let mut early = borg_store::begin(pool).await.unwrap();
    insert(&mut early, "early").await;
    let mut late = borg_store::begin(pool).await.unwrap();
    insert(&mut late, "late").await;
    late.commit().await.unwrap();

    // `late` is committed, but a transaction older than it is still open:
    // returning `late` now would let a reader resume past `early`.
    let page = store
        .events_after(EventCursor::default(), 100)
        .await
        .unwrap();
    assert!(
        page.events.is_empty(),
        "read past an open transaction: {:?}",
        reasons(&page)
    );
    assert_eq!(page.next, EventCursor::default());

    early.commit().await.unwrap();
    // The snapshot's xmin is cluster-wide: other tests' transactions on this
    // server may hold the read back for a moment; it must still never skip.
    let page = read_until(&store, page.next, 2).await;
    assert_eq!(reasons(&page), ["early", "late"]);

    // Resuming from the cursor (as text, the way a client sends it back) gives only what is new.
    let cursor: EventCursor = page.next.to_string().parse().unwrap();
    let mut conn = pool.acquire().await.unwrap();
    insert(&mut conn, "third").await;
    drop(conn);
    let page = read_until(&store, cursor, 1).await;
    assert_eq!(reasons(&page), ["third"]);
    let again = store.events_after(page.next, 100).await.unwrap();
    assert!(again.events.is_empty());
}

#[tokio::test]
async fn pages_are_contiguous() {
    let store = store().await;
    let mut conn = store.pool().acquire().await.unwrap();
    for i in 0..7 {
        insert(&mut conn, &format!("e{i}")).await;
    }
    drop(conn);
    // Wait until all are readable, then page through them three at a time.
    read_until(&store, EventCursor::default(), 7).await;
    let mut cursor = EventCursor::default();
    let mut seen = Vec::new();
    loop {
        let page = store.events_after(cursor, 3).await.unwrap();
        if page.events.is_empty() {
            break;
        }
        assert!(page.events.len() <= 3);
        seen.extend(reasons(&page));
        cursor = page.next;
    }
    assert_eq!(seen, (0..7).map(|i| format!("e{i}")).collect::<Vec<_>>());
    assert!("12".parse::<EventCursor>().is_err());
}
