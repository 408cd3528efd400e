//! What this CPU can run, detected once at run time: the native GEMM and the FMA peak
//! pick their code from it, so one binary runs at the full vector width of whatever
//! machine it lands on (AVX-512 on a Xeon, AVX2 on a Zen 3, portable code elsewhere).
//!
//! `CLLM_ISA=avx2` (or `portable`) caps the choice below what the CPU has, to measure
//! or test a narrower path on a wider machine; a cap the CPU cannot honour upward is
//! ignored (asking for `avx512` on an AVX2 CPU gives AVX2).

use std::sync::OnceLock;

/// An instruction-set level of the native kernels, widest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// No native micro-kernel: the `gemm` crate's portable code.
    Portable,
    /// 256-bit AVX2 + FMA.
    Avx2,
    /// 512-bit AVX-512F (with AVX2 + FMA for the packing transposes).
    Avx512,
}

impl Isa {
    /// Bits of the widest float vector this level uses (128 for portable code).
    pub fn vector_bits(self) -> usize {
        match self {
            Isa::Portable => 128,
            Isa::Avx2 => 256,
            Isa::Avx512 => 512,
        }
    }

    /// f32 lanes of one vector.
    pub fn f32_lanes(self) -> usize {
        self.vector_bits() / 32
    }

    /// The name `CLLM_ISA` and reports use.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    fn from_name(name: &str) -> Option<Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .find(|isa| isa.name() == name.trim().to_ascii_lowercase())
    }
}

/// Every level this CPU supports, narrowest first (what the differential tests run).
pub fn supported() -> Vec<Isa> {
    let mut levels = vec![Isa::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            levels.push(Isa::Avx2);
            if is_x86_feature_detected!("avx512f") {
                levels.push(Isa::Avx512);
            }
        }
    }
    levels
}

/// The level the native kernels use: the widest supported, capped by `CLLM_ISA`.
pub fn isa() -> Isa {
    static CHOSEN: OnceLock<Isa> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let widest = *supported().last().expect("portable is always supported");
        match std::env::var("CLLM_ISA")
            .ok()
            .and_then(|v| Isa::from_name(&v))
        {
            Some(cap) => cap.min(widest),
            None => widest,
        }
    })
}

/// Whether this CPU runs `level` (the tests' guard before calling a micro-kernel).
pub fn supports(level: Isa) -> bool {
    supported().contains(&level)
}

/// Runs a body compiled for the widest vector level this process uses ([`isa`]):
/// code written once as plain loops over fixed-size chunks, inlined into a wrapper
/// with that level's target features, is vectorised at that width (16 lanes with
/// AVX-512). The native elementwise kernels (GELU, the causal softmax) use it:
///
/// ```ignore
/// full_width!((x: &mut [f32], s: f32) => { for v in x { *v *= s } })
/// ```
///
/// (A closure passed to a `#[target_feature]` function is not inlined into it, and so
/// would not be vectorised at the wrapper's width: hence a macro.)
macro_rules! full_width {
    (($($arg:ident : $ty:ty),* $(,)?) => $body:block) => {{
        #[inline(always)]
        fn body($($arg: $ty),*) $body
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        fn avx512($($arg: $ty),*) {
            body($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn avx2($($arg: $ty),*) {
            body($($arg),*)
        }
        match $crate::cpu::isa() {
            // SAFETY: `isa` found these features on this CPU.
            #[cfg(target_arch = "x86_64")]
            $crate::cpu::Isa::Avx512 => unsafe { avx512($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            $crate::cpu::Isa::Avx2 => unsafe { avx2($($arg),*) },
            _ => body($($arg),*),
        }
    }};
}
pub(crate) use full_width;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_and_named() {
        assert!(Isa::Avx512 > Isa::Avx2 && Isa::Avx2 > Isa::Portable);
        for isa in supported() {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert!(supports(Isa::Portable));
        assert!(supports(isa()));
        assert_eq!(Isa::Avx512.f32_lanes(), 16);
    }
}
