//! Names of the EMA tensors: the average of parameter `P` is `ema.P` (a GAN's generator prefixes it:
//! `g.ema.P`). Checkpoints written before the averages were named after their parameters hold them by
//! position (`ema.0`, `ema.1`, ... in parameter order); `with_named_ema` reads those under today's names.

use std::borrow::Cow;

use super::Checkpoint;

/// The checkpoint name of the moving average of parameter `param`: `ema.<param>`.
pub fn ema_name(param: &str) -> String {
    format!("ema.{param}")
}

impl Checkpoint {
    /// This checkpoint with positional EMA tensors (`{prefix}ema.<i>`, written by older versions) renamed
    /// `{prefix}ema.<params[i]>`; `params` are the averaged parameters' names in the order the trainer
    /// keeps them. A checkpoint that holds no positional names (today's, or one without an EMA) is
    /// returned as it is, without a copy.
    pub fn with_named_ema<'a>(&'a self, prefix: &str, params: &[&str]) -> Cow<'a, Checkpoint> {
        let positional = |i: usize| format!("{prefix}ema.{i}");
        let Some(first) = params.first() else { return Cow::Borrowed(self) };
        let named_first = format!("{prefix}{}", ema_name(first));
        if !self.tensors.contains_key(&positional(0)) || self.tensors.contains_key(&named_first) {
            return Cow::Borrowed(self);
        }
        let mut ck = self.clone();
        for (i, p) in params.iter().enumerate() {
            if let Some(t) = ck.tensors.remove(&positional(i)) {
                ck.tensors.insert(format!("{prefix}{}", ema_name(p)), t);
            }
        }
        Cow::Owned(ck)
    }
}
