//! Reproducible initialisation. burn's device RNG is shared by every thread of the process,
//! so two models initialised at the same time would interleave their draws; every seeded
//! initialisation in the crate runs under one lock.

use std::sync::Mutex;

use burn::tensor::Device;

static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Seeds `device`'s RNG with `seed` and runs `init` while no other seeded initialisation of
/// this crate runs.
pub(crate) fn with_seed<T>(device: &Device, seed: u64, init: impl FnOnce() -> T) -> T {
    let _guard = INIT_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    device.seed(seed);
    init()
}

/// Reads every float parameter once, so that lazily initialised parameters draw their random
/// values now (inside [`with_seed`]) rather than at first use, when another thread's draws
/// could interleave with theirs.
pub(crate) fn materialize<M: burn::module::Module>(module: &M) {
    struct Touch;
    impl burn::module::ModuleVisitor for Touch {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<D>>,
        ) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}
