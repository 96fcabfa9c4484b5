//! The server process's CPU use, from `/proc/self/stat` (Linux; elsewhere: unknown). The one
//! piece of the health module that does I/O; the meeting task calls it once a second.

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on every Linux ABI we run on).
const USER_HZ: f64 = 100.0;

/// Turns cumulative CPU time into a percentage of one core between two calls.
#[derive(Debug)]
pub struct CpuMeter {
    last: Option<(Instant, f64)>,
}

impl Default for CpuMeter {
    fn default() -> CpuMeter {
        CpuMeter::new()
    }
}

impl CpuMeter {
    /// A meter; the first sample only sets the baseline.
    pub fn new() -> CpuMeter {
        CpuMeter { last: None }
    }

    /// CPU use since the last call, percent of one core (None: unknown yet).
    pub fn sample(&mut self) -> Option<f64> {
        let secs = process_cpu_secs()?;
        let now = Instant::now();
        let pct = self.last.and_then(|(at, before)| {
            let wall = now.duration_since(at).as_secs_f64();
            (wall > 0.0).then(|| ((secs - before) / wall * 100.0).max(0.0))
        });
        self.last = Some((now, secs));
        pct
    }
}

/// utime + stime of this process, seconds.
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&stat)
}

/// Fields 14 and 15 (utime, stime) of a `/proc/<pid>/stat` line; the command name in
/// parentheses may hold spaces, so fields are counted after its closing parenthesis.
fn parse_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ")": state is field 3, so utime (14) is the 12th from here.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_spaces_in_the_name() {
        let line =
            "4242 (rt media (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 9 0 1 1 1";
        assert_eq!(parse_stat(line), Some(4.0));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        if cfg!(target_os = "linux") {
            let mut m = CpuMeter::new();
            assert_eq!(m.sample(), None, "the first sample sets the baseline");
            let mut x = 0u64;
            for i in 0..2_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            assert!(x != 1);
            assert!(m.sample().is_some());
        }
    }
}
