//! The sizes of one attention call.

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AttentionShape {
    pub batch: usize,
    pub t_len: usize,
    pub channels: usize,
    pub heads: usize,
}

impl AttentionShape {
    pub(crate) fn head_size(&self) -> usize {
        self.channels / self.heads
    }
    /// Offset of (b, t) in a (B,T,3C) tensor.
    pub(crate) fn qkv_row(&self, b: usize, t: usize) -> usize {
        (b * self.t_len + t) * 3 * self.channels
    }
}
