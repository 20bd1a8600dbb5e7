//! `pcsaga console`: the read-only web console for a database, without a daemon.

use tokio::sync::watch;

use crate::cli::{ConsoleArgs, Global};
use crate::config::FileConfig;
use crate::exit::{Exit, Failed};

pub async fn run(global: &Global, args: &ConsoleArgs, file: &FileConfig) -> Result<Exit, Failed> {
    let Some(listen) = crate::web::listen::resolve("--listen", Some(&args.listen), "", file)?
    else {
        return Err(Failed::new(
            Exit::Usage,
            crate::config::ConfigError(
                "--listen off: the console has nothing to do without a listener; give an address, e.g. `--listen 127.0.0.1:9465`".into(),
            ),
        ));
    };
    let (store, path) =
        crate::app::open(global.db.as_deref(), file, crate::app::Open::ReadOnly).await?;
    let workflow = std::env::var_os("PCSAGA_WORKFLOW")
        .map(std::path::PathBuf::from)
        .or_else(|| file.daemon.workflow.clone());
    let policies = crate::app::policies(workflow.as_deref())?;
    let site = crate::web::Site::new(
        store,
        path.clone(),
        crate::output::db_flag(global),
        policies,
        &listen,
    );
    let listener = crate::web::bind(listen.addr)
        .await
        .map_err(|e| Failed::new(Exit::Failure, anyhow::anyhow!(e)))?;
    let addr = listener.local_addr().map_err(|e| {
        Failed::new(
            Exit::Failure,
            anyhow::anyhow!("the listener has no address: {e}"),
        )
    })?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(crate::commands::daemon::signals(stop));
    tracing::info!(db = %path.display(), url = %format!("http://{addr}/"), "console listening (read-only); SIGINT or SIGTERM stops it");
    crate::web::serve(listener, site, stopped).await;
    Ok(Exit::Ok)
}
