//! `tokenpo._native`: the Python face of `tokenpo-core`. Only type conversion lives
//! here; every algorithm is in the core crate.

mod diff;
mod error;
mod prep;
mod prep_units;

use pyo3::prelude::*;

/// mimalloc: prep allocates many small vectors on every thread at once, where glibc's
/// malloc spent about 40% of the run (perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The native extension module. Python code imports it through the `tokenpo` facade.
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add("DEFAULT_MAX_EDIT_DISTANCE", tokenpo_core::diff::DEFAULT_MAX_EDIT_DISTANCE)?;
    module.add_class::<diff::TokenDiff>()?;
    module.add_function(wrap_pyfunction!(diff::diff_tokens, module)?)?;
    module.add_function(wrap_pyfunction!(diff::diff_batch, module)?)?;
    module.add_function(wrap_pyfunction!(prep::prep, module)?)?;
    module.add_function(wrap_pyfunction!(prep::importance_preset, module)?)?;
    module.add_function(wrap_pyfunction!(prep::token_class_name, module)?)?;
    module.add_class::<prep_units::PrepRun>()?;
    module.add_class::<prep_units::ShippedBatchPreparer>()?;
    module.add_class::<prep_units::JsonRecords>()?;
    module.add_function(wrap_pyfunction!(prep_units::difficulty_scale, module)?)?;
    module.add_function(wrap_pyfunction!(prep_units::finish_shard, module)?)?;
    module.add("SOURCE_FILE_COLUMN", tokenpo_core::io::input::SOURCE_FILE_COLUMN)?;
    module.add("SOURCE_ROW_COLUMN", tokenpo_core::io::input::SOURCE_ROW_COLUMN)?;
    module.add("LINE_COLUMN", tokenpo_core::io::input::LINE_COLUMN)?;
    module.add("ELEMENT_COLUMN", tokenpo_core::io::input::ELEMENT_COLUMN)?;
    Ok(())
}
