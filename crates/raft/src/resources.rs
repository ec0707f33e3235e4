//! What a node reports about its resources, and the limits it is held to: the plain data of
//! RabbitMQ's memory and disk alarms. Measuring them (reading /proc and the filesystem) is the
//! server crate's job; this is what Admin.Status carries and Admin.SetMemoryHighWatermark
//! changes.

/// How much memory the node may use before its memory alarm fires (RabbitMQ's
/// `vm_memory_high_watermark`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MemoryLimit {
    /// A fraction of the memory available to the node (RAM, or its cgroup's limit if lower).
    Fraction(f64),
    /// Bytes.
    Absolute(u64),
}

impl MemoryLimit {
    /// The limit in bytes, given the memory available to the node.
    pub fn bytes(&self, available: u64) -> u64 {
        match *self {
            MemoryLimit::Fraction(f) => (available as f64 * f.clamp(0.0, 1.0)) as u64,
            MemoryLimit::Absolute(b) => b,
        }
    }
}

/// The limits of a node's resource alarms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResourceLimits {
    pub memory: MemoryLimit,
    /// Free bytes of the data directory's filesystem below which the disk alarm fires
    /// (RabbitMQ's `disk_free_limit`).
    pub disk_free: u64,
}

impl Default for ResourceLimits {
    /// RabbitMQ 4's defaults: 60 % of the memory, 50 MB of disk.
    fn default() -> ResourceLimits {
        ResourceLimits {
            memory: MemoryLimit::Fraction(0.6),
            disk_free: 50_000_000,
        }
    }
}

/// One reading of a node's resources against its limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeResources {
    /// Resident memory of the process, bytes.
    pub mem_used: u64,
    pub mem_limit: u64,
    /// Free bytes of the data directory's filesystem; `None` if it could not be read.
    pub disk_free: Option<u64>,
    pub disk_free_limit: u64,
    pub mem_alarm: bool,
    pub disk_free_alarm: bool,
}

/// The file descriptors this process has open (Linux: `/proc/self/fd`).
pub fn open_fds() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64)
}

/// This process's soft limit of open files (Linux: `/proc/self/limits`); `None` if unlimited.
pub fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Parses a byte size as RabbitMQ's configuration writes it: `50000000`, `50MB`, `2GB`,
/// `512MiB`, `1.5GB` (kB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB of 1024).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 50MB, 2GiB, 1000000)"))?;
    let factor: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "k" | "kB" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "T" | "TB" => 1e12,
        "Ki" | "KiB" => 1024.0,
        "Mi" | "MiB" => 1024.0 * 1024.0,
        "Gi" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "Ti" | "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit {other:?} in {text:?}")),
    };
    Ok((number * factor) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_rabbitmq_writes_them() {
        assert_eq!(parse_bytes("50000000"), Ok(50_000_000));
        assert_eq!(parse_bytes("50MB"), Ok(50_000_000));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5GB"), Ok(1_500_000_000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5XB").is_err());
    }

    #[test]
    fn a_fraction_is_of_the_memory_available() {
        assert_eq!(MemoryLimit::Fraction(0.5).bytes(1_000), 500);
        assert_eq!(MemoryLimit::Fraction(7.0).bytes(1_000), 1_000);
        assert_eq!(MemoryLimit::Absolute(42).bytes(1_000), 42);
    }
}
