//! The native GEMM's split over a worker's spare threads (`gemm/sgemm.rs`): output
//! columns in micro-tile multiples, then, with threads left over, row blocks of
//! `ROW_BLOCK` rows. Each element is summed over k in the same order whoever computes
//! it, so every entry point — the plain product, bias + GELU, the GELU backward — in
//! fp32 and in bf16 gives the same bits on 1, 2, 3, 16 and 64 threads (a 3-thread pool:
//! oversubscribed), the property the parallel runtime relies on.

mod common;
use common::*;

use cllm_kernels::gemm::sgemm::{
    ROW_BLOCK, cllm_sgemm, cllm_sgemm_bias_gelu, cllm_sgemm_gelu_backward, column_split, row_split,
    set_gemm_threads, split,
};

/// Which entry point.
#[derive(Clone, Copy, Debug)]
enum Entry {
    Plain,
    BiasGelu,
    GeluBackward,
}

#[test]
fn native_gemm_gives_the_same_bits_on_any_thread_count() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let mut rng = Lcg(9);
    // (m, n, k): ragged, and large enough for the `gemm` crate to use its threads.
    for (m, n, k) in [
        (257, 383, 131),
        (512, 1152, 384),
        (1024, 384, 1536),
        (64, 1000, 250),
    ] {
        let (lhs, rhs) = (rng.vec(m * k, 1.0), rng.vec(k * n, 1.0));
        let (base, bias, pre) = (rng.vec(m * n, 1.0), rng.vec(n, 1.0), rng.vec(m * n, 2.0));
        let product = |threads: usize, transposed_rhs: bool, entry: Entry, precision: i64| {
            let (mut dst, mut side) = (base.clone(), base.clone());
            pool.install(|| {
                set_gemm_threads(threads);
                // rhs as (k×n) row-major, or read through strides as the transpose of an (n×k).
                let (rs, cs) = if transposed_rhs { (1, k) } else { (n, 1) };
                let [m, n, k] = [m, n, k].map(|x| x as i64);
                let (d, l, r) = (dst.as_mut_ptr(), lhs.as_ptr(), rhs.as_ptr());
                let none = std::ptr::null();
                // SAFETY: the buffers hold these shapes.
                unsafe {
                    match entry {
                        Entry::Plain => cllm_sgemm(
                            m, n, k, d, n, 1, l, k, 1, r, rs as i64, cs as i64, 1, precision, none,
                        ),
                        Entry::BiasGelu => cllm_sgemm_bias_gelu(
                            m,
                            n,
                            k,
                            d,
                            n,
                            l,
                            k,
                            1,
                            r,
                            rs as i64,
                            cs as i64,
                            bias.as_ptr(),
                            side.as_mut_ptr(),
                            precision,
                            none,
                        ),
                        Entry::GeluBackward => cllm_sgemm_gelu_backward(
                            m,
                            n,
                            k,
                            d,
                            n,
                            l,
                            k,
                            1,
                            r,
                            rs as i64,
                            cs as i64,
                            pre.as_ptr(),
                            side.as_mut_ptr(),
                            1,
                            precision,
                            none,
                        ),
                    }
                };
                set_gemm_threads(1);
            });
            (dst, side)
        };
        for (entry, transposed, precision) in [
            (Entry::Plain, false, 0),
            (Entry::Plain, true, 0),
            (Entry::BiasGelu, false, 0),
            (Entry::GeluBackward, true, 0),
            (Entry::Plain, false, 1),
            (Entry::BiasGelu, true, 1),
        ] {
            let one = product(1, transposed, entry, precision);
            for threads in [2, 3, 16, 64] {
                assert!(
                    one == product(threads, transposed, entry, precision),
                    "{m}×{n}×{k} ({entry:?}, transposed rhs: {transposed}, precision \
                     {precision}): {threads} threads changed the bits"
                );
            }
        }
    }
}

#[test]
fn the_split_uses_the_threads_it_has() {
    // 768 columns on 16 threads: 12 column parts of 64 would leave 4 threads idle;
    // 4 parts of 192 columns × 4 row blocks of 288 rows keep all 16 busy.
    let s = split(1024, 768, 16, 32);
    assert_eq!((s.column_parts, s.row_parts), (4, 4), "{s:?}");
    assert!(s.width * s.height < 64 * 1024);
    // One thread, or one tile of work: no split.
    assert_eq!(
        split(1024, 768, 1, 32).column_parts * split(1024, 768, 1, 32).row_parts,
        1
    );
    assert_eq!(split(8, 16, 64, 32).column_parts, 1);
    for threads in 1..=130 {
        let s = split(1024, 768, threads, 32);
        assert!(
            s.column_parts * s.row_parts <= threads.max(1),
            "{threads}: {s:?}"
        );
        assert!(s.width * s.column_parts >= 768 && s.height * s.row_parts >= 1024);
    }
}

#[test]
fn threads_past_the_columns_take_row_blocks() {
    // The micro-tile widths of AVX2 and AVX-512 (a pure function: whatever this CPU is).
    for tile in [16, 32] {
        // 384 columns make at most 384/tile column parts; 64 threads leave some over.
        let (_, columns) = column_split(384, 64, tile);
        let (height, rows) = row_split(1024, 64 / columns);
        assert!(rows > 1, "64 threads split 1024 rows too");
        assert_eq!(height % ROW_BLOCK, 0);
        assert!(height * rows >= 1024 && height * (rows - 1) < 1024);
    }
    assert_eq!(row_split(ROW_BLOCK, 64), (ROW_BLOCK, 1));
    assert_eq!(row_split(1000, 1), (1000, 1));
}
