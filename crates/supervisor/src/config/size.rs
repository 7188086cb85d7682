//! Byte sizes in the configuration: a whole number of bytes or a string
//! with a binary suffix (`"4MiB"`, `"16K"`, `"32M"`).

use serde::{Deserialize, Deserializer};

/// A byte size as written in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub usize);

impl Size {
    /// `"512"`, `"16K"`, `"4MiB"`, `"1g"` (powers of 1024).
    pub fn parse(text: &str) -> Result<Size, String> {
        let bad = || {
            format!("{text:?} is not a size: a number of bytes, optionally with K, M or G (powers of 1024)")
        };
        let t = text.trim();
        let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, suffix) = t.split_at(end);
        let n: usize = digits.parse().map_err(|_| bad())?;
        let unit: usize = match suffix.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            _ => return Err(bad()),
        };
        n.checked_mul(unit).map(Size).ok_or_else(bad)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => usize::try_from(n)
                .map(Size)
                .map_err(|_| serde::de::Error::custom(format!("{n} bytes is too large"))),
            Raw::Text(t) => Size::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(Size::parse("512"), Ok(Size(512)));
        assert_eq!(Size::parse("16K"), Ok(Size(16 << 10)));
        assert_eq!(Size::parse(" 4MiB "), Ok(Size(4 << 20)));
        assert_eq!(Size::parse("1g"), Ok(Size(1 << 30)));
        assert!(Size::parse("4 apples").unwrap_err().contains("not a size"));
        assert!(Size::parse("").is_err());
        assert!(Size::parse("-1").is_err());
    }
}
