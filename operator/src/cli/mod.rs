//! The `yunzhang` command line: `run`, `crd`, the kubectl plugin verbs (`approve`, `reject`,
//! `retire`, `status`), `report` (settlement exports), and (later) `audit`.

pub mod crd;
pub mod plugin;
pub mod report;
