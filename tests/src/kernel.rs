//! Kernel features that some of the kernels hermetic supports lack. Under
//! vm-tests the guest's init puts in `HERMETIC_KERNEL_LACKS` the features
//! `vm-tests/kernel-differences` lists for the booted kernel: a test that
//! finds a feature missing checks hermetic's fallback where it is listed and
//! fails where it is not, and a listed feature that is there fails too, so
//! the list stays true.

/// The environment variable with the features the booted kernel is listed
/// as lacking, comma-separated (set only under vm-tests).
pub const KERNEL_LACKS: &str = "HERMETIC_KERNEL_LACKS";

/// Whether the kernel lacks `feature`, given whether a probe found it
/// (`present`); under vm-tests, panics where that disagrees with the list.
pub fn lacks(feature: &str, present: bool) -> bool {
    match std::env::var(KERNEL_LACKS) {
        Ok(listed) => {
            let listed = listed.split(',').any(|f| f.trim() == feature);
            assert!(
                !(present && listed),
                "this kernel has {feature}, which vm-tests/kernel-differences lists as lacking"
            );
            assert!(
                present || listed,
                "this kernel lacks {feature}, which vm-tests/kernel-differences does not list for it"
            );
        }
        Err(_) if !present => eprintln!("note: this kernel lacks {feature}: checking the fallback"),
        Err(_) => {}
    }
    !present
}
