//! Sizes as a person reads them at a terminal (issue 10): `8.4 MB` rather than
//! `8388608 bytes`. Pipes keep exact bytes, which scripts parse. One convention everywhere
//! (issue 20): decimal units, as rates (`MB/s`) and `limit_rate`'s `K`, `M`, `G` are.

/// `bytes` in the largest decimal unit that keeps the number at least 1, one decimal
/// (`100 bytes`, `600.0 kB`, `8.4 MB`, `1.1 GB`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `human(bytes)` at a terminal, else the exact `<bytes> bytes` of pipe mode.
pub fn shown(bytes: u64, on_terminal: bool) -> String {
    match on_terminal {
        true => human(bytes),
        false => format!("{bytes} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(0), "0 bytes");
        assert_eq!(human(999), "999 bytes");
        assert_eq!(human(1000), "1.0 kB");
        assert_eq!(human(600_000), "600.0 kB");
        assert_eq!(human(999_999), "1.0 MB");
        assert_eq!(human(8 * 1024 * 1024), "8.4 MB");
        assert_eq!(human(1_500_000_000), "1.5 GB");
        assert_eq!(shown(8 * 1024 * 1024, false), "8388608 bytes");
        assert_eq!(shown(8 * 1024 * 1024, true), "8.4 MB");
    }
}
