//! What the device is: board (from `/proc/device-tree/model` unless configured), RAM (from
//! `/proc/meminfo`), host name (`/proc/sys/kernel/hostname`, else `/etc/hostname`), serial
//! number (`/proc/device-tree/serial-number` on a Pi), accelerator and runtime versions (from
//! configuration).

use edgecd_api::protocol::Inventory;
use std::collections::BTreeMap;

/// Maps a device-tree model string to a board id (`Raspberry Pi 5 Model B Rev 1.0` → `rpi5`).
pub fn board_id(model: &str) -> String {
    let m = model.trim_matches(char::from(0)).trim();
    if let Some(rest) = m.strip_prefix("Raspberry Pi ") {
        let n: String = rest
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        if let Some(cm) = rest.strip_prefix("Compute Module ") {
            let cm: String = cm.chars().take_while(char::is_ascii_digit).collect();
            return format!("rpi-cm{cm}");
        }
        return format!("rpi{}", n.to_ascii_lowercase());
    }
    m.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// Reads `MemTotal` from a `/proc/meminfo` text, in MB.
pub fn ram_mb(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb / 1024)
}

/// A device-tree or `/proc` text as a value: NULs and surrounding whitespace trimmed, `None`
/// when nothing is left.
pub fn text_value(raw: &str) -> Option<String> {
    let v = raw.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!v.is_empty()).then(|| v.to_string())
}

/// The first of `paths` that holds a non-empty value.
fn read_first(paths: &[&str]) -> Option<String> {
    paths
        .iter()
        .find_map(|p| text_value(&std::fs::read_to_string(p).ok()?))
}

/// Builds the inventory from the running system and configuration.
pub fn detect(
    board: Option<&str>,
    accelerator: Option<&str>,
    runtimes: &BTreeMap<String, String>,
) -> Inventory {
    let model = std::fs::read_to_string("/proc/device-tree/model").ok();
    let board = board
        .map(str::to_string)
        .or_else(|| model.as_deref().map(board_id))
        .unwrap_or_else(|| format!("generic-{}", std::env::consts::ARCH));
    Inventory {
        max_apps: Default::default(),
        storage_mb: Default::default(),
        board,
        board_model: model.as_deref().and_then(text_value),
        ram_mb: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .as_deref()
            .and_then(ram_mb)
            .unwrap_or(0),
        accelerator: accelerator.map(str::to_string),
        runtimes: runtimes.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: read_first(&["/proc/sys/kernel/hostname", "/etc/hostname"]),
        serial: read_first(&["/proc/device-tree/serial-number"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boards_and_ram() {
        assert_eq!(board_id("Raspberry Pi 5 Model B Rev 1.0\0"), "rpi5");
        assert_eq!(board_id("Raspberry Pi 4 Model B Rev 1.5"), "rpi4");
        assert_eq!(board_id("Raspberry Pi Compute Module 4 Rev 1.1"), "rpi-cm4");
        assert_eq!(
            board_id("NVIDIA Jetson Orin Nano"),
            "nvidia-jetson-orin-nano"
        );
        assert_eq!(
            ram_mb("MemTotal:        8245812 kB\nMemFree: 1 kB\n"),
            Some(8052)
        );
    }

    #[test]
    fn serial_numbers_lose_their_nul() {
        assert_eq!(
            text_value("10000000a3b2c1d0\0").as_deref(),
            Some("10000000a3b2c1d0")
        );
        assert_eq!(text_value("pi-0001\n").as_deref(), Some("pi-0001"));
        assert_eq!(text_value("\0\n"), None);
    }
}
