//! Quota per owner and priority band: how much cpu and memory the owner's live
//! attempts of that band may hold at once. Work over quota is accepted and
//! waits (`pending`, with the reason); it is never refused.

use crate::spec::{opt_cpu_qty, opt_size_qty};
use crate::wire::Capacity;
use crate::{Bytes, MilliCpu};
use serde::{Deserialize, Serialize};

/// Priority bands. Production (priority >= 200) may preempt lower bands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    Production,
    Batch,
}

impl Band {
    /// The lowest priority of the production band.
    pub const PRODUCTION_MIN: i64 = 200;
    pub const ALL: [Band; 2] = [Band::Production, Band::Batch];

    pub fn of(priority: i64) -> Band {
        if priority >= Self::PRODUCTION_MIN {
            Band::Production
        } else {
            Band::Batch
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Band::Production => "production",
            Band::Batch => "batch",
        }
    }

    pub fn parse(s: &str) -> Option<Band> {
        Band::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

impl std::fmt::Display for Band {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A band's limits; an absent dimension is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Cores, as in a job spec (`"10"`, `"2500m"`).
    #[schema(schema_with = crate::spec::schema::cpu_amount)]
    #[serde(default, with = "opt_cpu_qty", skip_serializing_if = "Option::is_none")]
    pub cpu: Option<MilliCpu>,
    /// A size, as in a job spec (`"64Gi"`).
    #[schema(schema_with = crate::spec::schema::size)]
    #[serde(
        default,
        with = "opt_size_qty",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory: Option<Bytes>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none()
    }
}

/// `PUT /v1/quotas/{owner}`: the owner's whole quota; an absent band is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production: Option<Limits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Limits>,
}

impl QuotaSpec {
    pub fn band(&self, band: Band) -> Option<&Limits> {
        match band {
            Band::Production => self.production.as_ref(),
            Band::Batch => self.batch.as_ref(),
        }
    }

    pub fn band_mut(&mut self, band: Band) -> &mut Option<Limits> {
        match band {
            Band::Production => &mut self.production,
            Band::Batch => &mut self.batch,
        }
    }
}

/// One band of `GET /v1/quotas/{owner}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BandUsage {
    /// Absent when the band is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limits>,
    /// Requests of the owner's live attempts in this band.
    pub in_use: Capacity,
}

/// `GET /v1/quotas/{owner}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuotaView {
    pub owner: String,
    pub production: BandUsage,
    pub batch: BandUsage,
}

/// Would `in_use + ask` stay within `limit`? If not: the first dimension over,
/// as (name, limit, in use, ask) rendered for people.
pub fn over(limit: &Limits, in_use: &Capacity, ask: &Capacity) -> Option<[String; 4]> {
    if let Some(cap) = limit.cpu {
        if in_use.cpu.0.saturating_add(ask.cpu.0) > cap.0 {
            return Some([
                "cpu".into(),
                cap.to_string(),
                in_use.cpu.to_string(),
                ask.cpu.to_string(),
            ]);
        }
    }
    if let Some(cap) = limit.memory {
        if in_use.memory.0.saturating_add(ask.memory.0) > cap.0 {
            return Some([
                "memory".into(),
                cap.to_string(),
                in_use.memory.to_string(),
                ask.memory.to_string(),
            ]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(cpu: u64, memory: u64) -> Capacity {
        Capacity {
            cpu: MilliCpu(cpu),
            memory: Bytes(memory),
            disk: Bytes(0),
        }
    }

    #[test]
    fn bands_split_at_200() {
        assert_eq!(Band::of(199), Band::Batch);
        assert_eq!(Band::of(200), Band::Production);
        assert_eq!(Band::parse("production"), Some(Band::Production));
        assert_eq!(Band::parse("prod"), None);
    }

    #[test]
    fn over_names_the_first_dimension_past_its_limit() {
        let limit = Limits {
            cpu: Some(MilliCpu(10_000)),
            memory: None,
        };
        assert_eq!(over(&limit, &cap(8000, 1 << 40), &cap(2000, 1 << 40)), None);
        assert_eq!(
            over(&limit, &cap(8000, 0), &cap(4000, 0)),
            Some(["cpu".into(), "10".into(), "8".into(), "4".into()])
        );
    }

    #[test]
    fn spec_reads_units_and_refuses_unknown_fields() {
        let q: QuotaSpec =
            serde_json::from_str(r#"{"production": {"cpu": "10", "memory": "64Gi"}}"#).unwrap();
        assert_eq!(q.production.unwrap().memory, Some(Bytes(64 << 30)));
        assert_eq!(q.batch, None);
        assert!(serde_json::from_str::<QuotaSpec>(r#"{"prod": {}}"#).is_err());
    }
}
