//! Human sizes (`64MiB`, `2G`, `512k`) and durations (`30s`, `10m`, `2h`), as
//! flags and config files write them.

use std::time::Duration;

/// Splits `t` into its leading number (digits and dots) and the unit after it.
fn number_and_unit(t: &str) -> Option<(f64, &str)> {
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

/// Parses sizes like `1048576`, `64MiB`, `64M`, `2GiB`, `512k` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, unit) = number_and_unit(s.trim()).ok_or_else(|| {
        format!("{s:?} is not a size: use a number with an optional unit, like 10MiB")
    })?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => {
            return Err(format!(
                "unknown size unit {u:?} in {s:?}: use B, KiB, MiB, GiB or TiB"
            ))
        }
    };
    let v = num * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(v as u64)
}

/// Parses durations like `30` or `30s`, `250ms`, `10m`, `2h`, `1d` (at most
/// 10⁹ seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = number_and_unit(s.trim()).ok_or_else(|| {
        format!("{s:?} is not a duration: use a number with a unit, like 30s, 10m or 2h")
    })?;
    let mult = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        u => {
            return Err(format!(
                "unknown duration unit {u:?} in {s:?}: use ms, s, m, h or d"
            ))
        }
    };
    let v = num * mult;
    if !v.is_finite() || !(0.0..=1e9).contains(&v) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(" 5 m "), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("5 fortnights")
            .unwrap_err()
            .contains("unknown duration unit"));
        assert!(parse_duration("1e400").is_err());
        assert!(parse_duration("99999999999d")
            .unwrap_err()
            .contains("out of range"));
    }

    #[test]
    fn sizes_with_and_without_units_parse_in_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size(" 512k "), Ok(512 << 10));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
    }

    #[test]
    fn bad_sizes_say_what_is_wrong() {
        assert!(parse_size("ten").unwrap_err().contains("not a size"));
        assert!(parse_size("5 parsecs")
            .unwrap_err()
            .contains("unknown size unit"));
        assert!(parse_size("99999999999TiB")
            .unwrap_err()
            .contains("out of range"));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1e400").is_err());
    }
}
