//! Linux swap: recognising a swap header (UUID, label, page size) and writing one (what mkswap
//! writes), so that a restored node's swap partition keeps the UUID and label its /etc/fstab
//! names. Swap holds nothing worth imaging: save-disk only describes it.

use byteorder::{ByteOrder, LittleEndian};

use super::{Family, FsType, Identity, Uuid, label_text};
use crate::source::ReadAt;

/// Swap header fields (linux/swap.h, `union swap_header`): after 1024 bytes of boot space.
const SWAP_VERSION: usize = 1024;
/// `info.last_page`.
const SWAP_LAST_PAGE: usize = 1028;
/// `info.nr_badpages`.
const SWAP_NR_BADPAGES: usize = 1032;
/// `info.sws_uuid`.
const SWAP_UUID: usize = 1036;
/// `info.sws_volume` (the label).
const SWAP_LABEL: usize = 1052;
/// Longest label.
const SWAP_LABEL_LEN: usize = 16;
/// The magic ends the first page.
const SWAP_MAGIC: &[u8; 10] = b"SWAPSPACE2";
/// Page sizes a swap header may have been written for.
const PAGE_SIZES: [u32; 4] = [4096, 8192, 16384, 65536];

/// The swap family: identified, never scanned (save-disk describes swap instead of imaging it).
pub const FAMILY: Family = Family {
    identify,
    scan: None,
};

/// Recognises a version 1 swap header at any of the usual page sizes.
pub fn identify(dev: &dyn ReadAt) -> Option<Identity> {
    let mut buf = Vec::new();
    for page in PAGE_SIZES {
        buf.resize(page as usize, 0);
        dev.read_exact_at(&mut buf, 0).ok()?;
        if &buf[page as usize - SWAP_MAGIC.len()..] == SWAP_MAGIC {
            let uuid: [u8; 16] = buf[SWAP_UUID..SWAP_UUID + 16].try_into().expect("16 bytes");
            return Some(Identity {
                kind: FsType::Swap,
                uuid: (uuid != [0; 16]).then(|| Uuid(uuid).to_string()),
                label: label_text(&buf[SWAP_LABEL..SWAP_LABEL + SWAP_LABEL_LEN]),
                page_size: Some(page),
                block_size: None,
            });
        }
    }
    None
}

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
    if !PAGE_SIZES.contains(&page_size) {
        return Err(format!("{page_size} is not a swap page size"));
    }
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
        if label.len() > SWAP_LABEL_LEN {
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

    #[test]
    fn header_is_recognised_with_its_uuid_and_label() {
        let uuid: Uuid = "0b1c2d3e-4f50-4162-8374-95a6b7c8d9ea".parse().unwrap();
        let mut area = swap_header(1 << 20, 4096, uuid, Some("swap0")).unwrap();
        area.resize(1 << 20, 0);
        let d = crate::fs::identify(&area);
        assert_eq!(d.kind, FsType::Swap);
        assert_eq!(
            d.uuid.as_deref(),
            Some("0b1c2d3e-4f50-4162-8374-95a6b7c8d9ea")
        );
        assert_eq!(d.label.as_deref(), Some("swap0"));
        assert_eq!(d.page_size, Some(4096));
        assert_eq!(LittleEndian::read_u32(&area[SWAP_LAST_PAGE..]), 255);
    }

    #[test]
    fn bad_sizes_and_labels_are_refused() {
        assert!(swap_header(9 * 4096, 4096, Uuid::default(), None).is_err());
        assert!(swap_header(1 << 20, 4096, Uuid::default(), Some("seventeen-bytes!!")).is_err());
        assert!(swap_header(1 << 20, 1000, Uuid::default(), None).is_err());
    }
}
