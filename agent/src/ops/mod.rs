//! Operating a node: what `status` reports, and the support bundle with its
//! redaction. The engine does the work of `verify`, `repair` and `reset`; this module
//! gathers and presents.

pub mod bundle;
pub mod redact;
pub mod status;
