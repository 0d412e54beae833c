//! The `yunzhang` command line: `run`, `crd`, and (later) `report`, `audit` and the kubectl plugin verbs.

pub mod crd;
