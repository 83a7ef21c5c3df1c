//! Standard input as an image stream.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use crate::Error;
use crate::source::stdio_file;

/// Standard input, buffered, as a plain file that can move between threads.
///
/// # Errors
/// When the descriptor cannot be duplicated.
pub fn reader() -> Result<BufReader<File>, Error> {
    let file = stdio_file(rustix::stdio::stdin(), Path::new("<stdin>"))?;
    Ok(BufReader::with_capacity(1 << 20, file))
}
