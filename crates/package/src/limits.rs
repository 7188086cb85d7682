//! The limits a package is loaded under, their defaults and the operator's
//! environment variables (`PAR_PACKAGE_MAX_ENTRIES`, `PAR_PACKAGE_MAX_BYTES`,
//! `PAR_PACKAGE_MAX_RATIO`).

use crate::error::PackageError;

/// Default most entries (files and folders) an archive may hold.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// Default most bytes an archive may expand to.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 1 << 30;
/// Default highest uncompressed:compressed ratio, of a large entry and of the
/// whole archive.
pub const DEFAULT_MAX_RATIO: u64 = 200;

/// Entries smaller than this are not checked for their own compression ratio:
/// small text files legitimately compress very well.
pub const ENTRY_RATIO_FLOOR: u64 = 1 << 20;
/// A whole archive expanding to no more than this is not checked for its
/// ratio (a small package of text compresses well and costs nothing).
pub const ARCHIVE_RATIO_FLOOR: u64 = 1 << 20;

pub const ENV_MAX_ENTRIES: &str = "PAR_PACKAGE_MAX_ENTRIES";
pub const ENV_MAX_BYTES: &str = "PAR_PACKAGE_MAX_BYTES";
pub const ENV_MAX_RATIO: &str = "PAR_PACKAGE_MAX_RATIO";

/// Most bytes an archive of `archive_bytes` may expand to under `max_ratio`
/// and `max_total`: the ratio applies only above [`ARCHIVE_RATIO_FLOOR`].
pub(crate) fn expansion_budget(archive_bytes: u64, max_ratio: u64, max_total: u64) -> u64 {
    archive_bytes
        .saturating_mul(max_ratio)
        .max(ARCHIVE_RATIO_FLOOR)
        .min(max_total)
}

/// A positive whole number, or a size with a binary suffix when `size` is set
/// (`512M`, `2GiB`, `100k`).
pub(crate) fn parse_limit(var: &'static str, value: &str, size: bool) -> Result<u64, PackageError> {
    let bad = |reason: &str| PackageError::BadLimit {
        var,
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let v = value.trim();
    let digits_end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, suffix) = v.split_at(digits_end);
    let expected = if size {
        "expected a positive number of bytes, optionally with K, M, G or T (powers of 1024)"
    } else {
        "expected a positive whole number"
    };
    if digits.is_empty() {
        return Err(bad(expected));
    }
    let n: u64 = digits.parse().map_err(|_| bad("number too large"))?;
    let unit = match suffix.trim().to_ascii_lowercase().as_str() {
        "" => 1,
        "k" | "kb" | "kib" if size => 1 << 10,
        "m" | "mb" | "mib" if size => 1 << 20,
        "g" | "gb" | "gib" if size => 1 << 30,
        "t" | "tb" | "tib" if size => 1 << 40,
        _ => return Err(bad(expected)),
    };
    let n = n.checked_mul(unit).ok_or_else(|| bad("number too large"))?;
    if n == 0 {
        return Err(bad(expected));
    }
    Ok(n)
}

/// The operator's limits: `(max_entries, max_total_bytes, max_ratio)`, each
/// from its variable when set (and not empty), else the default.
pub(crate) fn from_env() -> Result<(usize, u64, u64), PackageError> {
    let read = |var: &'static str, size: bool| -> Result<Option<u64>, PackageError> {
        match std::env::var(var) {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => parse_limit(var, &v, size).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => Err(PackageError::BadLimit {
                var,
                value: v.to_string_lossy().into_owned(),
                reason: "not valid UTF-8".into(),
            }),
        }
    };
    let entries = match read(ENV_MAX_ENTRIES, false)? {
        Some(n) => usize::try_from(n).map_err(|_| PackageError::BadLimit {
            var: ENV_MAX_ENTRIES,
            value: n.to_string(),
            reason: "number too large".into(),
        })?,
        None => DEFAULT_MAX_ENTRIES,
    };
    let bytes = read(ENV_MAX_BYTES, true)?.unwrap_or(DEFAULT_MAX_TOTAL_BYTES);
    let ratio = read(ENV_MAX_RATIO, false)?.unwrap_or(DEFAULT_MAX_RATIO);
    Ok((entries, bytes, ratio))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counts_and_sizes() {
        assert_eq!(parse_limit(ENV_MAX_RATIO, "50", false).unwrap(), 50);
        assert_eq!(
            parse_limit(ENV_MAX_BYTES, " 512M ", true).unwrap(),
            512 << 20
        );
        assert_eq!(parse_limit(ENV_MAX_BYTES, "2GiB", true).unwrap(), 2 << 30);
        assert_eq!(parse_limit(ENV_MAX_BYTES, "100k", true).unwrap(), 100 << 10);
        assert_eq!(parse_limit(ENV_MAX_BYTES, "4096", true).unwrap(), 4096);
        for bad in ["", "0", "-1", "1.5", "ten", "5M", "99999999999999999999999"] {
            let err = parse_limit(ENV_MAX_ENTRIES, bad, false).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("invalid PAR_PACKAGE_MAX_ENTRIES="),
                "{bad:?}: {err}"
            );
        }
        let err = parse_limit(ENV_MAX_BYTES, "1Q", true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid PAR_PACKAGE_MAX_BYTES=\"1Q\": expected a positive number of bytes, optionally with K, M, G or T (powers of 1024)"
        );
        assert!(parse_limit(ENV_MAX_BYTES, "20000000T", true).is_err());
    }

    #[test]
    fn the_budget_is_the_ratio_above_the_floor_under_the_total() {
        assert_eq!(expansion_budget(1000, 200, 1 << 30), ARCHIVE_RATIO_FLOOR);
        assert_eq!(expansion_budget(1 << 20, 200, 1 << 30), 200 << 20);
        assert_eq!(expansion_budget(100 << 20, 200, 1 << 30), 1 << 30);
        assert_eq!(expansion_budget(u64::MAX, u64::MAX, 5), 5);
    }
}
