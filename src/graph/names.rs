//! GPT-2's parameter names: the one table the graph builds its parameters from, the
//! sampler finds them by, checkpoints store them under and the GPT-2 import maps
//! Hugging Face's files onto (those add an optional `transformer.` prefix).

/// Token embedding (V, C).
pub const WTE: &str = "wte";
/// Position embedding (T, C).
pub const WPE: &str = "wpe";
/// The final LayerNorm (`.weight`, `.bias`).
pub const LN_F: &str = "ln_f";
/// The untied output head (V, C), when the head is not `wte`.
pub const LM_HEAD: &str = "lm_head.weight";

/// The parts of transformer block `h.{l}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Ln1,
    /// Q, K, V in one (3C, C) matrix.
    CAttn,
    /// The attention output projection.
    CProj,
    Ln2,
    /// The MLP's expansion.
    CFc,
    /// The MLP's projection back to C.
    MlpProj,
}

impl Part {
    /// The name under `h.{l}.`.
    pub fn suffix(self) -> &'static str {
        match self {
            Part::Ln1 => "ln_1",
            Part::CAttn => "attn.c_attn",
            Part::CProj => "attn.c_proj",
            Part::Ln2 => "ln_2",
            Part::CFc => "mlp.c_fc",
            Part::MlpProj => "mlp.c_proj",
        }
    }

    /// The linear layers, which GPT-2 stores as Conv1D (in, out): transposed on import.
    pub const CONV1D: [Part; 4] = [Part::CAttn, Part::CProj, Part::CFc, Part::MlpProj];
}

/// `h.{layer}`: the prefix of block `layer`'s tensors (activations too).
pub fn block(layer: usize) -> String {
    format!("h.{layer}")
}

/// `h.{layer}.{part}`: a block part's name (add `.weight` / `.bias`).
pub fn part(layer: usize, part: Part) -> String {
    format!("h.{layer}.{}", part.suffix())
}
