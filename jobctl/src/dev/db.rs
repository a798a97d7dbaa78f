//! The dev cell's database: `borg` on the embedded server, owned by the role
//! `borg`, created on first start.

use anyhow::Context;

pub const DATABASE: &str = "borg";

/// The URL the components use: the cell's role (no superuser) as owner of the
/// `borg` database, both made on the first start.
pub async fn cell_database(pg: &devpg::PgServer) -> anyhow::Result<String> {
    let url = pg
        .cell_url(DATABASE)
        .await
        .context("setting up the cell's role and database")?;
    Ok(url)
}
