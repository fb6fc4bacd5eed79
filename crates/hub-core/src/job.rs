//! The job vocabulary every crate shares: the states of a job execution.
//!
//! The transition table and its guards live in `hub-jobs`; the states are here because the store
//! indexes by them, events carry them and the transport maps them onto topics.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The state of one job execution on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobState {
    /// Waiting in the device's queue.
    Queued,
    /// The device has acknowledged receipt (only on evidence from the device).
    Delivered,
    /// The device reports that it is executing the job.
    InProgress,
    /// A controller asked to cancel; waiting for the device to agree or refuse.
    Canceling,
    /// The device refused to cancel and goes on executing.
    CancelRejected,
    /// Finished successfully. Terminal.
    Succeeded,
    /// Finished unsuccessfully, with no retry left. Terminal. (An execution that fails while
    /// retries remain sends the job back to [`JobState::Queued`] to wait out its backoff.)
    Failed,
    /// Refused by the device; never retried. Terminal.
    Rejected,
    /// Not finished before its in-progress or step deadline, with no retry left. Terminal. (With
    /// retries left the job goes back to [`JobState::Queued`].)
    TimedOut,
    /// Never delivered before its time-to-live ran out. Terminal.
    Expired,
    /// Canceled before or during execution. Terminal.
    Canceled,
    /// Removed by a controller; kept as a tombstone so retries of the removal stay idempotent.
    /// Terminal.
    Removed,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 12] = [
        JobState::Queued,
        JobState::Delivered,
        JobState::InProgress,
        JobState::Canceling,
        JobState::CancelRejected,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Rejected,
        JobState::TimedOut,
        JobState::Expired,
        JobState::Canceled,
        JobState::Removed,
    ];

    /// Whether no further transition can happen to this execution.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded
                | JobState::Failed
                | JobState::Rejected
                | JobState::TimedOut
                | JobState::Expired
                | JobState::Canceled
                | JobState::Removed
        )
    }

    /// Whether the device holds the job (it occupies one of the device's execution slots).
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            JobState::Delivered
                | JobState::InProgress
                | JobState::Canceling
                | JobState::CancelRejected
        )
    }

    /// The stable snake_case name used in APIs and storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Delivered => "delivered",
            JobState::InProgress => "in_progress",
            JobState::Canceling => "canceling",
            JobState::CancelRejected => "cancel_rejected",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Rejected => "rejected",
            JobState::TimedOut => "timed_out",
            JobState::Expired => "expired",
            JobState::Canceled => "canceled",
            JobState::Removed => "removed",
        }
    }

    /// The state named by [`JobState::as_str`].
    pub fn from_name(name: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for s in JobState::ALL {
            assert_eq!(JobState::from_name(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(JobState::from_name("done"), None);
    }

    #[test]
    fn terminal_and_active_states_are_disjoint() {
        for s in JobState::ALL {
            assert!(!(s.is_terminal() && s.is_active()), "{s}");
        }
        assert!(!JobState::Queued.is_terminal() && !JobState::Queued.is_active());
    }
}
