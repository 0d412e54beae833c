//! The `yunzhang` command line: `run`, `crd`, the kubectl plugin verbs (`approve`, `reject`,
//! `retire`, `status`), and (later) `report` and `audit`.

pub mod crd;
pub mod plugin;
pub mod report;
