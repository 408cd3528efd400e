//! The bf16 packs of the matrix units (AMX, AVX512-BF16) round every element exactly as
//! `cllm_kernels::bf16::to_bits` does — nearest, ties to even; NaN quieted; denormals to
//! signed zero — in every layout a step packs (A and B, row- and column-major), on
//! values chosen to tell the rules apart: ties both ways, carries into the exponent,
//! overflow to infinity, NaN payloads, denormals. The GEMM tests compare sums against a
//! tolerance and cannot see a NaN rule or a tie; this test compares bits.

use cllm_kernels::bf16::to_bits;
use cllm_kernels::cpu::{self, Bf16Unit};
use cllm_kernels::gemm::packed::View;
use cllm_kernels::gemm::packed::panels::{BF16_TILE, bf16_len, pack_a_bf16, pack_b_bf16};

/// bf16 elements of one step of a panel (two 16 × 32 tiles).
const STEP: usize = 2 * 16 * BF16_TILE;

/// Values whose bf16 rounding each rule decides.
fn specials() -> Vec<f32> {
    let bits = [
        0x3f80_8000u32, // tie, even below: stays 0x3f80
        0x3f81_8000,    // tie, odd below: rounds up to 0x3f82
        0x3f80_8001,    // just above a tie: up
        0x3f80_7fff,    // just below a tie: down
        0x3fff_ffff,    // carries into the exponent
        0x7f7f_ffff,    // the largest float: to infinity
        0xff7f_8000,    // a negative tie at the top: to -infinity
        0x7f80_0000,    // infinity
        0xff80_0000,    // -infinity
        0x7fc0_0000,    // quiet NaN
        0x7f80_0001,    // signalling NaN, payload only in the low bits: quieted
        0xffa1_2345,    // negative signalling NaN with a payload
        0x0000_0001,    // the smallest denormal: +0
        0x807f_ffff,    // the largest negative denormal: -0
        0x0080_0000,    // the smallest normal: kept
        0x8000_0000,    // -0
    ];
    bits.iter().map(|b| f32::from_bits(*b)).collect()
}

/// An m × k matrix cycling through the specials and ordinary values.
fn matrix(rows: usize, cols: usize) -> Vec<f32> {
    let specials = specials();
    (0..rows * cols)
        .map(|i| match i % 3 {
            0 => specials[(i / 3) % specials.len()],
            1 => (i as f32 * 0.731).sin() * 1e3,
            _ => (i as f32).sqrt() * -1.000_061,
        })
        .collect()
}

fn view(data: &[f32], rows: usize, cols: usize, column_major: bool) -> View {
    let (rs, cs) = if column_major {
        (1, rows as isize)
    } else {
        (cols as isize, 1)
    };
    View {
        ptr: data.as_ptr(),
        rs,
        cs,
    }
}

fn has_a_matrix_unit() -> bool {
    let units = cpu::bf16_supported();
    let here = units.contains(&Bf16Unit::Avx512Bf16) || units.contains(&Bf16Unit::Amx);
    if !here {
        eprintln!("this CPU has no AVX512-BF16 or AMX: the matrix units' packs are not used here");
    }
    here
}

#[test]
fn a_panels_round_every_element_as_to_bits() {
    if !has_a_matrix_unit() {
        return;
    }
    for (m, k) in [(37, 45), (32, 32), (5, 70), (64, 16)] {
        let a = matrix(m, k);
        let steps = k.div_ceil(BF16_TILE);
        for column_major in [false, true] {
            let mut packed = vec![0xdead_u16; bf16_len(m, k)];
            // SAFETY: the CPU has a matrix unit (checked above); the view is m × k.
            unsafe { pack_a_bf16(&mut packed, view(&a, m, k, column_major), m, k) };
            let element = |r: usize, p: usize| a[if column_major { p * m + r } else { r * k + p }];
            for r in 0..m.next_multiple_of(BF16_TILE) {
                for p in 0..steps * BF16_TILE {
                    let at = (r / 32) * steps * STEP
                        + (p / 32) * STEP
                        + ((r % 32) / 16) * 512
                        + (r % 16) * 32
                        + p % 32;
                    let inside = r < m && p < k;
                    let want = if inside { to_bits(element(r, p)) } else { 0 };
                    assert_eq!(
                        packed[at],
                        want,
                        "A {m}×{k} (column-major {column_major}) row {r}, k {p}: {:#010x}",
                        if inside { element(r, p).to_bits() } else { 0 }
                    );
                }
            }
        }
    }
}

#[test]
fn b_panels_round_every_element_as_to_bits() {
    if !has_a_matrix_unit() {
        return;
    }
    for (k, n) in [(45, 37), (32, 32), (70, 5), (16, 64)] {
        let b = matrix(k, n);
        let steps = k.div_ceil(BF16_TILE);
        for column_major in [false, true] {
            let mut packed = vec![0xdead_u16; bf16_len(n, k)];
            // SAFETY: the CPU has a matrix unit (checked above); the view is k × n.
            unsafe { pack_b_bf16(&mut packed, view(&b, k, n, column_major), k, n) };
            let element = |p: usize, j: usize| b[if column_major { j * k + p } else { p * n + j }];
            for j in 0..n.next_multiple_of(BF16_TILE) {
                for p in 0..steps * BF16_TILE {
                    // Pair p / 2 of column j: one tile row of 16 columns × 2 k.
                    let at = (j / 32) * steps * STEP
                        + (p / 32) * STEP
                        + ((j % 32) / 16) * 512
                        + ((p % 32) / 2) * 32
                        + (j % 16) * 2
                        + p % 2;
                    let inside = j < n && p < k;
                    let want = if inside { to_bits(element(p, j)) } else { 0 };
                    assert_eq!(
                        packed[at],
                        want,
                        "B {k}×{n} (column-major {column_major}) k {p}, column {j}: {:#010x}",
                        if inside { element(p, j).to_bits() } else { 0 }
                    );
                }
            }
        }
    }
}
