//! Helpers shared by the integration tests.

/// Instantiates each test body once per back end (candle's habit): one body, two
/// tests, `interp::name` and `jit::name`, each given its `Backend`.
#[macro_export]
macro_rules! on_both_backends {
    ($(fn $name:ident($backend:ident) $body:block)*) => {
        mod interp {
            #[allow(unused_imports)]
            use super::*;
            $( #[test] fn $name() { let $backend = cllm::runtime::Backend::Interp; $body } )*
        }
        mod jit {
            #[allow(unused_imports)]
            use super::*;
            $( #[test] fn $name() { let $backend = cllm::runtime::Backend::Jit; $body } )*
        }
    };
}
