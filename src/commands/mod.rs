//! One module per verb.

pub mod bench;
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
pub async fn migrate(
    global: &Global,
    json: bool,
    file: &crate::config::FileConfig,
) -> Result<Exit, Failed> {
    let (store, path) = crate::app::open_store(global.db.as_deref(), file).await?;
    let counts = pcsaga_engine::Store::count_by_status(&store).await?;
    if json {
        crate::output::print_json(
            &serde_json::json!({"database": path, "purchases": counts.values().sum::<u64>(), "integrity": store.integrity_check().await?}),
        );
        return Ok(Exit::Ok);
    }
    crate::output::print(&format!(
        "database {} is at the current schema ({} purchases)\n",
        path.display(),
        counts.values().sum::<u64>()
    ));
    Ok(Exit::Ok)
}
