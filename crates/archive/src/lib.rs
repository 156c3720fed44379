//! crossback's archive format: a standard PAX tar stream, cut into
//! independent zstd frames, with an index of every member (offset, BLAKE3
//! hash, inode flags) in skippable frames at the end.
//!
//! What it is: the writer ([`create()`]), the reader and index ([`Archive`]),
//! safe extraction ([`extract()`]) and checking ([`verify`]).
//! Optionally the whole file is encrypted in the age format ([`crypt`]),
//! read back at any offset so that random access stays.
//! What it is not: it knows nothing of systems, slots or generations.
//!
//! `zstd -dc ARCHIVE | tar --xattrs --xattrs-include='*' --acls
//! --numeric-owner -xpf -` restores what the archive holds without crossback
//! (everything but inode flags, which tar has no field for).

mod acl;
mod codec;
pub mod container;
pub mod create;
pub mod crypt;
pub mod entry;
mod error;
pub mod index;
pub mod member_file;
pub mod members;
mod readback;
mod sys;
pub mod tarr;
pub mod tarw;

pub use container::Summary;
pub use create::{create, CreateOptions, CreateReport, Problem, Progress};
pub use entry::{Kind, Meta, Time};
pub use error::{Error, Result};
pub use index::IndexEntry;
pub mod archive;
pub mod extract;
pub mod restore;
pub mod verify;

pub use archive::Archive;
pub use extract::{extract, ExtractOptions, ExtractReport};
