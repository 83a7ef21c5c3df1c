//! The two checksum flavours ext4 metadata uses.
//!
//! The kernel's `crc32c(seed, data)` ("ext4_chksum") does no pre- or post-inversion, unlike the
//! standard CRC-32C the `crc32c` crate computes; the two differ exactly by those inversions.
//! Group descriptors of `gdt_csum` filesystems use CRC-16 (poly 0x8005, reflected, init ~0:
//! the catalogued CRC-16/MODBUS).

/// The kernel's raw crc32c: register starts at `seed`, no final inversion.
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// CRC-16 as `ext2fs_crc16(~0, ...)` over several pieces.
pub fn crc16(pieces: &[&[u8]]) -> u16 {
    const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS);
    let mut digest = CRC16.digest();
    for piece in pieces {
        digest.update(piece);
    }
    digest.finalize()
}
