//! Kubernetes resource quantities (`5Gi`, `500M`, `1.5Ti`) as byte counts,
//! and the human form pgplan prints sizes and counts in.

/// Parse a storage quantity into bytes. Accepts the binary suffixes
/// (Ki Mi Gi Ti Pi Ei), the decimal ones (k M G T P E), plain numbers and
/// decimal fractions; rejects negative and zero-sized values' syntax errors.
pub fn parse_bytes(q: &str) -> Result<u64, String> {
    let q = q.trim();
    if q.is_empty() {
        return Err("a quantity cannot be empty".into());
    }
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1
    {
        return Err(format!(
            "`{q}` is not a quantity: it must start with a number"
        ));
    }
    let mult: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        other => {
            return Err(format!(
                "`{other}` is not a quantity suffix (use Ki, Mi, Gi, Ti or k, M, G, T)"
            ))
        }
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let int: u128 = int.parse().map_err(|_| format!("`{q}` is too large"))?;
    let mut bytes = int
        .checked_mul(mult)
        .ok_or_else(|| format!("`{q}` is too large"))?;
    if !frac.is_empty() {
        let digits = frac.len().min(18) as u32;
        let f: u128 = frac[..digits as usize]
            .parse()
            .map_err(|_| format!("`{q}` is not a quantity"))?;
        bytes += f * mult / 10u128.pow(digits);
    }
    u64::try_from(bytes).map_err(|_| format!("`{q}` is too large"))
}

/// Sizes as people read them: `12 MiB`, `1.5 GiB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 100.0 || (value - value.round()).abs() < 0.05 {
        format!("{} {}", value.round() as u64, UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `1 table`, `3 tables` (regular English plurals only).
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A duration as people write it in a spec: `90`, `90s`, `5m`, `1h`, or
/// a sum such as `1m30s`; whole seconds, more than zero.
pub fn parse_seconds(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return (n > 0).then_some(n);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return None,
        };
        let n: u64 = digits.parse().ok()?;
        digits.clear();
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    (digits.is_empty() && total > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_seconds("300"), Some(300));
        assert_eq!(parse_seconds("5m"), Some(300));
        assert_eq!(parse_seconds("1m30s"), Some(90));
        assert_eq!(parse_seconds("2h"), Some(7200));
        assert_eq!(parse_seconds("0s"), None);
        assert_eq!(parse_seconds("5 minutes"), None);
        assert_eq!(parse_seconds("5m3"), None);
        assert_eq!(parse_seconds(""), None);
    }

    #[test]
    fn parses_quantities() {
        assert_eq!(parse_bytes("5Gi"), Ok(5 << 30));
        assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_bytes("100M"), Ok(100_000_000));
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert!(parse_bytes("5GB").is_err());
        assert!(parse_bytes("Gi").is_err());
        assert!(parse_bytes("-5Gi").is_err());
        assert!(parse_bytes("99999999Ei").is_err());
    }

    #[test]
    fn prints_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(12 << 20), "12 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
