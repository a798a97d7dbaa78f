//! What the store's integration tests share: a store on a fresh database and
//! a registered machine.

use borg_shared::wire::{Capacity, RegisterMachine};
use borg_shared::{Bytes, MachineId, MilliCpu};
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
pub async fn machine(store: &Store, name: &str) -> MachineId {
    let (m, _) = store
        .register_machine(&RegisterMachine {
            name: name.into(),
            address: "http://127.0.0.1:1".into(),
            capacity: Capacity {
                cpu: MilliCpu(4000),
                memory: Bytes(8 << 30),
                disk: Bytes(0),
            },
            labels: Default::default(),
            isolation: None,
            version: None,
            ports: Default::default(),
        })
        .await
        .unwrap();
    m.id
}
