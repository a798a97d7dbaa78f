//! `jobctl quota get OWNER` and `jobctl quota set OWNER --band B [--cpu C] [--memory M]`.

use crate::client::Client;
use crate::output::{self, emit, Format};
use borg_shared::quota::{Band, BandUsage, Limits, QuotaView};
use borg_shared::resources::Quantity;
use borg_shared::{Bytes, MilliCpu};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Show an owner's quota per band and what its live work holds.
    Get {
        owner: String,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
    },
    /// Set one band of an owner's quota (the other band is kept). A dimension
    /// left out is unlimited; with neither, the band becomes unlimited.
    Set {
        owner: String,
        /// `production` (priority >= 200) or `batch`.
        #[arg(long, value_parser = parse_band)]
        band: Band,
        /// Cores, e.g. `10` or `2500m`.
        #[arg(long, value_parser = parse_cpu)]
        cpu: Option<MilliCpu>,
        /// A size, e.g. `64Gi`.
        #[arg(long, value_parser = parse_memory)]
        memory: Option<Bytes>,
    },
}

fn parse_band(s: &str) -> Result<Band, String> {
    Band::parse(s).ok_or_else(|| format!("`{s}` is not a band: use production or batch"))
}

fn parse_cpu(s: &str) -> Result<MilliCpu, String> {
    MilliCpu::parse(&Quantity::Text(s.to_string())).map_err(|e| format!("cpu `{s}` {e}"))
}

fn parse_memory(s: &str) -> Result<Bytes, String> {
    Bytes::parse(&Quantity::Text(s.to_string())).map_err(|e| format!("size `{s}` {e}"))
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    match args.action {
        Action::Get { owner, output } => {
            let view = client.quota(&owner).await?;
            let text = match output {
                Format::Json => output::json(&view)?,
                Format::Table => quota_table(&view),
            };
            emit(&text)?;
        }
        Action::Set {
            owner,
            band,
            cpu,
            memory,
        } => {
            let current = client.quota(&owner).await?;
            let mut spec = borg_shared::quota::QuotaSpec {
                production: current.production.limit,
                batch: current.batch.limit,
            };
            let limits = Limits { cpu, memory };
            *spec.band_mut(band) = (!limits.is_unlimited()).then_some(limits);
            let view = client.set_quota(&owner, &spec).await?;
            emit(&quota_table(&view))?;
        }
    }
    Ok(())
}

/// `BAND  CPU (used/limit)  MEMORY (used/limit)`.
pub fn quota_table(view: &QuotaView) -> String {
    let row = |band: Band, u: &BandUsage| {
        let limit = u.limit.unwrap_or_default();
        vec![
            band.to_string(),
            format!(
                "{}/{}",
                u.in_use.cpu,
                limit.cpu.map_or("unlimited".to_string(), |c| c.to_string())
            ),
            format!(
                "{}/{}",
                u.in_use.memory,
                limit
                    .memory
                    .map_or("unlimited".to_string(), |m| m.to_string())
            ),
        ]
    };
    output::table(
        &["BAND", "CPU", "MEMORY"],
        vec![
            row(Band::Production, &view.production),
            row(Band::Batch, &view.batch),
        ],
    )
}
