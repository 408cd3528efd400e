//! Causal multi-head self-attention, the whole of it in one kernel family.
//!
//! Per batch b, head h (head size hs = C/NH, scale s = 1/√hs), query t, key t2 ≤ t:
//!   `pre[t2] = s·(q_t · k_t2)`, `att[t,t2] = softmax_t2(pre)`, `out_t = Σ_t2 att[t,t2]·v_t2`
//! Forward saves one statistic per row, the log-sum-exp `lse_t = log Σ_t2 exp(pre[t2])`,
//! from which backward recomputes `att[t,t2] = exp(pre[t2] − lse_t)` (no T×T buffer):
//!   `datt[t2] = dout_t · v_t2`, `dv_t2 += att[t,t2]·dout_t`,
//!   `dpre[t2] = att[t,t2]·(datt[t2] − Σ_j att[t,j]·datt[j])`,
//!   `dq_t += s·Σ_t2 dpre[t2]·k_t2`, `dk_t2 += s·dpre[t2]·q_t`
//! (`Σ_j att[t,j]·datt[j] = dout_t · out_t`, which is how the tiled kernel gets it.)
//!
//! A sparse pattern restricts t2 further to the keys its mask keeps (`keep[t,t2] = 1`;
//! the diagonal always is): the others get probability exactly 0.
//!
//! Shapes: qkv (B,T,3C) holding q | k | v, head h at channels h·hs..(h+1)·hs of each;
//! out (B,T,C); lse (B,NH,T); keep (T,T) or none (dense).
//!
//! In bf16 (`train.precision`) every product reads its operands rounded to bf16 — q, k,
//! v, dout, the probabilities and `dpre` — and sums in fp32 (the reference's
//! `Precision::operand`; the tiled forward rounds its probabilities before they are
//! normalised, `flash.rs`).
//!
//!
//! The family's files: `shape` (the sizes of one call), `tiles` (which (query block, key
//! block) tiles a pattern visits, and the table the kernels read them from), `reference`
//! (the definition above, in f64), `flash` and `flash_backward` (the tiled native
//! kernels the JIT calls: online softmax, no T×T buffer), `emit` (the Cranelift calls).
//! Imports run one way: every file reads `shape` and `tiles`; `flash_backward` reads
//! `flash`; nothing reads `emit` or `reference` but this list.

mod emit;
pub mod flash;
pub mod flash_backward;
mod products;
mod reference;
mod shape;
mod tiles;

pub use emit::{emit_attention_backward, emit_attention_forward};
pub use reference::{
    DecodeCache, attention_backward, attention_decode, attention_decode_head, attention_forward,
    decode_scratch_len,
};
pub use shape::AttentionShape;
pub use tiles::{BlockLists, CHUNK};
