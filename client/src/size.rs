//! Sizes as a person reads them at a terminal (issue 10): `8.0 MiB` rather than
//! `8388608 bytes`. Pipes keep exact bytes, which scripts parse.

/// `bytes` in the largest binary unit that keeps the number at least 1, one decimal
/// (`100 bytes`, `600.0 KiB`, `8.0 MiB`, `1.0 GiB`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
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
        assert_eq!(human(1023), "1023 bytes");
        assert_eq!(human(1024), "1.0 KiB");
        assert_eq!(human(600 * 1024), "600.0 KiB");
        assert_eq!(human(8 * 1024 * 1024), "8.0 MiB");
        assert_eq!(human(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(shown(8 * 1024 * 1024, false), "8388608 bytes");
        assert_eq!(shown(8 * 1024 * 1024, true), "8.0 MiB");
    }
}
