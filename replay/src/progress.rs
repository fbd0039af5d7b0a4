//! Progress of a running replay: a bar with rate and ETA on a terminal, a log line
//! every few seconds otherwise (a CI log, a file, a pipe), so an operator always sees
//! how far it is and how long it has left.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    total: Option<u64>,
    read: AtomicU64,
    started: Instant,
    every: Duration,
    last_line: Mutex<Instant>,
}

impl Progress {
    /// A progress display for `total` events (if known): a bar when `tty`, else log
    /// lines every `every`.
    pub fn new(total: Option<u64>, already: u64, tty: bool, every: Duration) -> Progress {
        let bar = tty.then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
            let template = if total.is_some() {
                "{spinner} replay [{elapsed_precise}] {wide_bar} {pos}/{len} events {per_sec} ETA {eta}"
            } else {
                "{spinner} replay [{elapsed_precise}] {pos} events {per_sec}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_position(already);
            bar
        });
        Progress {
            bar,
            total,
            read: AtomicU64::new(already),
            started: Instant::now(),
            every,
            last_line: Mutex::new(Instant::now()),
        }
    }

    /// `n` more events read.
    pub fn add(&self, n: u64) {
        let read = self.read.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(bar) = &self.bar {
            bar.set_position(read);
            return;
        }
        let due = {
            let Ok(mut last) = self.last_line.lock() else {
                return;
            };
            if last.elapsed() >= self.every {
                *last = Instant::now();
                true
            } else {
                false
            }
        };
        if due {
            eprintln!("{}", self.line(read));
        }
    }

    /// The log line for `read` events so far.
    pub fn line(&self, read: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(f64::EPSILON);
        let rate = read as f64 / secs;
        match self.total {
            Some(total) if total > 0 => {
                let left = total.saturating_sub(read) as f64 / rate.max(f64::EPSILON);
                format!(
                    "replay: {read}/{total} events ({:.0} %), {rate:.0} events/s, ETA {}",
                    100.0 * read as f64 / total as f64,
                    humanize(left)
                )
            }
            _ => format!("replay: {read} events, {rate:.0} events/s"),
        }
    }

    /// Ends the display.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

fn humanize(secs: f64) -> String {
    if !secs.is_finite() {
        return "unknown".to_owned();
    }
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_line_says_how_far_how_fast_and_how_long() {
        let p = Progress::new(Some(1000), 0, false, Duration::from_secs(3600));
        let line = p.line(250);
        assert!(line.starts_with("replay: 250/1000 events (25 %), "), "{line}");
        assert!(line.contains("events/s, ETA "), "{line}");
        let unknown = Progress::new(None, 0, false, Duration::from_secs(3600));
        assert!(unknown.line(5).starts_with("replay: 5 events, "));
        assert_eq!(humanize(3725.0), "1h02m");
        assert_eq!(humanize(61.0), "1m01s");
    }
}
