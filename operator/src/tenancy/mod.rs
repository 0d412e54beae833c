//! Tenancy: departments, their hierarchy and their quotas. Pure logic only; the controllers in
//! `crate::controllers` read the world, call these functions and write the results.

pub mod hierarchy;
pub mod quota;
