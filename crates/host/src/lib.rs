//! crossback's view of the operating system: block devices found by
//! filesystem UUID (without udev), `fstab` and `mountinfo`, read-only
//! block devices, and private mount namespaces.
//!
//! What it is not: it knows nothing of archives, slots or generations.
//!
//! Inspecting a filesystem that is not mounted happens in a child process
//! (the running executable, started with the hidden argument
//! [`inspect::CHILD_ARG`]) that unshares its mount namespace first: its
//! mounts die with it, whatever happens to it.

pub mod beneath;
pub mod blockdev;
pub mod efi;
mod error;
pub mod freeze;
pub mod fstab;
pub mod fstype;
pub mod inspect;
pub mod layers;
pub mod lock;
pub mod mountinfo;
pub mod ns;
pub mod offline;
pub mod partitions;
pub mod rodev;
pub mod tool;

pub use error::{Error, Result};
