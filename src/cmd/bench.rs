//! `tigel bench`
use tigel::Result;
pub fn kernels(_backend: Option<&str>, _json: Option<&std::path::Path>, _quick: bool) -> Result<()> {
    Ok(())
}
