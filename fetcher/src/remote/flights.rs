//! One download per id at a time ([`Flights`]): concurrent callers of
//! [`Remote::object`](super::Remote::object) or
//! [`Remote::catalog`](super::Remote::catalog) for the same id wait for the
//! first one's result (singleflight) instead of downloading again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};

use stratum_catalog::ObjectId;

use crate::transport::{Counters, FetchError};

/// One download in progress, awaited by every other caller of the same id.
struct Flight<T> {
    result: Mutex<Option<Result<T, FetchError>>>,
    done: Condvar,
    /// Started by a prefetch: a reader that waited for it and got an error
    /// fetches on its own (a failed hint must not fail a read).
    hint: bool,
}

pub(super) struct Flights<T> {
    map: Mutex<HashMap<ObjectId, Arc<Flight<T>>>>,
}

impl<T: Clone> Flights<T> {
    pub fn new() -> Self {
        Flights {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `f` for `id` unless a run for `id` is already under way, in
    /// which case waits for it and returns its result.
    pub fn run(
        &self,
        id: &ObjectId,
        waits: &AtomicU64,
        f: impl FnOnce() -> Result<T, FetchError>,
    ) -> Result<T, FetchError> {
        self.run_as(id, waits, false, f)
    }

    /// [`Flights::run`]; `hint`: the caller is a prefetch. A reader that
    /// waited for a prefetch's run and got an error runs again itself.
    pub fn run_as(
        &self,
        id: &ObjectId,
        waits: &AtomicU64,
        hint: bool,
        f: impl FnOnce() -> Result<T, FetchError>,
    ) -> Result<T, FetchError> {
        let flight = loop {
            let (flight, leader) = {
                let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
                match map.get(id) {
                    Some(fl) => (fl.clone(), false),
                    None => {
                        let fl = Arc::new(Flight {
                            result: Mutex::new(None),
                            done: Condvar::new(),
                            hint,
                        });
                        map.insert(*id, fl.clone());
                        (fl, true)
                    }
                }
            };
            if leader {
                break flight;
            }
            Counters::bump(waits);
            let mut r = flight.result.lock().unwrap_or_else(|p| p.into_inner());
            let res = loop {
                if let Some(res) = r.as_ref() {
                    break res.clone();
                }
                r = flight.done.wait(r).unwrap_or_else(|p| p.into_inner());
            };
            // The flight is out of the map once its result is set.
            if !(res.is_err() && flight.hint && !hint) {
                return res;
            }
        };
        // Whatever happens to `f` (even a panic), waiters are released and
        // the flight is removed.
        struct Land<'a, T> {
            flights: &'a Flights<T>,
            id: ObjectId,
            flight: Arc<Flight<T>>,
        }
        impl<T> Drop for Land<'_, T> {
            fn drop(&mut self) {
                {
                    let mut r = self.flight.result.lock().unwrap_or_else(|p| p.into_inner());
                    if r.is_none() {
                        *r = Some(Err(FetchError::Cache {
                            path: PathBuf::new(),
                            reason: format!("the download of {} was aborted", self.id),
                        }));
                    }
                }
                self.flights
                    .map
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&self.id);
                self.flight.done.notify_all();
            }
        }
        let land = Land {
            flights: self,
            id: *id,
            flight,
        };
        let res = f();
        *land.flight.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(res.clone());
        drop(land);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn failed() -> FetchError {
        FetchError::Cache {
            path: PathBuf::new(),
            reason: "refused".into(),
        }
    }

    /// Regression: a read that joined a prefetch's download failed with
    /// it; it now fetches on its own. A read joining a read still shares
    /// its result, failure included.
    #[test]
    fn a_failed_prefetch_does_not_fail_the_read_that_joined_it() {
        let id = ObjectId::of(b"x");
        for (leader_is_hint, reader_gets_ok) in [(true, true), (false, false)] {
            let flights: Flights<u32> = Flights::new();
            let waits = AtomicU64::new(0);
            std::thread::scope(|s| {
                s.spawn(|| {
                    flights.run_as(&id, &waits, leader_is_hint, || {
                        std::thread::sleep(Duration::from_millis(300));
                        Err(failed())
                    })
                });
                std::thread::sleep(Duration::from_millis(100));
                let got = flights.run(&id, &waits, || Ok(7));
                assert_eq!(got.is_ok(), reader_gets_ok, "hint leader: {leader_is_hint}");
            });
            assert_eq!(waits.into_inner(), 1, "the read waited for the leader");
        }
    }
}
