//! The manifest of a saved disk: a versioned, human-readable TOML file in the image directory
//! that records the partition table, what each partition holds and what restore-disk does with
//! it.

use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::table::{Table, TableError};
use crate::fs::Identity;

/// Why a manifest cannot be used.
#[derive(Debug, Error)]
pub enum ManifestError {
    /// It cannot be read.
    #[error("cannot read it")]
    Read(#[source] std::io::Error),
    /// It is not TOML, or its fields are not a manifest's (the parser's message says where).
    #[error("{0}")]
    Syntax(String),
    /// It is another kind of file.
    #[error("not a rimage disk manifest (format {0:?})")]
    Format(String),
    /// Its partition table does not hold together.
    #[error(transparent)]
    Table(#[from] TableError),
    /// A partition's plan does not match the table or names no image.
    #[error("partition {number}: {reason}")]
    Plan {
        /// The partition.
        number: u32,
        /// What is wrong.
        reason: &'static str,
    },
}

/// File name of the manifest in a disk directory.
pub const MANIFEST: &str = "manifest.toml";
/// Format name in the manifest.
pub const FORMAT: &str = "rimage-disk";

/// Manifest versions this rimage reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub enum Version {
    /// The first.
    V1,
}

impl TryFrom<u32> for Version {
    type Error = String;

    fn try_from(v: u32) -> Result<Self, String> {
        match v {
            1 => Ok(Self::V1),
            other => Err(format!(
                "unsupported manifest version {other} (this rimage reads version 1)"
            )),
        }
    }
}

impl From<Version> for u32 {
    fn from(v: Version) -> u32 {
        match v {
            Version::V1 => 1,
        }
    }
}

/// What restore-disk does with a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Restore it from its image.
    Image,
    /// Write a swap header with the recorded UUID and label.
    Swap,
    /// Re-create an empty filesystem with the recorded type, UUID and label.
    Reformat,
    /// Leave it alone (the table still has it).
    Skip,
}

/// A partition's plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Partition number.
    pub number: u32,
    /// What restore-disk does.
    pub action: Action,
    /// What the partition held when saved.
    pub filesystem: Identity,
    /// The image file (in the same directory) for `action = "image"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Bytes the image restores (its source size): checked against the partition before
    /// anything is written, also when the images arrive later in a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_bytes: Option<u64>,
}

/// The whole manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always "rimage-disk".
    pub format: String,
    /// Format version.
    pub version: Version,
    /// When it was saved (RFC 3339).
    pub created: String,
    /// The rimage that saved it.
    pub writer: String,
    /// The disk it was saved from.
    pub source: String,
    /// Size of that disk in bytes.
    pub disk_bytes: u64,
    /// File (in the same directory) with the disk's bytes before the first partition: boot
    /// code and, on MBR disks, the boot loader's embedding area.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_area: Option<String>,
    /// The partition table.
    pub table: Table,
    /// One plan per partition.
    pub partitions: Vec<Plan>,
}

impl Manifest {
    /// Reads and checks a manifest.
    ///
    /// # Errors
    /// Unreadable, or as [`Manifest::parse`].
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(ManifestError::Read)?;
        Self::parse(&text)
    }

    /// Parses and checks manifest text.
    ///
    /// # Errors
    /// Not TOML, another format or version, or a table or plan that does not hold together.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let m: Self = toml::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;
        if m.format != FORMAT {
            return Err(ManifestError::Format(m.format));
        }
        super::table::check_table(&m.table)?;
        for p in &m.partitions {
            let plan = |reason| ManifestError::Plan {
                number: p.number,
                reason,
            };
            if !m.table.partitions.iter().any(|e| e.number == p.number) {
                return Err(plan("has a plan but no table entry"));
            }
            if p.action == Action::Image
                && p.image
                    .as_deref()
                    .is_none_or(|i| i.is_empty() || i.contains('/'))
            {
                return Err(plan(
                    "is to be imaged but names no image file in the directory",
                ));
            }
        }
        Ok(m)
    }

    /// The manifest as TOML.
    ///
    /// # Errors
    /// A value TOML cannot hold (its integers are signed 64-bit).
    pub fn to_toml(&self) -> Result<String, String> {
        let body = toml::to_string_pretty(self).map_err(|e| e.to_string())?;
        Ok(format!(
            "# rimage disk manifest: the partition table of {} and what restore-disk does with each partition.\n{body}",
            self.source
        ))
    }

    /// The plan of partition `number`, with its table entry.
    pub fn entry(&self, number: u32) -> Option<&super::table::Entry> {
        self.table.partitions.iter().find(|e| e.number == number)
    }
}
