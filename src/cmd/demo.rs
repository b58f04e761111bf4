//! `tigel demo`
use tigel::Result;
pub fn run(_backend: Option<&str>, _size: usize) -> Result<()> {
    Ok(())
}
