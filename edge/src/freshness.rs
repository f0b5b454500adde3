//! When a held snapshot may decide a request, as a pure function of its timing: used as is,
//! refreshed in the background, or revalidated with the control plane first.
//!
//! A snapshot the control plane has not confirmed for longer than the refresh interval may still
//! admit a key revoked since (an isolate that had no traffic for a while), so a request that
//! finds one asks the control plane first, for at most [`REVALIDATE_WAIT_MS`]. Under steady
//! traffic the background refresh starts a tenth of the interval early, so no request waits.

/// After this long a refresh still marked as running is assumed lost.
pub const REFRESH_TIMEOUT_MS: i64 = 30_000;
/// How often a request waiting for another request's load checks whether it is done.
pub const LOAD_POLL_MS: i64 = 5;
/// The longest a request holding a stale snapshot waits for the control plane before it is
/// decided on that snapshot (the last good one, as when the control plane is down).
pub const REVALIDATE_WAIT_MS: i64 = 1_000;

/// What a usable snapshot's timing calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Decide on the held snapshot; start a background refresh if `refresh`.
    Use {
        /// Start a background refresh.
        refresh: bool,
    },
    /// Ask the control plane first (start the refresh if `start`), until `deadline_ms`.
    Revalidate {
        /// This request starts the refresh.
        start: bool,
        /// When to stop waiting.
        deadline_ms: i64,
    },
}

/// The timing facts [`step`] decides on.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// When the control plane last confirmed the held snapshot.
    pub confirmed_at_ms: i64,
    /// When the last refresh started.
    pub last_attempt_ms: i64,
    /// A refresh is running.
    pub refreshing: bool,
    /// The last refresh that finished failed.
    pub last_failed: bool,
}

/// The rule behind the holder's plan for a usable snapshot.
pub fn step(t: Timing, refresh_ms: i64, now_ms: i64) -> Step {
    let since_attempt = now_ms - t.last_attempt_ms;
    let due = since_attempt >= refresh_ms - refresh_ms / 10;
    // A refresh that never finished (a hung fetch) must not block the next one forever.
    let refreshing = t.refreshing && since_attempt < REFRESH_TIMEOUT_MS;
    // While the control plane is known to be down, nobody waits for it: the last good
    // snapshot serves and refreshes go on in the background.
    let stale = now_ms - t.confirmed_at_ms > refresh_ms && !t.last_failed;
    let deadline_ms = t.last_attempt_ms + REVALIDATE_WAIT_MS;
    if stale && refreshing && now_ms < deadline_ms {
        return Step::Revalidate {
            start: false,
            deadline_ms,
        };
    }
    let refresh = due && !refreshing;
    if stale && refresh {
        Step::Revalidate {
            start: true,
            deadline_ms: now_ms + REVALIDATE_WAIT_MS,
        }
    } else {
        // Fresh; or stale with a refresh that has run past its deadline, or with the last
        // attempt moments ago: the snapshot held serves.
        Step::Use { refresh }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: i64 = 2_000;

    fn timing(confirmed_at_ms: i64, last_attempt_ms: i64, refreshing: bool) -> Timing {
        Timing {
            confirmed_at_ms,
            last_attempt_ms,
            refreshing,
            last_failed: false,
        }
    }

    /// A request every 10 ms for a minute, each refresh answered 40 ms after it starts: no
    /// request ever waits, and the snapshot deciding each one was confirmed within the interval.
    #[test]
    fn steady_traffic_never_waits_and_stays_within_the_interval() {
        let (mut confirmed, mut last_attempt, mut running) = (0, 0, None::<i64>);
        for now in (10..60_000).step_by(10) {
            if running.is_some_and(|started| now >= started + 40) {
                confirmed = running.take().unwrap_or(confirmed);
            }
            match step(timing(confirmed, last_attempt, running.is_some()), R, now) {
                Step::Use { refresh } => {
                    if refresh {
                        running = Some(now);
                        last_attempt = now;
                    }
                }
                other => panic!("waited at {now}: {other:?}"),
            }
            assert!(
                now - confirmed <= R,
                "decided at {now} on a snapshot confirmed at {confirmed}"
            );
        }
    }

    #[test]
    fn after_idling_the_first_request_revalidates_and_the_next_ones_wait_for_it() {
        let now = 60_000;
        assert_eq!(
            step(timing(10_000, 10_000, false), R, now),
            Step::Revalidate {
                start: true,
                deadline_ms: now + REVALIDATE_WAIT_MS
            }
        );
        // The refresh that request started is running.
        assert_eq!(
            step(timing(10_000, now, true), R, now + 5),
            Step::Revalidate {
                start: false,
                deadline_ms: now + REVALIDATE_WAIT_MS
            }
        );
        // Past its deadline nobody waits any more, and no second refresh starts.
        assert_eq!(
            step(timing(10_000, now, true), R, now + REVALIDATE_WAIT_MS),
            Step::Use { refresh: false }
        );
        // A refresh lost for longer than the timeout no longer counts as running.
        assert_eq!(
            step(timing(10_000, now, true), R, now + REFRESH_TIMEOUT_MS),
            Step::Revalidate {
                start: true,
                deadline_ms: now + REFRESH_TIMEOUT_MS + REVALIDATE_WAIT_MS
            }
        );
    }

    #[test]
    fn with_the_control_plane_down_the_held_snapshot_serves_without_waiting() {
        // A stale snapshot whose last refresh attempt has not finished yet or failed moments
        // ago serves without a new attempt.
        assert_eq!(
            step(timing(0, 9_900, false), R, 10_000),
            Step::Use { refresh: false }
        );
        // Once the last attempt is known to have failed, requests neither wait for the next
        // one nor for a running one; refreshes go on in the background.
        let down = Timing {
            last_failed: true,
            ..timing(0, 9_900, false)
        };
        assert_eq!(
            step(down, R, 9_900 + R - R / 10),
            Step::Use { refresh: true }
        );
        let running = Timing {
            refreshing: true,
            ..down
        };
        assert_eq!(step(running, R, 9_950), Step::Use { refresh: false });
        // The control plane back (last attempt succeeded) but the snapshot idle: wait again.
        let back = Timing {
            last_failed: false,
            ..down
        };
        assert!(matches!(
            step(back, R, 9_900 + R),
            Step::Revalidate { start: true, .. }
        ));
    }

    #[test]
    fn a_fresh_snapshot_refreshes_in_the_background_a_tenth_early() {
        assert_eq!(
            step(timing(0, 0, false), R, R - R / 10 - 1),
            Step::Use { refresh: false }
        );
        assert_eq!(
            step(timing(0, 0, false), R, R - R / 10),
            Step::Use { refresh: true }
        );
        // Confirmed exactly one interval ago still counts as fresh.
        assert_eq!(step(timing(0, 0, true), R, R), Step::Use { refresh: false });
    }
}
