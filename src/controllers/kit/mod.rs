//! The controller kit: kube-free helpers every controller shares (no `kube` import here; see
//! `ARCHITECTURE.md`). A core returns an [`Outcome`]; it sets conditions through [`Conditions`];
//! what it remembers between passes lives in a [`MemoryMap`]; time arithmetic in [`time`].

pub mod conditions;
pub mod memory;
pub mod outcome;
pub mod time;

pub use conditions::{Change, Conditions};
pub use memory::{ClientCache, MemoryMap};
pub use outcome::{Outcome, PlannedEvent};
