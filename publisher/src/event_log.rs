//! The sync event log: an append-only file of JSON lines, one [`Event`] per
//! line, e.g.
//!
//! ```text
//! {"time":"2026-11-23T16:40:00Z","action":"add","image":"127.0.0.1:5000/app:1.0","digest":"sha256:…","status":"ok","error":null,"seconds":1.2,"bytes":123}
//! ```
//!
//! Each line goes to the file (opened with `O_APPEND`) in a single `write`,
//! then the data is synced, so lines of concurrent writers never interleave
//! and a crash leaves whole lines behind (at most the last one missing).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What the sync did (or would do) with an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Published an image that was not published before.
    Add,
    /// Published a new digest for a name already published.
    Update,
    /// The published image is still current.
    Keep,
    /// Unlinked an image no longer in the wishlist.
    Retire,
    /// Could not bring an image up to date.
    Fail,
    /// Pushed a thin image.
    Push,
}

/// How the action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Failed,
    /// `--dry-run`: the action was only planned.
    DryRun,
}

/// One line of the log. Field order is the order on the line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339 UTC, whole seconds: `2026-11-23T16:40:00Z`.
    pub time: String,
    pub action: Action,
    /// `NAME:TAG` as published (or the source reference if it has no name yet).
    pub image: String,
    /// The manifest digest, `null` when it is not known (e.g. the registry
    /// could not be reached).
    pub digest: Option<String>,
    pub status: Status,
    /// The error's message when `status` is `failed`.
    pub error: Option<String>,
    /// Wall-clock seconds the action took, to the millisecond.
    pub seconds: f64,
    /// Bytes fetched (or pushed) for it.
    pub bytes: u64,
}

impl Event {
    /// An event stamped with the current time, 0 seconds and 0 bytes.
    pub fn new(action: Action, image: impl Into<String>, status: Status) -> Event {
        Event {
            time: rfc3339(SystemTime::now()),
            action,
            image: image.into(),
            digest: None,
            status,
            error: None,
            seconds: 0.0,
            bytes: 0,
        }
    }

    pub fn digest(mut self, digest: impl Into<String>) -> Event {
        self.digest = Some(digest.into());
        self
    }

    /// Sets the error and the status `failed`.
    pub fn error(mut self, error: impl std::fmt::Display) -> Event {
        self.error = Some(error.to_string());
        self.status = Status::Failed;
        self
    }

    /// Sets `seconds`, rounded to the millisecond.
    pub fn took(mut self, d: Duration) -> Event {
        self.seconds = (d.as_secs_f64() * 1000.0).round() / 1000.0;
        self
    }

    pub fn bytes(mut self, bytes: u64) -> Event {
        self.bytes = bytes;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("event log {path}: {error}")]
    Io {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error("event log {path}: line {line}: {error}")]
    Parse {
        path: String,
        line: usize,
        #[source]
        error: serde_json::Error,
    },
}

/// An open event log.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: File,
}

impl EventLog {
    /// Opens `path` for appending, creating it (mode 0644 less the umask)
    /// if it does not exist. Its directory must exist.
    pub fn open(path: impl AsRef<Path>) -> Result<EventLog, EventLogError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|error| EventLogError::Io {
                path: path.display().to_string(),
                error,
            })?;
        Ok(EventLog { path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `event` as one line with a single `write`, then syncs the
    /// file's data (`fdatasync`, which also covers its new size).
    pub fn append(&mut self, event: &Event) -> Result<(), EventLogError> {
        let io = |error| EventLogError::Io {
            path: self.path.display().to_string(),
            error,
        };
        let mut line = serde_json::to_vec(event).map_err(|e| io(std::io::Error::other(e)))?;
        line.push(b'\n');
        // One write(2): with O_APPEND the kernel places the whole buffer at
        // the end of the file atomically, so concurrent appenders never
        // interleave. `write_all` could split it into several calls.
        let n = self.file.write(&line).map_err(io)?;
        if n != line.len() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!(
                    "short write ({n} of {} bytes): is the disk full?",
                    line.len()
                ),
            )));
        }
        self.file.flush().map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

/// Reads every event of the log at `path`. A missing file has no events.
pub fn read_events(path: impl AsRef<Path>) -> Result<Vec<Event>, EventLogError> {
    let path = path.as_ref();
    let io = |error| EventLogError::Io {
        path: path.display().to_string(),
        error,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut events = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(&line).map_err(|error| EventLogError::Parse {
            path: path.display().to_string(),
            line: i + 1,
            error,
        })?;
        events.push(event);
    }
    Ok(events)
}

