//! The Cranelift emitters. The kernels are `flash`'s native tiled ones (their products are the
//! native GEMM, their row passes at the CPU's full width); the JIT calls them with the
//! plan's tiles embedded as a table beside the code.

use cranelift_codegen::ir::Value;

use super::shape::AttentionShape;
use super::tiles::BlockLists;
use crate::bf16::Precision;
use crate::jit::Emitter;

/// The shape and precision arguments every attention call ends with.
fn shape_args(e: &mut Emitter<'_>, (shape, precision): (AttentionShape, Precision)) -> [Value; 5] {
    let sizes = [shape.batch, shape.t_len, shape.channels, shape.heads];
    let [b, t, c, h] = sizes.map(|x| e.int(x as i64));
    [b, t, c, h, e.int(precision.code())]
}

/// `out` and `lse` from `qkv` over the listed tiles; `keep` is a pattern's mask; the
/// products in `precision`.
pub fn emit_attention_forward(
    e: &mut Emitter<'_>,
    [out, lse, qkv]: [Value; 3],
    keep: Option<Value>,
    call: (AttentionShape, Precision),
    blocks: &BlockLists,
) {
    let table = e.table(&blocks.table(call.0.t_len));
    let keep = keep.unwrap_or_else(|| e.int(0));
    let [b, t, c, h, p] = shape_args(e, call);
    e.call(
        "cllm_flash_attention",
        &[out, lse, qkv, keep, table, b, t, c, h, p],
    );
}

/// Accumulates `dqkv` from `dout`, the forward's `out` and `lse`, over the same tiles.
pub fn emit_attention_backward(
    e: &mut Emitter<'_>,
    [dqkv, dout, qkv, out, lse]: [Value; 5],
    keep: Option<Value>,
    call: (AttentionShape, Precision),
    blocks: &BlockLists,
) {
    let table = e.table(&blocks.table(call.0.t_len));
    let keep = keep.unwrap_or_else(|| e.int(0));
    let [b, t, c, h, p] = shape_args(e, call);
    e.call(
        "cllm_flash_attention_backward",
        &[dqkv, dout, qkv, out, lse, keep, table, b, t, c, h, p],
    );
}
