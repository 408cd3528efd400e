//! The native helpers the JIT's kernels call, by symbol: the GEMMs, the tiled
//! attention, the full-width LayerNorm and GELU passes, ln. The one place that names
//! them all, so the JIT itself (`jit/`) imports no kernel family: it is handed this
//! table (`JitBuilder::new`).

use cranelift_codegen::ir::types;

use crate::jit::Helper;

/// Natural logarithm for the JIT (one call per row of a loss kernel).
extern "C" fn cllm_ln(x: f64) -> f64 {
    x.ln()
}

/// Every native helper: symbol, address, parameter and return types.
pub fn all() -> Vec<Helper> {
    let i64 = Some(types::I64);
    // cllm_sgemm(m, n, k, dst, dst_rs, dst_cs, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs,
    //            accumulate, precision, panels)
    let mut gemm = vec![i64, i64, i64];
    for _ in 0..3 {
        gemm.extend([None, i64, i64]);
    }
    gemm.extend([i64, i64, None]);
    // cllm_sgemm_bias_gelu(m, n, k, dst, dst_rs, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs,
    //                      bias, gelu_out, precision, panels); cllm_sgemm_gelu_backward(…,
    //                      pre, dpre, accumulate, precision, panels) alike
    let fused = vec![
        i64, i64, i64, None, i64, None, i64, i64, None, i64, i64, None, None, i64, None,
    ];
    let mut gelu_backward = fused.clone();
    gelu_backward.insert(13, i64);
    vec![
        (
            "cllm_sgemm",
            crate::gemm::sgemm::cllm_sgemm as *const u8,
            gemm,
            vec![],
        ),
        (
            "cllm_sgemm_bias_gelu",
            crate::gemm::sgemm::cllm_sgemm_bias_gelu as *const u8,
            fused.clone(),
            vec![],
        ),
        (
            "cllm_sgemm_gelu_backward",
            crate::gemm::sgemm::cllm_sgemm_gelu_backward as *const u8,
            gelu_backward,
            vec![],
        ),
        (
            "cllm_bf16_weight_panels",
            crate::gemm::sgemm::cllm_bf16_weight_panels as *const u8,
            vec![None, None, None, i64, i64],
            vec![],
        ),
        (
            "cllm_flash_attention",
            crate::attention::flash::cllm_flash_attention as *const u8,
            vec![None, None, None, None, None, i64, i64, i64, i64, i64],
            vec![],
        ),
        (
            "cllm_flash_attention_backward",
            crate::attention::flash_backward::cllm_flash_attention_backward as *const u8,
            vec![
                None, None, None, None, None, None, None, i64, i64, i64, i64, i64,
            ],
            vec![],
        ),
        (
            "cllm_gelu",
            crate::gelu::cllm_gelu as *const u8,
            vec![None, None, i64],
            vec![],
        ),
        (
            "cllm_gelu_backward",
            crate::gelu::cllm_gelu_backward as *const u8,
            vec![None, None, None, i64],
            vec![],
        ),
        (
            "cllm_layernorm",
            crate::layernorm::cllm_layernorm as *const u8,
            vec![
                None,
                None,
                None,
                None,
                None,
                None,
                i64,
                i64,
                Some(types::F32),
            ],
            vec![],
        ),
        (
            "cllm_layernorm_backward",
            crate::layernorm::cllm_layernorm_backward as *const u8,
            vec![None, None, None, None, None, None, None, None, i64, i64],
            vec![],
        ),
        (
            "cllm_residual",
            crate::residual::cllm_residual as *const u8,
            vec![None, None, None, i64],
            vec![],
        ),
        (
            "cllm_residual_backward",
            crate::residual::cllm_residual_backward as *const u8,
            vec![None, None, None, i64],
            vec![],
        ),
        (
            "cllm_softmax_xent",
            crate::softmax_xent::cllm_softmax_xent as *const u8,
            vec![None, None, None, None, i64, i64],
            vec![types::F64],
        ),
        (
            "cllm_softmax_xent_backward",
            crate::softmax_xent::cllm_softmax_xent_backward as *const u8,
            vec![None, None, None, i64, i64, Some(types::F32)],
            vec![],
        ),
        (
            "cllm_embedding",
            crate::embedding::cllm_embedding as *const u8,
            vec![None, None, None, None, i64, i64, i64],
            vec![],
        ),
        (
            "cllm_embedding_backward",
            crate::embedding::cllm_embedding_backward as *const u8,
            vec![None, None, None, None, i64, i64, i64],
            vec![],
        ),
        (
            "cllm_ln",
            cllm_ln as *const u8,
            vec![Some(types::F64)],
            vec![types::F64],
        ),
        (
            "cllm_bias_backward",
            crate::matmul::cllm_bias_backward as *const u8,
            vec![None, None, i64, i64],
            vec![],
        ),
    ]
}
