//! One module per verb.

pub mod daemon;
pub mod demo;
pub mod inspect;
pub mod operator;
pub mod sim;
pub mod submit;
pub mod workflow;

use crate::cli::Global;
use crate::exit::{Exit, Failed};

/// `pcsaga migrate`.
pub async fn migrate(global: &Global, file: &crate::config::FileConfig) -> Result<Exit, Failed> {
    let (store, path) = crate::app::open_store(global.db.as_deref(), file).await?;
    let counts = pcsaga_engine::Store::count_by_status(&store).await?;
    crate::output::print(&format!(
        "database {} is at the current schema ({} purchases)\n",
        path.display(),
        counts.values().sum::<u64>()
    ));
    Ok(Exit::Ok)
}
