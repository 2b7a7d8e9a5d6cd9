//! Data tiers: how sensitive a request's data is. 1 is strictest.

use std::fmt;

use serde::{Deserialize, Serialize};

/// 1: personal data (strict residency); 2: derived or pseudonymized data; 3: no personal data.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Tier {
    Personal = 1,
    Derived = 2,
    NotPersonal = 3,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Personal, Tier::Derived, Tier::NotPersonal];

    pub fn number(self) -> u8 {
        self as u8
    }

    /// Index 0..3, for tables keyed by tier.
    pub fn index(self) -> usize {
        self as usize - 1
    }

    /// A stricter tier has a smaller number.
    pub fn is_stricter_or_equal(self, other: Tier) -> bool {
        self.number() <= other.number()
    }
}

impl TryFrom<u8> for Tier {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, String> {
        match n {
            1 => Ok(Tier::Personal),
            2 => Ok(Tier::Derived),
            3 => Ok(Tier::NotPersonal),
            _ => Err(format!("tier must be 1, 2 or 3, not {n}")),
        }
    }
}

impl From<Tier> for u8 {
    fn from(t: Tier) -> u8 {
        t.number()
    }
}

impl std::str::FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n: u8 = s
            .trim()
            .parse()
            .map_err(|_| format!("tier must be 1, 2 or 3, not '{s}'"))?;
        Tier::try_from(n)
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}
