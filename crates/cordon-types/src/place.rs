//! Places: ISO countries, jurisdictions (areas with one data-protection regime) and cloud regions.
//!
//! `Country` and `Jurisdiction` are small `Copy` values (inline bytes), because the decision hot path
//! compares and hashes them constantly; `Region` is a validated `cloud:name` string.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a place could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("'{0}' is not an ISO 3166-1 alpha-2 country code (two capital letters)")]
    Country(String),
    #[error("'{0}' is not a jurisdiction id (2-8 capital letters or digits)")]
    Jurisdiction(String),
    #[error("'{0}' is not a region id of the form cloud:name (e.g. aws:eu-central-1)")]
    Region(String),
}

/// An ISO 3166-1 alpha-2 country code, e.g. `DE`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII capitals.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl FromStr for Country {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() == 2 && b.iter().all(u8::is_ascii_uppercase) {
            Ok(Country([b[0], b[1]]))
        } else {
            Err(ParseError::Country(s.to_string()))
        }
    }
}

/// A jurisdiction id: the area inside which personal data moves freely under one regime
/// (`EU`, `UK`, `CH`, `US`, ...). Up to 8 capital letters or digits, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jurisdiction {
    len: u8,
    bytes: [u8; 8],
}

impl Jurisdiction {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }
}

impl FromStr for Jurisdiction {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = (2..=8).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_');
        if !ok {
            return Err(ParseError::Jurisdiction(s.to_string()));
        }
        let mut bytes = [0u8; 8];
        bytes[..b.len()].copy_from_slice(b);
        Ok(Jurisdiction {
            len: b.len() as u8,
            bytes,
        })
    }
}

/// A place where compute or storage runs, written `cloud:name` (`aws:eu-central-1`, `dc:fra-1`).
/// Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region(Arc<str>);

impl Region {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The cloud part (`aws` in `aws:eu-central-1`).
    pub fn cloud(&self) -> &str {
        self.0.split_once(':').map(|(c, _)| c).unwrap_or("")
    }
}

impl FromStr for Region {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid_part = |p: &str| {
            !p.is_empty()
                && p.bytes().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_' || c == b'.'
                })
        };
        match s.split_once(':') {
            Some((cloud, name)) if valid_part(cloud) && valid_part(name) => Ok(Region(Arc::from(s))),
            _ => Err(ParseError::Region(s.to_string())),
        }
    }
}

macro_rules! string_like {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.as_str())
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
string_like!(Country);
string_like!(Jurisdiction);
string_like!(Region);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_places() {
        assert_eq!("DE".parse::<Country>().unwrap().as_str(), "DE");
        assert!("de".parse::<Country>().is_err());
        assert!("DEU".parse::<Country>().is_err());
        assert_eq!("EU".parse::<Jurisdiction>().unwrap().as_str(), "EU");
        assert!("e".parse::<Jurisdiction>().is_err());
        assert!("TOOLONGID".parse::<Jurisdiction>().is_err());
        let r: Region = "aws:eu-central-1".parse().unwrap();
        assert_eq!(r.cloud(), "aws");
        assert!("eu-central-1".parse::<Region>().is_err());
        assert!("aws:".parse::<Region>().is_err());
        assert!("AWS:eu".parse::<Region>().is_err());
    }

    #[test]
    fn serde_round_trip_is_the_plain_string() {
        let j: Jurisdiction = "UK".parse().unwrap();
        assert_eq!(format!("{j}"), "UK");
        assert_eq!(format!("{j:?}"), "UK");
    }
}
