//! What this CPU can run, detected once at run time: the native GEMM and the FMA peak
//! pick their code from it, so one binary runs at the full vector width of whatever
//! machine it lands on (AVX-512 on a Xeon, AVX2 on a Zen 3, portable code elsewhere).
//!
//! `CLLM_ISA=avx2` (or `portable`) caps the choice below what the CPU has, to measure
//! or test a narrower path on a wider machine; a cap the CPU cannot honour upward is
//! capped at what it has (asking for `avx512` on an AVX2 CPU gives AVX2), and a name no
//! level has is ignored here — the command line refuses it ([`isa_request`]). bf16 products have their own
//! ladder ([`Bf16Unit`]: emulated < AVX512-BF16 < AMX) on the same variable: `amx`,
//! `avx512bf16`, or an fp32 level (bf16 emulated on its fp32 micro-kernels).

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

    /// The fp32 level `CLLM_ISA=name` caps at: the bf16 units' names cap at AVX-512.
    fn from_name(name: &str) -> Option<Isa> {
        let name = name.trim().to_ascii_lowercase();
        if matches!(name.as_str(), "amx" | "avx512bf16") {
            return Some(Isa::Avx512);
        }
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .find(|isa| isa.name() == name)
    }
}

/// The instructions a bf16 product ([`crate::bf16::Precision::Bf16`]) runs on,
/// narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bf16Unit {
    /// The fp32 micro-kernels of [`isa`] on operands rounded to bf16 while packed.
    Emulated,
    /// AVX512-BF16's VDPBF16PS: two bf16 products per fp32 lane (Zen 4 and 5, Intel
    /// since Cooper Lake).
    Avx512Bf16,
    /// AMX's TDPBF16PS on 16 × 16 fp32 tiles (Intel since Sapphire Rapids).
    Amx,
}

impl Bf16Unit {
    /// The name `CLLM_ISA` and reports use.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Unit::Emulated => "emulated",
            Bf16Unit::Avx512Bf16 => "avx512bf16",
            Bf16Unit::Amx => "amx",
        }
    }

    /// The unit for a run's header: its name, and for the emulated one what a user
    /// should know before choosing bf16 on this CPU.
    pub fn describe(self) -> String {
        match self {
            Bf16Unit::Emulated => format!(
                "{} (no AMX or AVX512-BF16 in use: the operands are rounded as a matrix \
                 unit rounds them but multiplied on the fp32 FMA units, so bf16 runs \
                 slower than fp32 here)",
                self.name()
            ),
            unit => unit.name().to_string(),
        }
    }
}

/// Every bf16 unit this CPU (and, for AMX, Linux) lets this process use, narrowest
/// first. Asking for AMX requests the tile state from Linux (once per process).
pub fn bf16_supported() -> Vec<Bf16Unit> {
    let mut units = vec![Bf16Unit::Emulated];
    #[cfg(target_arch = "x86_64")]
    {
        if supports(Isa::Avx512) && is_x86_feature_detected!("avx512bf16") {
            units.push(Bf16Unit::Avx512Bf16);
        }
        // The AMX GEMM rounds its operands with AVX512-BF16's conversion as it packs
        // them (every AMX CPU so far has both).
        if supports(Isa::Avx512) && is_x86_feature_detected!("avx512bf16") && amx_permitted() {
            units.push(Bf16Unit::Amx);
        }
    }
    units
}

/// The unit bf16 products use: the widest supported, capped by `CLLM_ISA` (`amx`,
/// `avx512bf16`; a cap at an fp32 level — `avx512`, `avx2`, `portable` — gives
/// [`Bf16Unit::Emulated`]).
pub fn bf16_unit() -> Bf16Unit {
    static CHOSEN: OnceLock<Bf16Unit> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let supported = bf16_supported();
        let widest = *supported.last().expect("emulated is always supported");
        let cap = std::env::var("CLLM_ISA")
            .ok()
            .map(|v| v.trim().to_ascii_lowercase());
        match cap.as_deref() {
            Some("avx512bf16") => widest.min(Bf16Unit::Avx512Bf16),
            Some("avx512" | "avx2" | "portable") => Bf16Unit::Emulated,
            // Unset, `amx`, or a name no level has (ignored, as `isa` ignores it).
            _ => widest,
        }
    })
}

