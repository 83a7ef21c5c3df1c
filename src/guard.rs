//! The refusals that protect data, checked before anything is written: a device that is
//! mounted while it is read (inconsistent image) or written (a corrupted filesystem).

use std::path::Path;

use crate::Error;
use crate::error::IoError;
use crate::progress::Progress;

/// What rimage is about to do with a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read it to save it: a read-only mount is fine; a read-write one only with `force`.
    Read {
        /// Image it anyway (and say so).
        force: bool,
    },
    /// Write it: any mount refuses.
    Write,
}

/// Refuses when `device` (a block device, or a regular file through the loop devices over it)
/// is mounted in a way `access` does not allow; notes a forced read of a mounted device.
///
/// # Errors
/// [`Error::Refused`] naming the device and mount point, and what to do.
pub fn check_not_mounted(
    device: &Path,
    access: Access,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let mounts = crate::sys::mounts_of(device)
        .map_err(|e| IoError::new(device, "look up the mounts of", None, e))?;
    let offending = mounts
        .iter()
        .find(|m| access == Access::Write || m.read_write);
    let Some(m) = offending else {
        return Ok(());
    };
    let at = m.mount_point.display();
    match access {
        Access::Write => Err(Error::refused(
            device,
            format!(
                "mounted at {at} (as {}); unmount it first. Nothing was written",
                m.device
            ),
        )),
        Access::Read { force: false } => Err(Error::refused(
            device,
            format!(
                "mounted read-write at {at}: an image of a filesystem in use would be inconsistent. Unmount it, \
                 remount it read-only (mount -o remount,ro {at}), freeze it (fsfreeze -f {at}; fsfreeze -u {at} \
                 afterwards) or image an LVM snapshot; --force images it as it is"
            ),
        )),
        Access::Read { force: true } => {
            progress.note(&format!(
                "{} is mounted read-write at {at}; imaging it anyway (--force): the image may be inconsistent. \
                 Prefer fsfreeze -f {at} or an LVM snapshot",
                device.display()
            ));
            Ok(())
        }
    }
}
