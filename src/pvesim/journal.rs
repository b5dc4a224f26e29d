//! A bounded journal of the API requests the simulator answered: method, path template, the
//! names of the query/body parameters and the HTTP status. Tests read it to prove what a client
//! sent and that the (schema-validating) simulator accepted it; the oldest entries are dropped
//! beyond [`CAPACITY`], so a long-running `pvesim` does not grow without bound.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Entries kept (re-exported as `pvesim::JOURNAL_CAPACITY`: a reader that counts requests by
/// position knows when the oldest ones were dropped).
pub const CAPACITY: usize = 10_000;

/// One answered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method (`GET`, ...).
    pub method: String,
    /// The schema path template it matched (`/nodes/{node}/qemu/{vmid}/config`), or the
    /// concrete path when no route matched.
    pub template: String,
    /// Names of the query and body parameters (path parameters excluded), sorted.
    pub params: Vec<String>,
    /// HTTP status of the answer.
    pub status: u16,
}

/// The journal.
#[derive(Debug, Default)]
pub(crate) struct Journal(Mutex<VecDeque<RequestRecord>>);

impl Journal {
    /// Appends a record, dropping the oldest beyond [`CAPACITY`].
    pub(crate) fn push(&self, record: RequestRecord) {
        let mut entries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY {
            entries.pop_front();
        }
        entries.push_back(record);
    }

    /// All records, oldest first.
    pub(crate) fn records(&self) -> Vec<RequestRecord> {
        let entries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        entries.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_keeps_the_newest_entries_up_to_capacity() {
        let j = Journal::default();
        for i in 0..CAPACITY + 5 {
            j.push(RequestRecord {
                method: "GET".into(),
                template: format!("/{i}"),
                params: Vec::new(),
                status: 200,
            });
        }
        let records = j.records();
        assert_eq!(records.len(), CAPACITY);
        assert_eq!(records[0].template, "/5");
    }
}
