//! What the store's integration tests share: a store on a fresh database and
//! a registered machine.

use borg_shared::MachineId;
use borg_store::Store;
use sqlx::postgres::PgPoolOptions;

pub async fn store() -> Store {
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

/// A machine of 4 cores and 8 GiB named `name`.
#[allow(dead_code)] // not every test binary registers one
pub async fn machine(store: &Store, name: &str) -> MachineId {
    borg_store::fixtures::test_machine(store, name)
        .await
        .unwrap()
}
