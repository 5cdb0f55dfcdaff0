//! Human sizes (`64MiB`, `2G`, `512k`), as flags and config files write them.

/// Parses sizes like `1048576`, `64MiB`, `64M`, `2GiB`, `512k` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| {
        format!("{s:?} is not a size: use a number with an optional unit, like 10MiB")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
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

#[cfg(test)]
mod tests {
    use super::parse_size;

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
