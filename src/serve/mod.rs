//! The head node (docs/SERVICE.md): `rimage serve` hands images out and takes uploads, tells
//! each node what to do at its next network boot, hears their reports and shows them on a live
//! dashboard; `rimage node` changes the nodes. [`proto`] is what is said on the wire.

mod dashboard;
pub mod nodes;
pub mod proto;
mod server;
pub mod state;

pub use server::{ServeOptions, serve};
