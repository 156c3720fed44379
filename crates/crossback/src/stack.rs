//! What a system's filesystems sit in — partition → LUKS → LVM physical
//! volume → volume group → logical volumes — from finding it to making it
//! again, on crossback's side (the distribution's tools are run, and their
//! reports read, by `crossback_host::layers`):
//!
//! - [`open`]: the containers and volume groups a system's configuration
//!   names, opened for a backup, a look or a chroot, and the records a
//!   backup keeps of them;
//! - [`plan`]: the records kept on the slot and the plan that makes the
//!   stack again on a new partition (plain decisions, no I/O);
//! - [`recreate`]: `restore --disk` making the stack on the new disk, after
//!   checking each header and finding its key.

pub mod open;
pub mod plan;
pub mod recreate;