/// `time` as RFC 3339 UTC with whole seconds, e.g. `2026-11-23T16:40:00Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let secs: i64 = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Before 1970: round down to the whole second.
        Err(e) => {
            let d = e.duration();
            let s = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -s - i64::from(d.subsec_nanos() > 0)
        }
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date (year, month 1-12, day 1-31) of the day
/// `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Both are in range by construction.
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(10_957), (2000, 1, 1));
        assert_eq!(
            civil_from_days(11_016),
            (2000, 2, 29),
            "2000 is a leap year"
        );
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(
            civil_from_days(-25_508),
            (1900, 3, 1),
            "1900 is not a leap year"
        );
        assert_eq!(civil_from_days(-25_509), (1900, 2, 28));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
    }

    #[test]
    fn rfc3339_times() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_452_000), "2026-11-23T16:40:00Z");
        assert_eq!(at(2_147_483_647), "2038-01-19T03:14:07Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_999)),
            "1970-01-01T00:00:01Z",
            "fractions are dropped"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_millis(500)),
            "1969-12-31T23:59:59Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(86_400)),
            "1969-12-31T00:00:00Z"
        );
    }

    #[test]
    fn line_format() {
        let mut e = Event::new(Action::Add, "127.0.0.1:5000/app:1.0", Status::Ok)
            .digest("sha256:abc")
            .took(Duration::from_millis(1_234))
            .bytes(123);
        e.time = "2026-11-23T16:40:00Z".to_owned();
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"time":"2026-11-23T16:40:00Z","action":"add","image":"127.0.0.1:5000/app:1.0","digest":"sha256:abc","status":"ok","error":null,"seconds":1.234,"bytes":123}"#
        );
        let f = Event::new(Action::Fail, "x/app:2", Status::DryRun).error("no route\nto host");
        let line = serde_json::to_string(&f).unwrap();
        assert!(line.contains(r#""status":"failed""#), "{line}");
        assert!(line.contains(r#""error":"no route\nto host""#), "{line}");
        assert!(!line.contains('\n'));
        let d = Event::new(Action::Retire, "a:b", Status::DryRun);
        assert!(serde_json::to_string(&d)
            .unwrap()
            .contains(r#""status":"dry-run""#));
        assert_eq!(
            Event::new(Action::Keep, "a:b", Status::Ok)
                .took(Duration::from_micros(300_400))
                .seconds,
            0.3
        );
    }

    #[test]
    fn two_writers_append_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sync.events.jsonl");
        // Long error messages make each line larger than a page, so a
        // non-atomic append would show up as a torn line.
        let long = "x".repeat(5000);
        let threads: Vec<_> = (0..2)
            .map(|w| {
                let (path, long) = (path.clone(), long.clone());
                std::thread::spawn(move || {
                    let mut log = EventLog::open(&path).unwrap();
                    for i in 0..50 {
                        let e = Event::new(Action::Push, format!("w{w}/app:{i}"), Status::Failed)
                            .error(&long)
                            .bytes(i);
                        log.append(&e).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // And one more from each of two handles, after the others.
        let mut a = EventLog::open(&path).unwrap();
        let mut b = EventLog::open(&path).unwrap();
        a.append(&Event::new(Action::Keep, "w0/app:last", Status::Ok))
            .unwrap();
        b.append(&Event::new(Action::Keep, "w1/app:last", Status::Ok))
            .unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'));
        assert_eq!(text.lines().count(), 102);
        let events = read_events(&path).unwrap();
        assert_eq!(events.len(), 102);
        for w in 0..2 {
            let mine: Vec<_> = events
                .iter()
                .filter(|e| e.image.starts_with(&format!("w{w}/")))
                .collect();
            assert_eq!(mine.len(), 51);
            for (i, e) in mine.iter().take(50).enumerate() {
                assert_eq!(
                    e.image,
                    format!("w{w}/app:{i}"),
                    "each writer's order is kept"
                );
                assert_eq!(e.error.as_deref(), Some(long.as_str()));
            }
        }
        // Reopening appends after what is there.
        drop((a, b));
        let mut c = EventLog::open(&path).unwrap();
        c.append(&Event::new(Action::Retire, "gone:1", Status::Ok))
            .unwrap();
        let events = read_events(&path).unwrap();
        assert_eq!(events.len(), 103);
        assert_eq!(events[102].action, Action::Retire);
    }

    #[test]
    fn read_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_events(dir.path().join("missing")).unwrap().is_empty());
        let path = dir.path().join("bad.jsonl");
        let mut log = EventLog::open(&path).unwrap();
        log.append(&Event::new(Action::Add, "a:1", Status::Ok))
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"time\":\n")
            .unwrap();
        let e = read_events(&path).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(EventLog::open(dir.path().join("no/such/dir/log")).is_err());
    }
}
