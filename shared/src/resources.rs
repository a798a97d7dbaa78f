//! Resource units. The spec speaks in cores (`0.5`, `"500m"`) and byte sizes
//! (`"64Mi"`); everything stored or compared is an integer newtype so that
//! millicores can never be added to bytes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// CPU in millicores (1000 = one core).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[schema(example = 250)]
#[serde(transparent)]
pub struct MilliCpu(pub u64);

/// A size in bytes (memory, disk).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[schema(example = 67108864)]
#[serde(transparent)]
pub struct Bytes(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("must not be negative")]
    Negative,
    #[error("`{0}` is not a number")]
    NotANumber(String),
    #[error("unknown unit `{0}` (use m for millicores)")]
    UnknownCpuUnit(String),
    #[error("unknown unit `{0}` (use Ki, Mi, Gi, Ti, or k, M, G, T)")]
    UnknownSizeUnit(String),
    #[error("is too large")]
    TooLarge,
}

/// A number or a string, as a spec may write `cpu: 2` or `cpu: "500m"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    Number(f64),
    Text(String),
}

fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(s.len());
    (&s[..end], s[end..].trim())
}

fn parse_f64(num: &str, whole: &str) -> Result<f64, UnitError> {
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| UnitError::NotANumber(whole.to_string()))?;
    if !v.is_finite() {
        return Err(UnitError::NotANumber(whole.to_string()));
    }
    if v < 0.0 {
        return Err(UnitError::Negative);
    }
    Ok(v)
}

impl MilliCpu {
    pub fn parse(q: &Quantity) -> Result<Self, UnitError> {
        let cores = match q {
            Quantity::Number(n) => parse_f64(&n.to_string(), &n.to_string())?,
            Quantity::Text(s) => {
                let s = s.trim();
                let (num, unit) = split_number(s);
                let v = parse_f64(num, s)?;
                match unit {
                    "" => v,
                    "m" => v / 1000.0,
                    other => return Err(UnitError::UnknownCpuUnit(other.to_string())),
                }
            }
        };
        let milli = (cores * 1000.0).round();
        if milli > u32::MAX as f64 {
            return Err(UnitError::TooLarge);
        }
        Ok(MilliCpu(milli as u64))
    }
}

impl fmt::Display for MilliCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("k", 1_000),
    ("K", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
];

impl Bytes {
    pub fn parse(q: &Quantity) -> Result<Self, UnitError> {
        let (v, mult) = match q {
            Quantity::Number(n) => (parse_f64(&n.to_string(), &n.to_string())?, 1u64),
            Quantity::Text(s) => {
                let s = s.trim();
                let (num, unit) = split_number(s);
                let v = parse_f64(num, s)?;
                let mult = SIZE_UNITS
                    .iter()
                    .find(|(u, _)| *u == unit)
                    .map(|(_, m)| *m)
                    .ok_or_else(|| UnitError::UnknownSizeUnit(unit.to_string()))?;
                (v, mult)
            }
        };
        let bytes = (v * mult as f64).round();
        // Stored as BIGINT: keep well inside i64.
        if bytes >= (1u64 << 62) as f64 {
            return Err(UnitError::TooLarge);
        }
        Ok(Bytes(bytes as u64))
    }
}

impl Bytes {
    /// Exact form for storage: a whole binary unit (`64Mi`) or plain bytes.
    pub fn exact(&self) -> String {
        for (unit, mult) in [
            ("Ti", 1u64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if self.0 >= mult && self.0.is_multiple_of(mult) {
                return format!("{}{}", self.0 / mult, unit);
            }
        }
        self.0.to_string()
    }
}

impl fmt::Display for Bytes {
    /// Binary units, exact when the value is a whole multiple (`64Mi`), else one decimal (`1.5Gi`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, mult) in [
            ("Ti", 1u64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if self.0 >= mult {
                return if self.0.is_multiple_of(mult) {
                    write!(f, "{}{}", self.0 / mult, unit)
                } else {
                    write!(f, "{:.1}{}", self.0 as f64 / mult as f64, unit)
                };
            }
        }
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Quantity {
        Quantity::Text(s.to_string())
    }

    #[test]
    fn cpu_units() {
        assert_eq!(MilliCpu::parse(&Quantity::Number(0.5)), Ok(MilliCpu(500)));
        assert_eq!(MilliCpu::parse(&Quantity::Number(2.0)), Ok(MilliCpu(2000)));
        assert_eq!(MilliCpu::parse(&t("250m")), Ok(MilliCpu(250)));
        assert_eq!(MilliCpu::parse(&t("1.5")), Ok(MilliCpu(1500)));
        assert_eq!(MilliCpu::parse(&t("-1")), Err(UnitError::Negative));
        assert_eq!(
            MilliCpu::parse(&Quantity::Number(-0.5)),
            Err(UnitError::Negative)
        );
        assert!(matches!(
            MilliCpu::parse(&t("2 cores")),
            Err(UnitError::UnknownCpuUnit(_))
        ));
        assert!(matches!(
            MilliCpu::parse(&t("abc")),
            Err(UnitError::NotANumber(_))
        ));
        assert!(matches!(
            MilliCpu::parse(&t("")),
            Err(UnitError::NotANumber(_))
        ));
        assert_eq!(
            MilliCpu::parse(&Quantity::Number(1e12)),
            Err(UnitError::TooLarge)
        );
    }

    #[test]
    fn size_units() {
        assert_eq!(Bytes::parse(&t("64Mi")), Ok(Bytes(64 << 20)));
        assert_eq!(Bytes::parse(&t("1Gi")), Ok(Bytes(1 << 30)));
        assert_eq!(Bytes::parse(&t("512Ki")), Ok(Bytes(512 << 10)));
        assert_eq!(Bytes::parse(&t("1G")), Ok(Bytes(1_000_000_000)));
        assert_eq!(Bytes::parse(&t("100")), Ok(Bytes(100)));
        assert_eq!(Bytes::parse(&Quantity::Number(4096.0)), Ok(Bytes(4096)));
        assert_eq!(Bytes::parse(&t("-5Mi")), Err(UnitError::Negative));
        assert!(matches!(
            Bytes::parse(&t("5Xi")),
            Err(UnitError::UnknownSizeUnit(_))
        ));
        assert!(matches!(
            Bytes::parse(&t("Mi")),
            Err(UnitError::NotANumber(_))
        ));
        assert_eq!(Bytes::parse(&t("9999999Ti")), Err(UnitError::TooLarge));
    }

    #[test]
    fn display_round_trips() {
        assert_eq!(Bytes(64 << 20).to_string(), "64Mi");
        assert_eq!(Bytes(3 << 29).to_string(), "1.5Gi");
        assert_eq!(Bytes(100).to_string(), "100");
        assert_eq!(MilliCpu(2000).to_string(), "2");
        assert_eq!(MilliCpu(250).to_string(), "250m");
    }

    proptest::proptest! {
        #[test]
        fn bytes_display_parses_back_for_whole_units(n in 0u64..1_000_000, unit in 0usize..4) {
            let b = Bytes(n << (10 * unit));
            let shown = b.to_string();
            if !shown.contains('.') {
                proptest::prop_assert_eq!(Bytes::parse(&Quantity::Text(shown)), Ok(b));
            }
        }

        #[test]
        fn parse_never_panics(s in ".{0,12}") {
            let _ = Bytes::parse(&Quantity::Text(s.clone()));
            let _ = MilliCpu::parse(&Quantity::Text(s));
        }
    }
}
