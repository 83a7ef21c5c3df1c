//! Writing a Linux swap header (what mkswap writes), so that a restored node's swap partition
//! keeps the UUID and label its /etc/fstab names.

use byteorder::{ByteOrder, LittleEndian};

use super::identify::{
    SWAP_LABEL, SWAP_LAST_PAGE, SWAP_MAGIC, SWAP_NR_BADPAGES, SWAP_UUID, SWAP_VERSION,
};
use crate::fs::Uuid;

/// The first page of a swap area of `size` bytes: version 1, no bad pages, the given UUID and
/// label (at most 16 bytes), and the magic at the end of the page.
///
/// # Errors
/// When the area holds fewer than 10 pages (mkswap's minimum) or the label is too long.
pub fn swap_header(
    size: u64,
    page_size: u32,
    uuid: Uuid,
    label: Option<&str>,
) -> Result<Vec<u8>, String> {
    let pages = size / u64::from(page_size);
    if pages < 10 {
        return Err(format!(
            "{size} bytes is too small for swap (at least 10 pages of {page_size})"
        ));
    }
    let last_page = u32::try_from(pages - 1)
        .map_err(|_| "swap area too large for a version 1 header".to_string())?;
    let mut page = vec![0u8; page_size as usize];
    LittleEndian::write_u32(&mut page[SWAP_VERSION..], 1);
    LittleEndian::write_u32(&mut page[SWAP_LAST_PAGE..], last_page);
    LittleEndian::write_u32(&mut page[SWAP_NR_BADPAGES..], 0);
    page[SWAP_UUID..SWAP_UUID + 16].copy_from_slice(&uuid.0);
    if let Some(label) = label {
        if label.len() > 16 {
            return Err(format!("swap label {label:?} is longer than 16 bytes"));
        }
        page[SWAP_LABEL..SWAP_LABEL + label.len()].copy_from_slice(label.as_bytes());
    }
    let at = page.len() - SWAP_MAGIC.len();
    page[at..].copy_from_slice(SWAP_MAGIC);
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::identify::{FsKind, detect};

    #[test]
    fn header_is_recognised_with_its_uuid_and_label() {
        let uuid: Uuid = "0b1c2d3e-4f50-4162-8374-95a6b7c8d9ea".parse().unwrap();
        let mut area = swap_header(1 << 20, 4096, uuid, Some("swap0")).unwrap();
        area.resize(1 << 20, 0);
        let d = detect(area.as_slice());
        assert_eq!(d.kind, FsKind::Swap);
        assert_eq!(
            d.uuid.as_deref(),
            Some("0b1c2d3e-4f50-4162-8374-95a6b7c8d9ea")
        );
        assert_eq!(d.label.as_deref(), Some("swap0"));
        assert_eq!(LittleEndian::read_u32(&area[SWAP_LAST_PAGE..]), 255);
    }
}