/// Whether this CPU has AMX-BF16 and Linux lets this process use the tiles: CPUID's
/// AMX-TILE and AMX-BF16 bits, XCR0's tile state bits, and the permission request,
/// made once (the first call) and remembered.
#[cfg(target_arch = "x86_64")]
pub fn amx_permitted() -> bool {
    static PERMITTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PERMITTED.get_or_init(|| {
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let (tile, bf16) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 22) != 0);
        if !(tile && bf16 && std::is_x86_feature_detected!("xsave")) {
            return false;
        }
        // SAFETY: the CPU has XSAVE (checked), so XGETBV(0) is defined; OSXSAVE is
        // implied by the standard library's detection of it.
        let xcr0 = unsafe { xcr0() };
        if xcr0 & (0b11 << 17) != 0b11 << 17 {
            return false;
        }
        request_tile_data()
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    // SAFETY: the caller checked XSAVE.
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: true when Linux granted it.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a system call that only sets this process's permission.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn request_tile_data() -> bool {
    false
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

/// The kernels a run's numbers depend on, as its checkpoint records them: the fp32
/// level, and in bf16 the matrix unit too (`"avx512"`, `"avx512bf16 + avx512"`). The
/// same run on two routes gives different bits (their products sum in other orders),
/// so a resume on another route is told that its continuation is not the
/// uninterrupted run's bits.
pub fn route(precision: crate::Precision) -> String {
    match precision {
        crate::Precision::Fp32 => isa().name().to_string(),
        crate::Precision::Bf16 => format!("{} + {}", bf16_unit().name(), isa().name()),
    }
}

/// `CLLM_ISA` checked against this CPU, for the command line to say before any work:
/// `Err` for a name no level has (which [`isa`] and [`bf16_unit`] ignore: a typo would
/// otherwise measure the widest path under another name), `Ok(Some(note))` for a level
/// this CPU (or, for AMX, Linux) cannot run, which they cap at what it has, `Ok(None)`
/// when unset or honoured as asked.
pub fn isa_request() -> Result<Option<String>, String> {
    let Ok(raw) = std::env::var("CLLM_ISA") else {
        return Ok(None);
    };
    let name = raw.trim().to_ascii_lowercase();
    if name.is_empty() {
        return Ok(None);
    }
    if Isa::from_name(&name).is_none() {
        // The names `from_name` takes: the fp32 levels, then the matrix units.
        let fp32 = [Isa::Portable, Isa::Avx2, Isa::Avx512].map(Isa::name);
        let units = [Bf16Unit::Avx512Bf16, Bf16Unit::Amx].map(Bf16Unit::name);
        return Err(format!(
            "CLLM_ISA=`{raw}` names no kernel level: it takes {}, {} (or unset: the widest this CPU runs)",
            fp32.join(", "),
            units.join(", ")
        ));
    }
    let units = bf16_supported();
    let missing = match name.as_str() {
        "amx" => !units.contains(&Bf16Unit::Amx),
        "avx512bf16" => !units.contains(&Bf16Unit::Avx512Bf16),
        _ => Isa::from_name(&name).is_some_and(|level| !supports(level)),
    };
    Ok(missing.then(|| {
        format!(
            "CLLM_ISA={name}: this CPU{} cannot run it; the kernels use {} and bf16 products {}",
            if name == "amx" { " (or Linux)" } else { "" },
            isa().name(),
            bf16_unit().name()
        )
    }))
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

    #[test]
    fn bf16_units_are_ordered_and_the_chosen_one_is_supported() {
        assert!(Bf16Unit::Amx > Bf16Unit::Avx512Bf16 && Bf16Unit::Avx512Bf16 > Bf16Unit::Emulated);
        let units = bf16_supported();
        assert_eq!(units[0], Bf16Unit::Emulated);
        assert!(units.contains(&bf16_unit()));
        // The bf16 units' names cap the fp32 level at AVX-512, never above the CPU's.
        assert_eq!(Isa::from_name("amx"), Some(Isa::Avx512));
        assert_eq!(Isa::from_name(" AVX512BF16 "), Some(Isa::Avx512));
        assert_eq!(Isa::from_name("sse"), None);
    }
}
